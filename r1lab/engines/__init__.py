"""Rollout engines behind one factory: `make_engine(name, model, tokenizer, seed=...)`.

A new engine is one module with a class that implements `Engine` (engines/base.py), plus one line in
ENGINES. Entries are "module:Class" strings, imported on use, so an optional engine's package is needed
only by the runs that pick it.
"""

from __future__ import annotations

import importlib
import inspect

from r1lab.engines.base import Engine, Rollout, StreamingEngine

ENGINES = {
    "torch": "r1lab.engines.torch_engine:TorchEngine",
    "vllm": "r1lab.engines.vllm_engine:VLLMEngine",  # pip install 'r1lab[vllm]'
}


def make_engine(name: str, model, tokenizer, *, seed: int = 0, **options) -> Engine:
    """The engine `name` (rollout.engine), sampling from `model` with its generator seeded by `seed`.
    `options` go to the engine's constructor; one it does not take is refused, naming it (a setting that
    would silently do nothing). RolloutConfig.options() gives the ones a run wrote down."""
    engine_cls = engine_class(name)
    unknown = unknown_options(engine_cls, options)
    if unknown:
        accepted = [k for k in inspect.signature(engine_cls).parameters if k not in ("model", "tokenizer", "seed")]
        raise ValueError(f"rollout engine {name!r} takes no option {', '.join(map(repr, unknown))}; it takes "
                         f"{', '.join(accepted) or 'none'}")
    return engine_cls(model, tokenizer, seed=seed, **options)


def unknown_options(engine_cls: type, options: dict) -> list[str]:
    """The options `engine_cls`'s constructor does not take."""
    accepted = inspect.signature(engine_cls).parameters
    return [k for k in options if k not in accepted]


def engine_class(name: str) -> type:
    """The class registered as `name` in ENGINES, imported now."""
    if name not in ENGINES:
        raise ValueError(f"unknown rollout engine {name!r}; known engines: {', '.join(sorted(ENGINES))}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["ENGINES", "Engine", "Rollout", "StreamingEngine", "engine_class", "make_engine", "unknown_options"]
