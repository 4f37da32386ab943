"""Your own code, named by import path `module:attribute` (as uvicorn and gunicorn name an app): reward
functions, tools, tool environments.

The module is imported with the current directory on sys.path, as `python -m r1lab` has it (the `r1lab`
console script alone would not), so a `my_rewards.py` in the directory r1lab runs from is found; so is
anything installed or on PYTHONPATH. Errors say which of module, attribute or callable is wrong.
"""

from __future__ import annotations

import importlib
import os
import re
import sys

from r1lab.errors import did_you_mean

IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


# Objects handed over from Python in this process (r1lab.run(rewards={fn: 1}), rl={"tools": [fn]}): named
# "python:<their name>", found here before any import. Registering a name again replaces its object, so a notebook
# cell run again (a new function, the same name) resumes the run its first version started.
IN_PROCESS: dict[str, object] = {}
IN_PROCESS_MODULE = "python"


def register(obj, name: str) -> str:
    """Names `obj` "python:<name>" for this process's configs and returns that name."""
    key = f"{IN_PROCESS_MODULE}:{name}"
    IN_PROCESS[key] = obj
    return key


def is_import_path(name: str) -> bool:
    return ":" in name


def import_path(name: str, what: str):
    """The callable `name` ("pkg.module:attribute") names; a ValueError starting "`what` 'name': " saying what
    is wrong."""
    if name in IN_PROCESS:
        return IN_PROCESS[name]
    if name.startswith(f"{IN_PROCESS_MODULE}:"):
        raise ValueError(f"{what} {name!r} was a Python object handed to r1lab in another process: resume from Python, "
                         f"passing it again; the CLI resumes only runs whose own {what}s are named module:function "
                         "(defined in a module, not in a notebook or as a lambda)")
    if not IMPORT_PATH.fullmatch(name):
        raise ValueError(f"{what} {name!r}: a {what} of your own is named module:function, e.g. 'my_pkg.{what}s:my_{what}'")
    module_name, attr = name.split(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ValueError(f"{what} {name!r}: no module named {err.name!r} (looked in the current directory "
                             f"{os.getcwd()}, PYTHONPATH and the installed packages)") from None
        raise ValueError(f"{what} {name!r}: importing {module_name} failed: {err!r}") from None
    except Exception as err:  # the module itself is broken: say so here, not as a traceback from pydantic
        raise ValueError(f"{what} {name!r}: importing {module_name} failed: {err!r}") from None
    if not hasattr(module, attr):
        public = [n for n in vars(module) if not n.startswith("_")]
        raise ValueError(f"{what} {name!r}: module {module_name} has no attribute {attr!r}{did_you_mean(attr, public)}")
    found = getattr(module, attr)
    if not callable(found):
        raise ValueError(f"{what} {name!r}: {module_name}.{attr} is not callable (it is {type(found).__name__} {found!r:.40})")
    return found
