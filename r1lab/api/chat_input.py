"""What chat does with a line it cannot use as it is: bytes that are not UTF-8 (decoded with replacement
characters, never a UnicodeDecodeError) and a question longer than the model can read (refused with a
message before any generation: a 200k-character paste to a 160-token model is a typo, not a prompt)."""

from __future__ import annotations

import sys


def robust_stdin() -> None:
    """Undecodable bytes on the terminal become U+FFFD instead of raising in input()."""
    try:
        sys.stdin.reconfigure(errors="replace")
    except (AttributeError, ValueError, OSError):  # not a TextIOWrapper (tests, pipes replaced): nothing to do
        pass


def clean(text: str) -> str:
    """Lone surrogates (from surrogateescape'd bytes) cannot be encoded by a tokenizer: replace them."""
    return text.encode("utf-8", errors="replace").decode("utf-8", errors="replace")


def context_of(engine) -> int | None:
    model = getattr(engine, "model", None)
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def too_long(prompt: str, engine, max_new_tokens: int) -> str | None:
    """A message when `prompt` leaves less than a quarter of max_new_tokens (at least 1) of the model's
    context to answer in; None when it fits (or the context is unknown)."""
    limit = context_of(engine)
    if limit is None:
        return None
    room = max(1, min(max_new_tokens, limit) // 4)
    if len(prompt) > 8 * limit:  # far over at any tokenization (a token is rarely under 1/8 char): no need to tokenize
        return f"that message is {len(prompt):,} characters; this model reads at most {limit} tokens: shorten it"
    n = len(engine.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if n > limit - room:
        return (f"that message is {n} tokens with the template; this model reads at most {limit} tokens and needs "
                f"room to answer: shorten it")
    return None
