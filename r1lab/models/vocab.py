"""New tokens for a trained model: tool calls and results (`<tool>`, `</tool>`, `<result>`, `</result>`) that its
pretraining never saw, each one id, with embedding rows initialised by transformers' mean resizing (the mean of
the old rows plus noise within their spread), so the model's outputs on old text do not move."""

from __future__ import annotations

import torch


def add_tokens(model, tokenizer, tokens: list[str], seed: int) -> list[str]:
    """Adds to `tokenizer` the `tokens` it lacks (as plain added tokens: they are text the model writes and reads,
    so decoding keeps them) and grows `model`'s embedding and head to match. Returns the tokens added.

    The noise is drawn from torch's global generator, seeded here with `seed` (and put back after): unseeded, each
    process drew its own rows, so a run was not its own rerun (a resumed run's earlier stages came from another
    draw than the uninterrupted run's) and ranks of one run would start from different models."""
    missing = [t for t in tokens if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_tokens(missing)
        device = model.get_input_embeddings().weight.device  # the noise is drawn where the rows live
        gpu = [] if device.type == "cpu" else [device.index or 0]
        with torch.random.fork_rng(devices=gpu, device_type=device.type if gpu else "cuda"):
            torch.manual_seed(seed)
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return missing
