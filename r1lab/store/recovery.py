"""Finding the checkpoint to resume from when things went wrong: a damaged newest checkpoint (a file
truncated or deleted), a `latest` pointer that is missing, garbage, or names a deleted directory. The
newest intact checkpoint wins, with a warning; the pointer is rewritten to it; damaged directories are
moved aside (kept for inspection, never pruned into the only good copy's place)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from r1lab.disk import atomic_write
from r1lab.store.manifest import damage

log = logging.getLogger("r1lab.checkpoint")
REQUIRED = ("trainer_state.pt",)


def _step_dirs(root: Path) -> list[Path]:
    """step-NNNNNN directories, newest first (their names sort by step)."""
    return sorted((p for p in root.glob("step-*") if p.is_dir() and p.name[5:].isdigit()), reverse=True)


def newest_intact(root: Path) -> Path | None:
    root = Path(root)
    pointer = root / "latest"
    try:
        named = pointer.read_text().strip() if pointer.exists() else None
    except (OSError, UnicodeDecodeError):
        named = "<unreadable>"
    candidates = _step_dirs(root)
    if named is not None and named not in {p.name for p in candidates}:
        log.warning("checkpoint pointer %s names %r, which is not a checkpoint here: looking for the newest intact one",
                    pointer, named[:80])
    for path in candidates:
        problem = damage(path, REQUIRED)
        if not problem:
            if path.name != named:
                log.warning("resuming from %s (rebuilt %s from the directory)", path.name, pointer)
                atomic_write(pointer, path.name, "checkpoint pointer")
            return path
        log.warning("checkpoint %s is damaged (%s): moved aside to %s, trying the one before it", path.name, problem,
                    "damaged-" + path.name)
        aside = root / f"damaged-{path.name}"
        if not aside.exists():
            os.replace(path, aside)
    if candidates:
        log.warning("no intact checkpoint in %s: starting from step 0", root)
    return None
