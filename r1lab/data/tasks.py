"""`load_task(name)`: the one entry point to every task.

  "tinyworld", "tinyworld/<variant>"  -> the built-in toy world (r1lab.tinyworld)
  "reasoning-gym:<dataset>"           -> a procedurally generated reasoning-gym dataset, scored by its own scorer
  a path (.jsonl/.json/.parquet/.csv, or a `save_to_disk` directory) -> a question/answer file, scored with math-verify
"""

from __future__ import annotations

from r1lab.data.example import Task


def load_task(
    name: str,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    test_file: str | None = None,
    test_size: int = 200,
    train_size: int | None = None,
    seed: int = 0,
) -> Task:
    """Build a Task from a name: "tinyworld[/...]", "reasoning-gym:<dataset>" or a path to a local data file/dir."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"task name must be a non-empty string, got {name!r}")
    if not isinstance(test_size, int) or test_size < 1:
        raise ValueError(f"test_size must be a positive int, got {test_size!r}")
    if train_size is not None and (not isinstance(train_size, int) or train_size < 1):
        raise ValueError(f"train_size must be a positive int or None, got {train_size!r}")
    is_file = not (name == "tinyworld" or name.startswith("tinyworld/") or name.startswith("reasoning-gym:"))
    if test_file is not None and not is_file:
        raise ValueError(f"test_file is only for file tasks; {name!r} makes its own test split")
    if name == "tinyworld" or name.startswith("tinyworld/"):
        from r1lab.tinyworld.problems import TinyWorldTask  # imported on use: drawing its splits takes seconds

        return TinyWorldTask(name, train_size=train_size, test_size=test_size, seed=seed)
    if name.startswith("reasoning-gym:"):
        from r1lab.data.reasoning_gym import ReasoningGymTask

        return ReasoningGymTask(name.removeprefix("reasoning-gym:"), train_size=train_size, test_size=test_size, seed=seed)
    from r1lab.data.files import FileTask

    return FileTask(name, question_field=question_field, answer_field=answer_field, test_file=test_file,
                    test_size=test_size, train_size=train_size, seed=seed)
