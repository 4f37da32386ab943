"""What every rollout engine returns (`Rollout`) and provides (`Engine`), and token sampling shared by
the torch engine's two paths."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


@dataclass
class Rollout:
    """n completions per prompt, row i belongs to prompt i // n."""

    prompt_ids: list[list[int]]  # one per prompt, unpadded
    completion_ids: torch.Tensor  # (N, T) right-padded with pad id
    completion_mask: torch.Tensor  # (N, T) 1 for sampled tokens, EOS included
    logprobs: torch.Tensor  # (N, T) log-prob of each token under the temperature-scaled policy
    texts: list[str]  # decoded completions, special tokens removed
    truncated: list[bool]  # hit max_new_tokens without EOS or a stop string
    n: int
    entropies: torch.Tensor | None = None  # (N, T) entropy of the temperature-scaled policy at each token

    @property
    def lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(1)


class Engine(Protocol):
    """What the trainer and the evaluator need from a rollout engine.

    The log-probs must be those of the weights being trained (the trainer uses them as the old
    log-probs of the clipped objective), so an engine with its own copy of the weights (vLLM) gets
    them from `load_weights` after every optimizer step.
    """

    tokenizer: object

    def generate(self, prompts: list[str], sampling, n: int = 1) -> Rollout: ...

    def load_weights(self, model) -> None: ...


def filter_logits(logits: torch.Tensor, top_p: float = 1.0, top_k: int = 0) -> torch.Tensor:
    """Masks logits outside the top-k and the top-p nucleus with -inf. logits: (B, V)."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def sample_next(logits: torch.Tensor, sampling, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row from (B, V) logits -> (tokens (B,), their log-probs (B,), entropies (B,)), all
    under the temperature-scaled policy. Shared by both paths, so they draw the same tokens from the same
    generator state. The entropy is logged by the trainer: here it costs two cheap ops, in the training
    pass a softmax over every completion token."""
    scaled = logits / max(sampling.temperature, 1e-5)
    logprobs = F.log_softmax(scaled, -1)
    probs = logprobs.exp()
    entropy = (probs * logprobs).sum(-1).neg_()
    if sampling.temperature == 0:
        choice = scaled.argmax(-1)
    else:
        # Inverse CDF: one uniform per row (torch.multinomial draws one exponential per vocabulary entry,
        # 10x slower at a batch of 128). Tokens of probability 0 (filtered) span an empty interval.
        if sampling.top_p < 1.0 or sampling.top_k > 0:
            probs = filter_logits(scaled, sampling.top_p, sampling.top_k).softmax(-1)
        cdf = probs.cumsum(-1)
        u = torch.rand((cdf.size(0), 1), generator=generator, device=cdf.device, dtype=cdf.dtype)
        choice = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp_(max=cdf.size(1) - 1)
    return choice, logprobs.gather(1, choice[:, None]).squeeze(1), entropy


