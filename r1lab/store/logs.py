"""JSONL logs (metrics.jsonl, samples.jsonl): append a row per step, cut back to a checkpoint on resume. A metrics row
also goes to the run's experiment trackers (store/trackers.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

from r1lab.store import trackers
from r1lab.store.disk import writing


def append_jsonl(path: Path, rows: list[dict]) -> None:
    with writing("log", path), open(path, "a") as f:  # a half-written last line is dropped on resume
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def append_metrics(path: Path, row: dict) -> None:
    """A step's metrics row (it names its stage and step) to metrics.jsonl and to every tracker the run reports to."""
    append_jsonl(path, [row])
    trackers.report(row, row["step"], row["stage"])


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
