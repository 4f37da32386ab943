"""Weights into a model: a saved directory's state dict, and a new model of the same class holding
given tensors (a merged LoRA model, a model cast to its compute dtype)."""

from __future__ import annotations

from pathlib import Path

import torch


def load_weights(model_dir, model) -> dict:
    """The state dict saved in `model_dir` (its *.safetensors files), on the model's device, ready for
    `model.load_state_dict`; a tied LM head gets the embedding's tensor."""
    from safetensors.torch import load_file

    state = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        state.update(load_file(str(f), device=str(model.device)))
    if "lm_head.weight" not in state and getattr(model.config, "tie_word_embeddings", False):
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    return state


def rebuilt(model, state: dict):
    """A new model of `model`'s class and config (a copy of it) holding the tensors of `state` (not copies),
    `model`'s non-persistent buffers (RoPE's inv_freq) and generation config, in eval mode. Built on the
    meta device: no memory for weights about to be replaced."""
    import copy

    with torch.device("meta"):
        plain = type(model)(copy.deepcopy(model.config))  # saving writes its dtype into the config: not `model`'s
    plain.load_state_dict(state, assign=True)
    for name, buffer in model.named_buffers():  # non-persistent buffers are not in a state dict
        owner, _, leaf = name.rpartition(".")
        setattr(plain.get_submodule(owner), leaf, buffer)
    if getattr(model.config, "tie_word_embeddings", False):
        plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain.eval()
