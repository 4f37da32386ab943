"""Rollout engines behind one factory: `make_engine(name, model, tokenizer, seed=...)`.

A new engine is one module with a class that implements `Engine` (engines/base.py), plus one line in
ENGINES. Entries are "module:Class" strings, imported on use, so an optional engine's package is needed
only by the runs that pick it.
"""

from __future__ import annotations

import importlib

from r1lab.engines.base import Engine, Rollout

ENGINES = {
    "torch": "r1lab.engines.torch_engine:TorchEngine",
}


def make_engine(name: str, model, tokenizer, *, seed: int = 0, **options) -> Engine:
    """The engine `name` (rollout.engine), sampling from `model` with its generator seeded by `seed`."""
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)(model, tokenizer, seed=seed, **options)


__all__ = ["ENGINES", "Engine", "Rollout", "make_engine"]
