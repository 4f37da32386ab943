"""Python objects where the CLI takes strings, turned into what a config names, so one config (and one run
directory) serves both and a run started from Python resumes:

- a reward function (either signature rewards/registry.py accepts): defined in an importable module, it is named
  by its import path `module:function`, which the CLI resumes too; defined in a notebook, `__main__` or as a lambda,
  it is registered in this process as "python.<its name>" (rewards/registry.py), and a resume needs the same
  function handed over again from Python (`resume_note` says so);
- a task given as rows (a list of dicts, a `datasets.Dataset` or a `DatasetDict` with train and test splits): written
  to RUN/input-data/<split>.jsonl, which the config names (task, data.test_file), so a resume from anywhere reads
  the same file and its sha256 is checked as any data file's;
- a model object (a transformers model, with its tokenizer): saved with save_pretrained into RUN/input-model/ the
  first time, which the config names as `model`; a resume uses that copy.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path

from r1lab.errors import ConfigError

REWARD_FIELDS = ("rewards", "general_rewards")


def is_rows(task) -> bool:
    """A task given as data: a list of dicts, a datasets.Dataset or DatasetDict (anything with to_list / a train split)."""
    return isinstance(task, list) or hasattr(task, "to_list") or _is_dataset_dict(task)


def _is_dataset_dict(task) -> bool:
    return hasattr(task, "keys") and hasattr(task, "values") and all(hasattr(v, "to_list") for v in task.values())


def reward_name(fn: Callable, name: str | None = None) -> str:
    """A config's name for the reward function `fn`: its import path where one imports it back, else a name
    registered in this process ("python." + `name`, by default the function's own)."""
    from r1lab.rewards.registry import register_reward

    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module and module != "__main__" and qualname.isidentifier() and inspect.isfunction(fn):
        import importlib

        try:
            if getattr(importlib.import_module(module), qualname, None) is fn:
                return f"{module}:{qualname}"
        except ImportError:
            pass
    return register_reward(fn, name or getattr(fn, "__name__", type(fn).__name__))


def name_rewards(weights) -> dict:
    """{fn or name: weight} or [fn or name, ...] (weight 1 each) -> {name: weight}. Two functions of one name (two
    lambdas) are told apart by their order: lambda, lambda_2."""
    if isinstance(weights, dict):
        items = list(weights.items())
    elif isinstance(weights, (list, tuple)) or callable(weights):
        items = [(w, 1.0) for w in (weights if isinstance(weights, (list, tuple)) else [weights])]
    else:
        raise ConfigError(f"rewards: give a dict {{function or name: weight}} or a list of functions and names, not {type(weights).__name__}")
    named, seen = {}, {}
    for key, weight in items:
        if not isinstance(key, str):
            base = getattr(key, "__name__", type(key).__name__).strip("<>")
            seen[base] = seen.get(base, 0) + 1
            key = reward_name(key, base if seen[base] == 1 else f"{base}_{seen[base]}")
        named[key] = weight
    return named


def name_objects(settings: dict) -> dict:
    """`settings` (nested dicts and dotted keys) with every reward function in a rewards mapping named."""
    out = {}
    for key, value in settings.items():
        leaf = str(key).rsplit(".", 1)[-1]
        if leaf in REWARD_FIELDS and (isinstance(value, (list, tuple)) or callable(value) or isinstance(value, dict)):
            out[key] = name_rewards(value)
        elif isinstance(value, dict):
            out[key] = name_objects(value)
        elif isinstance(value, list):
            out[key] = [name_objects(v) if isinstance(v, dict) else v for v in value]
        else:
            out[key] = value
    return out


def python_rewards(names) -> list[str]:
    """The names among `names` that only this process knows."""
    from r1lab.rewards.registry import PYTHON_PREFIX

    return [n for n in names if n.startswith(PYTHON_PREFIX)]


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
