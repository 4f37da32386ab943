"""What a model keeps in memory, in transformers' words: the KV cache a forward takes and returns (its
name changed across 5.x), and gradient checkpointing."""

from __future__ import annotations

import functools

from r1lab.errors import ConfigError


@functools.cache
def _cache_field() -> str:
    """transformers' name for a forward's KV cache, as argument and as output field: `cache` in newer 5.x
    (5.24 warns that `past_key_values` goes in 5.40), `past_key_values` in older ones (5.19 has no `cache`)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def with_cache(cache) -> dict:
    """The keyword argument that hands a forward the KV cache `cache`: model(..., **with_cache(cache))."""
    return {_cache_field(): cache}


def cache_of(output):
    """The KV cache a forward with use_cache=True returned."""
    return getattr(output, _cache_field())


def enable_gradient_checkpointing(model) -> None:
    """HF's gradient checkpointing on every layer, non-reentrant: a layer keeps only its input and is
    recomputed in the backward pass. (Non-reentrant checkpoints need no input that requires grad, so the
    input hook HF adds for that is removed: a hooked model would lose the engine's fast decoder.)"""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model  # under a LoRA wrapper
    if not getattr(hf, "supports_gradient_checkpointing", False):
        raise ConfigError(f"gradient_checkpointing: {type(hf).__name__} does not support gradient checkpointing; "
                          "set gradient_checkpointing=false")
    enable = getattr(hf, "activation_checkpointing_enable", None)  # transformers >= 5.x; the old name warns there
    if enable is not None:
        enable({"use_reentrant": False})
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        hf.disable_input_require_grads()
    except AttributeError:  # transformers versions that added no such hook
        pass


def gradient_checkpointing_on(model) -> bool:
    """Whether any layer of `model` is set to checkpoint (HF's flag; it acts only in training mode with grad)."""
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())
