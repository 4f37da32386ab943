"""Atomic checkpoints: a kill at any moment leaves the previous checkpoint intact and `latest` valid.

Layout: RUN/checkpoints/step-000040/{model files, tokenizer files, trainer_state.pt, manifest.json}
        RUN/checkpoints/latest   (text: the name of the newest complete checkpoint)

With several processes (r1lab.dist) every rank calls `save` and `load_state`: rank 0 writes the whole
model, the tokenizer and trainer_state.pt, and every rank its shards of the optimizer and of what it
trains under step-000040/sharded/ (torch.distributed.checkpoint). A checkpoint resumes with the number of
processes that wrote it.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from r1lab import dist
from r1lab.disk import atomic_write, writing
from r1lab.store.manifest import write_manifest
from r1lab.store.recovery import newest_intact

KEEP = 2  # the newest and one before it: if the newest is found damaged on resume, the older one is used


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save(run_dir: Path, step: int, model, tokenizer, state: dict, training=None) -> Path:
    """`model` whole (HF files) and `state` in trainer_state.pt. `training` (dist.TrainingState: the
    optimizer and what it trains) goes into trainer_state.pt in one process; with several, every rank
    calls `save` with it and writes its shards into sharded/. Without `training` (SFT) the caller is alone."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:06d}"
    tmp = root / f".step-{step:06d}.tmp"
    every_rank = dist.barrier if training is not None else lambda: None
    with writing("checkpoint", final, cleanup=tmp if dist.is_main() else None):
        if dist.is_main():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        every_rank()
        if training is not None:
            state = {**state, "world_size": dist.world_size(), **training.save(tmp / "sharded")}
        if dist.is_main():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            torch.save(state, tmp / "trainer_state.pt")
        every_rank()  # every rank's shards are written
        if dist.is_main():
            write_manifest(tmp)  # last: a directory without it was not finished
    if dist.is_main():
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)  # the directory appears complete or not at all
        atomic_write(root / "latest", final.name, "checkpoint pointer")
        for old in sorted(p for p in root.glob("step-*") if p.name != final.name)[:-(KEEP - 1) or None]:
            shutil.rmtree(old, ignore_errors=True)
    every_rank()  # no rank goes on (or can be stopped) before the checkpoint is complete
    return final


def latest(run_dir: Path) -> Path | None:
    """The newest intact checkpoint (checked against its manifest); a damaged one or a bad pointer is
    warned about and passed over (recovery.py)."""
    return newest_intact(Path(run_dir) / "checkpoints")


def load_state(path: Path, training=None) -> dict:
    """trainer_state.pt, after loading `training` (dist.TrainingState) from it or from sharded/."""
    state = torch.load(Path(path) / "trainer_state.pt", weights_only=False)
    if training is not None:
        dist.check_world_size(state.get("world_size", 1), path)
        training.load(state, Path(path) / "sharded")
    return state
