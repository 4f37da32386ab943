"""Python objects where the CLI takes strings, turned into what a config names, so one config (and one run
directory) serves both and a run started from Python resumes:

- a reward function (either signature rewards/registry.py accepts), a tool function (rl.tools) or an environment
  class (rl.environment): defined in an importable module, it is named by its import path `module:function`, which
  the CLI resumes too; defined in a notebook, `__main__` or as a lambda, it is registered in this process as
  "python:<its name>" (plugins.py), and a resume needs the same object handed over again from Python (the result's
  `resume_note` says so);
- a task given as rows (a list of dicts, a `datasets.Dataset` or a `DatasetDict` with train and test splits): written
  to RUN/input-data/<split>.jsonl, which the config names (task, data.test_file), so a resume from anywhere reads
  the same file and its sha256 is checked as any data file's;
- a model object (a transformers model, with its tokenizer): saved with save_pretrained into RUN/input-model/ the
  first time, which the config names as `model`; a resume uses that copy.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

from r1lab.errors import ConfigError

REWARD_FIELDS = ("rewards", "general_rewards")


def is_rows(task) -> bool:
    """A task given as data: a list of dicts, a datasets.Dataset or DatasetDict (anything with to_list / a train split)."""
    return isinstance(task, list) or hasattr(task, "to_list") or _is_dataset_dict(task)


def _is_dataset_dict(task) -> bool:
    return hasattr(task, "keys") and hasattr(task, "values") and all(hasattr(v, "to_list") for v in task.values())


def object_name(obj, name: str | None = None) -> str:
    """A config's name for `obj` (a function or class): its import path `module:name` where one imports it back, else
    "python:<name>" (by default its own), registered in this process (plugins.py)."""
    from r1lab.plugins import register

    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if module and module != "__main__" and qualname.isidentifier() and (inspect.isfunction(obj) or inspect.isclass(obj)):
        import importlib

        try:
            if getattr(importlib.import_module(module), qualname, None) is obj:
                return f"{module}:{qualname}"
        except ImportError:
            pass
    return register(obj, name or getattr(obj, "__name__", type(obj).__name__).strip("<>"))


def _named(objects: list) -> list[str]:
    """Names for `objects` (names kept as they are); two of one name (two lambdas) told apart by their order:
    lambda, lambda_2."""
    names, seen = [], {}
    for obj in objects:
        if isinstance(obj, str):
            names.append(obj)
            continue
        base = getattr(obj, "__name__", type(obj).__name__).strip("<>")
        seen[base] = seen.get(base, 0) + 1
        names.append(object_name(obj, base if seen[base] == 1 else f"{base}_{seen[base]}"))
    return names


def name_rewards(weights) -> dict:
    """{fn or name: weight} or [fn or name, ...] (weight 1 each) -> {name: weight}."""
    if isinstance(weights, dict):
        items = list(weights.items())
    elif isinstance(weights, (list, tuple)) or callable(weights):
        items = [(w, 1.0) for w in (weights if isinstance(weights, (list, tuple)) else [weights])]
    else:
        raise ConfigError(f"rewards: give a dict {{function or name: weight}} or a list of functions and names, not {type(weights).__name__}")
    return dict(zip(_named([k for k, _ in items]), [w for _, w in items]))


def name_objects(settings: dict) -> dict:
    """`settings` (nested dicts and dotted keys) with every function or class in a rewards mapping, a tools list or
    an environment named."""
    out = {}
    for key, value in settings.items():
        leaf = str(key).rsplit(".", 1)[-1]
        if leaf in REWARD_FIELDS and (isinstance(value, (list, tuple, dict)) or callable(value)):
            out[key] = name_rewards(value)
        elif leaf == "tools" and isinstance(value, (list, tuple)):
            out[key] = _named(list(value))
        elif leaf == "environment" and callable(value):
            out[key] = object_name(value)
        elif isinstance(value, os.PathLike):  # a directory or file given as a Path: the config holds text
            out[key] = str(value)
        elif isinstance(value, dict):
            out[key] = name_objects(value)
        elif isinstance(value, list):
            out[key] = [name_objects(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def in_process_names(cfg) -> list[str]:
    """The rewards, tools and environments of a RunConfig that only this process knows ("python:..."), sorted."""
    from r1lab.plugins import IN_PROCESS_MODULE

    settings = [cfg.rl, *(cfg.stage_rl(s) for s in cfg.stages if s.kind == "rl")]
    names = {n for rl in settings for n in [*rl.rewards, *rl.general_rewards, *rl.tools, rl.environment or ""]}
    return sorted(n for n in names if n.startswith(f"{IN_PROCESS_MODULE}:"))


def save_rows(task, folder: Path) -> dict:
    """Writes rows to folder/<split>.jsonl (unchanged files are kept; changed ones refused) -> the settings naming
    them: {"task": train file} and, for a DatasetDict with a test split, {"data.test_file": test file}."""
    splits = dict(task.items()) if _is_dataset_dict(task) else {"train": task}
    if "train" not in splits:
        raise ConfigError(f"task: a DatasetDict needs a 'train' split (it has {', '.join(splits)})")
    unknown = set(splits) - {"train", "test"}
    if unknown:
        raise ConfigError(f"task: r1lab trains on 'train' and evaluates on 'test'; drop the splits {', '.join(sorted(unknown))}")
    settings = {}
    for split, rows in splits.items():
        rows = rows.to_list() if hasattr(rows, "to_list") else list(rows)
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise ConfigError(f"task: the {split} rows must be a non-empty list of dicts (question and answer fields)")
        path = folder / f"{split}.jsonl"
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
        if path.exists() and path.read_text() != text:
            raise ConfigError(f"task: this run directory started on other rows ({path} differs from the ones given); "
                              "pass the same rows to resume, or use a new out directory")
        folder.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            from r1lab.disk import atomic_write

            atomic_write(path, text, "task rows")
        settings["task" if split == "train" else "data.test_file"] = str(path)
    return settings


def save_model_object(model, tokenizer, folder: Path, fresh: bool = True) -> str:
    """Saves a transformers model and its tokenizer into `folder`; once the run has started (`fresh` False) the copy
    there is kept (a resume uses it)."""
    if tokenizer is None:
        raise ConfigError("tokenizer: a model object needs its tokenizer (tokenizer=...) to be saved with it")
    if fresh or not (folder / "config.json").exists():
        from r1lab.models.io import save_model

        save_model(model, tokenizer, folder)
    return str(folder)
