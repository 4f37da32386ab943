"""The tools of an episode and the one way they are run.

A tool is a typed Python function with a docstring (`def calculator(expression: str) -> str`, Args described),
named by import path (`rl.tools=[r1lab.tools:calculator, my_tools:search]`), or the public methods of an
environment in TRL's `environment_factory` shape: a class whose `reset(**row)` starts an episode (returning an
optional first observation), whose public methods are the tools, and whose optional `reward()` scores it.
Its schema (OpenAI's function format, for chat templates' `tools=`) comes from transformers' get_json_schema.

Running a tool can never hurt the run: each call has a time limit and an output cap, and whatever goes wrong
(a malformed call, an exception, a hang, a huge or non-text result) comes back as an error string for the
model to read. Calls of several episodes run concurrently on threads.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass

from r1lab.plugins import import_path
from r1lab.tools.calls import ToolCall

TIME_LIMIT_S = 5.0
MAX_RESULT_CHARS = 2000


@dataclass
class Tool:
    name: str
    fn: Callable[..., object]
    schema: dict  # {"type": "function", "function": {"name", "description", "parameters"}}

    @classmethod
    def of(cls, fn: Callable, name: str | None = None) -> Tool:
        from transformers.utils import get_json_schema

        name = name or fn.__name__
        try:
            schema = get_json_schema(fn)
        except Exception as err:  # no docstring, an undescribed argument, a missing type hint
            raise ValueError(f"tool {name!r}: {err}; a tool is a typed function with a docstring that describes "
                             "every argument (Google style, Args:)") from None
        schema["function"]["name"] = name
        return cls(name, fn, schema)

    @property
    def parameters(self) -> list[str]:
        return list(self.schema["function"]["parameters"].get("properties", {}))


def load_tools(names: list[str]) -> list[Tool]:
    """`rl.tools` entries (module:function) as tools; a ValueError naming the one that is wrong."""
    return [Tool.of(import_path(name, "tool")) for name in names]


def load_environment(name: str) -> type:
    """`rl.environment` (module:Class) checked: a class whose instances have `reset` and at least one tool; a
    ValueError naming what is wrong."""
    cls = import_path(name, "environment")
    if not inspect.isclass(cls):
        raise ValueError(f"environment {name!r} is not a class: give the class itself (TRL's environment_factory shape)")
    try:
        env = cls()
    except Exception as err:
        raise ValueError(f"environment {name!r}: {cls.__name__}() failed ({err!r}); an environment is made with no "
                         "arguments, each episode's row goes to its reset(**row)") from None
    if not callable(getattr(env, "reset", None)):
        raise ValueError(f"environment {name!r} has no reset(**row) method")
    if not environment_tools(env):
        raise ValueError(f"environment {name!r} has no public method besides reset and reward: its methods are the tools")
    return cls


def environment_tools(env) -> list[Tool]:
    """The public methods of a TRL-style environment instance, but reset and reward, as tools."""
    methods = [(n, m) for n, m in inspect.getmembers(env, inspect.ismethod)
               if not n.startswith("_") and n not in ("reset", "reward")]
    return [Tool.of(m, n) for n, m in methods]


class ToolBox:
    """Runs calls of `tools`: `run(call) -> str`, never raising."""

    def __init__(self, tools: list[Tool], time_limit_s: float = TIME_LIMIT_S, max_result_chars: int = MAX_RESULT_CHARS):
        self.tools = {t.name: t for t in tools}
        self.parameters = {name: t.parameters for name, t in self.tools.items()}  # what parse_call binds arguments by
        self.time_limit_s, self.max_result_chars = time_limit_s, max_result_chars

    def run(self, call: ToolCall) -> str:
        return self.run_many([call])[0]

    def run_many(self, calls: list[ToolCall]) -> list[str]:
        """Every call at once, each on a thread of its own, each given the time limit from now."""
        return run_calls([(self, call) for call in calls])

    def _call(self, call: ToolCall, results: list, i: int) -> None:
        try:
            value = self.tools[call.name].fn(**call.arguments)
            text = value if isinstance(value, str) else repr(value)
        except TypeError as err:  # wrong or missing arguments: the model's mistake, said plainly
            text = f"error: {call.name}: {err}"
        except Exception as err:  # the tool's own failure: the model reads it, the run goes on
            text = f"error: {call.name}: {err}"
        if results[i] is None:  # a call that timed out keeps its timeout error
            results[i] = text

    def _capped(self, text: str) -> str:
        if len(text) <= self.max_result_chars:
            return text
        return text[: self.max_result_chars] + f" ... [cut at {self.max_result_chars} characters]"


def run_calls(calls: list[tuple[ToolBox, ToolCall]]) -> list[str]:
    """Each call by its own box (episodes with environments have a box each), all at once on threads of their own,
    each given its box's time limit from now."""
    results: list[str | None] = [None] * len(calls)
    threads = []
    for i, (box, call) in enumerate(calls):
        if call.error is not None:
            results[i] = f"error: {call.error}"
            continue
        thread = threading.Thread(target=box._call, args=(call, results, i), daemon=True)  # a hung tool never blocks exit
        thread.start()
        threads.append((i, box, call, thread))
    for i, box, call, thread in threads:
        thread.join(box.time_limit_s)
        if thread.is_alive():
            results[i] = f"error: {call.name} took longer than {box.time_limit_s:g} s"
    return [box._capped(r) for (box, _), r in zip(calls, results)]
