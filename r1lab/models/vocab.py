"""New tokens for a trained model: tool calls and results (`<tool>`, `</tool>`, `<result>`, `</result>`) that its
pretraining never saw, each one id, with embedding rows initialised by transformers' mean resizing (the mean of
the old rows plus noise within their spread), so the model's outputs on old text do not move."""

from __future__ import annotations


def add_tokens(model, tokenizer, tokens: list[str]) -> list[str]:
    """Adds to `tokenizer` the `tokens` it lacks (as plain added tokens: they are text the model writes and reads,
    so decoding keeps them) and grows `model`'s embedding and head to match. Returns the tokens added."""
    missing = [t for t in tokens if tokenizer.convert_tokens_to_ids(t) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_tokens(missing)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    return missing
