"""JSONL logs (metrics.jsonl, samples.jsonl): append a row per step, cut back to a checkpoint on resume. A metrics row
also goes to the loop's `report` callback (the run's trackers' `log`, store/trackers.py; or anything a caller
passes, a list's append in a test)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from r1lab.disk import atomic_write, writing


def append_jsonl(path: Path, rows: list[dict]) -> None:
    with writing("log", path), open(path, "a") as f:  # a half-written last line is dropped on resume
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def append_metrics(path: Path, row: dict, report: Callable[[dict], None] | None = None) -> None:
    """A step's metrics row (it names its stage and step) to metrics.jsonl, then to `report` if given."""
    append_jsonl(path, [row])
    if report is not None:
        report(row)


def truncate_jsonl(path: Path, keep: Callable[[dict], bool]) -> None:
    """Keeps the rows `keep` accepts, e.g. those logged up to the checkpoint a run resumes from.
    A half-written last line (a kill mid-write) is dropped too."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if keep(row):
            kept.append(line)
    atomic_write(path, "".join(line + "\n" for line in kept), "log")
