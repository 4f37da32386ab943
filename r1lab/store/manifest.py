"""Checkpoint manifests: every file's size and sha256, written last inside a checkpoint's temporary
directory (before the rename that publishes it), so a checkpoint whose files were later truncated,
deleted or overwritten is recognised on load instead of crashing torch.load or, worse, loading garbage."""

from __future__ import annotations

import json
from pathlib import Path

from r1lab.disk import atomic_write, sha256_file

MANIFEST = "manifest.json"


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(directory: Path) -> None:
    directory = Path(directory)
    entries = {str(p.relative_to(directory)): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in _files(directory)}
    atomic_write(directory / MANIFEST, json.dumps({"files": entries}, indent=1), "manifest")


def damage(directory: Path, required: tuple[str, ...] = ()) -> str:
    """'' when the directory is intact, else what is wrong with it (for the warning). Sizes are compared
    before hashes: a truncated file is found without reading gigabytes."""
    directory = Path(directory)
    missing = [name for name in required if not (directory / name).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        entries = json.loads((directory / MANIFEST).read_text())["files"]
    except FileNotFoundError:  # written before manifests existed: its rename was atomic, trust it
        return ""
    except (ValueError, KeyError, TypeError) as err:
        return f"unreadable {MANIFEST} ({err})"
    for name, entry in entries.items():
        path = directory / name
        if not path.is_file():
            return f"missing {name}"
        if path.stat().st_size != entry["size"]:
            return f"{name} is {path.stat().st_size} bytes, {entry['size']} when written (truncated?)"
    for name, entry in entries.items():
        if sha256_file(directory / name) != entry["sha256"]:
            return f"{name} does not match its checksum"
    return ""
