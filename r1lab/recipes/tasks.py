"""`load_task(name)`: the one entry point to every task.

  "tinyworld", "tinyworld/<variant>"  -> the built-in toy world (r1lab.tinyworld)
  "reasoning-gym:<dataset>"           -> a procedurally generated reasoning-gym dataset, scored by its own scorer
  a path (.jsonl/.json/.parquet/.csv, a `save_to_disk` or hub-repository-style directory) or a hub dataset id
  (openai/gsm8k)                      -> question/answer rows, scored with math-verify (data/files.py)
"""

from __future__ import annotations

from r1lab.data.example import Task


def is_dataset(name: str) -> bool:
    """Whether task `name` is a dataset (a file, directory or hub id) rather than a built-in generator."""
    return not (name == "tinyworld" or name.startswith(("tinyworld/", "reasoning-gym:")))


def load_task(
    name: str,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    test_file: str | None = None,
    test_size: int = 200,
    train_size: int | None = None,
    seed: int = 0,
    config: str | None = None,
    split: str = "train",
    test_split: str | None = None,
    prompt_format: str = "text",
) -> Task:
    """Build a Task from a name: "tinyworld[/...]", "reasoning-gym:<dataset>", a local data file/dir or a hub dataset id.
    config, split, test_split and prompt_format (data.*) are for datasets (DatasetTask)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"task name must be a non-empty string, got {name!r}")
    if not isinstance(test_size, int) or test_size < 1:
        raise ValueError(f"test_size must be a positive int, got {test_size!r}")
    if train_size is not None and (not isinstance(train_size, int) or train_size < 1):
        raise ValueError(f"train_size must be a positive int or None, got {train_size!r}")
    if not is_dataset(name):
        dataset_only = {"test_file": test_file, "config": config, "test_split": test_split,
                        "split": None if split == "train" else split, "prompt_format": None if prompt_format == "text" else prompt_format}
        given = [f"data.{k}" for k, v in dataset_only.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)}: only for dataset tasks (files, directories, hub ids); {name!r} makes "
                             "its own splits")
    if name == "tinyworld" or name.startswith("tinyworld/"):
        from r1lab.tinyworld.problems import TinyWorldTask  # imported on use: drawing its splits takes seconds

        return TinyWorldTask(name, train_size=train_size, test_size=test_size, seed=seed)
    if name.startswith("reasoning-gym:"):
        from r1lab.data.reasoning_gym import ReasoningGymTask

        return ReasoningGymTask(name.removeprefix("reasoning-gym:"), train_size=train_size, test_size=test_size, seed=seed)
    from r1lab.data.files import DatasetTask

    return DatasetTask(name, question_field=question_field, answer_field=answer_field, test_file=test_file,
                       test_size=test_size, train_size=train_size, seed=seed, config=config, split=split,
                       test_split=test_split, prompt_format=prompt_format)
