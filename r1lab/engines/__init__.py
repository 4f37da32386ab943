"""Rollout engines behind one factory: `make_engine(name, model, tokenizer, seed=...)`.

A new engine is one module with a class that implements `Engine` (engines/base.py), plus one line in
ENGINES. Entries are "module:Class" strings, imported on use, so an optional engine's package is needed
only by the runs that pick it.
"""

from __future__ import annotations

import importlib
import inspect

from r1lab.engines.base import Engine, Rollout

ENGINES = {
    "torch": "r1lab.engines.torch_engine:TorchEngine",
    "vllm": "r1lab.engines.vllm_engine:VLLMEngine",  # pip install 'r1lab[vllm]'
}


def make_engine(name: str, model, tokenizer, *, seed: int = 0, **options) -> Engine:
    """The engine `name` (rollout.engine), sampling from `model` with its generator seeded by `seed`.
    `options` (the rollout settings) go to the engine only where its constructor takes them: the torch
    engine has no memory pool to size, vLLM has."""
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")
    module, cls = ENGINES[name].split(":")
    engine_cls = getattr(importlib.import_module(module), cls)
    accepted = inspect.signature(engine_cls).parameters
    return engine_cls(model, tokenizer, seed=seed, **{k: v for k, v in options.items() if k in accepted})


__all__ = ["ENGINES", "Engine", "Rollout", "make_engine"]
