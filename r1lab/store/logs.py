"""JSONL logs (metrics.jsonl, samples.jsonl): append a row per step, cut back to a checkpoint on resume. A metrics row
also goes to the loop's `report` callback (the run's trackers' `log`, store/trackers.py; or anything a caller
passes, a list's append in a test)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator

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
    for line in path.read_text().split("\n"):  # not splitlines(): a row may hold U+2028 or NEL (numbered_jsonl_rows)
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if keep(row):
            kept.append(line)
    atomic_write(path, "".join(line + "\n" for line in kept), "log")


def numbered_jsonl_rows(path: str | os.PathLike, *, strict: bool = False) -> Iterator[tuple[int, dict]]:
    """(line number, row) for each JSON object of a JSONL file; blank lines are skipped but counted, so the
    numbers are the file's own. A line that is not a JSON object raises ValueError naming the file and line
    when `strict`; otherwise it is skipped with a warning (a crash mid-write, perhaps followed by a resumed run
    appending to it: a report of a crashed run is when you need it most), and bytes that are not UTF-8 (a
    character cut in half) are replaced rather than fatal, for the same reason.
    The file's own lines, not str.splitlines(): rows are written with ensure_ascii=False, so a string in one
    may hold U+2028 or NEL, which splitlines() would take for line breaks."""
    with open(path, encoding="utf-8", errors="strict" if strict else "replace") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if strict:
                    raise ValueError(f"{path}, line {line_no}: not valid JSON ({e})") from e
                row = None
            if isinstance(row, dict):
                yield line_no, row
            elif strict:
                raise ValueError(f"{path}, line {line_no}: expected a JSON object, got {type(row).__name__}")
            else:
                text = line.rstrip("\n")
                warnings.warn(f"{path}:{line_no}: skipping a line that is not a JSON object (truncated write?): {text[:60]!r}")


def read_jsonl(path: str | os.PathLike, *, strict: bool = False) -> list[dict]:
    """The rows of a JSONL file (metrics.jsonl, samples.jsonl, a `generate` output); `strict` as in
    numbered_jsonl_rows: raise on a line that is not a JSON object, rather than skip it with a warning."""
    return [row for _, row in numbered_jsonl_rows(path, strict=strict)]
