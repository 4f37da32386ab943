"""What every rollout engine returns (`Rollout`) and provides (`Engine`); what an engine that also streams one
completion as text for chat provides (`StreamingEngine`); and token sampling shared by the torch engine's two
paths (and their left-padded prompts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import torch
import torch.nn.functional as F

EPISODE_FIELDS = ("tool_calls", "tool_errors", "turns", "environment_rewards")


@dataclass(kw_only=True)
class Rollout:
    """n completions per prompt, row i belongs to prompt i // n. N = prompts * n rows, T = the longest completion."""

    prompt_ids: list[list[int]]  # one per prompt, unpadded
    completion_ids: torch.Tensor  # (N, T) right-padded with the pad id
    completion_mask: torch.Tensor  # (N, T) 1 for sampled tokens, EOS included
    logprobs: torch.Tensor  # (N, T) log-prob of each token under the temperature-scaled sampling policy
    texts: list[str]  # (N,) decoded completions, special tokens removed
    truncated: list[bool]  # (N,) hit max_new_tokens without EOS or a stop string
    n: int
    entropies: torch.Tensor | None = None  # (N, T) entropy of the temperature-scaled policy at each token
    loss_mask: torch.Tensor | None = None  # (N, T) 1 on the tokens the policy sampled, 0 on tool results it read
    # (in completion_mask, so attended to, but never trained); None: every completion token is the policy's
    tool_calls: list[int] | None = None  # (N,) episodes with turns (engines/episodes.py): calls made, calls that
    tool_errors: list[int] | None = None  # (N,) came back as errors, and turns generated
    turns: list[int] | None = None
    environment_rewards: list[float | None] | None = None  # (N,) with rl.environment: each episode's reward()
    exact_logprobs: bool = False  # the log-probs are the trainer's own (same weights, same kernels): rl.rollout_is=auto
    # corrects nothing then. An engine says so only when it is true (the torch engine); any other is corrected.

    @property
    def lengths(self) -> torch.Tensor:  # (N,)
        return self.completion_mask.sum(1)

    def select(self, groups: list[int]) -> "Rollout":
        """The rows of the prompts `groups` (indices of prompts), in that order."""
        rows = [g * self.n + j for g in groups for j in range(self.n)]
        index = torch.tensor(rows, dtype=torch.long)
        return Rollout(prompt_ids=[self.prompt_ids[g] for g in groups], completion_ids=self.completion_ids[index],
                       completion_mask=self.completion_mask[index], logprobs=self.logprobs[index],
                       texts=[self.texts[i] for i in rows], truncated=[self.truncated[i] for i in rows], n=self.n,
                       entropies=self.entropies[index] if self.entropies is not None else None,
                       loss_mask=self.loss_mask[index] if self.loss_mask is not None else None,
                       **{k: [getattr(self, k)[i] for i in rows] for k in EPISODE_FIELDS if getattr(self, k) is not None},
                       exact_logprobs=self.exact_logprobs)

    @staticmethod
    def concat(parts: list["Rollout"], pad_id: int) -> "Rollout":
        """Several rollouts (same n) as one; completions right-padded to the longest."""
        if len(parts) == 1:
            return parts[0]
        T = max(r.completion_ids.size(1) for r in parts)

        def cat(tensors, value):  # (sum of N, T)
            return torch.cat([F.pad(x, (0, T - x.size(1)), value=value) for x in tensors])

        entropies = None if any(r.entropies is None for r in parts) else cat([r.entropies for r in parts], 0.0)
        loss_mask = None if all(r.loss_mask is None for r in parts) else cat(
            [r.loss_mask if r.loss_mask is not None else r.completion_mask for r in parts], 0)
        return Rollout(prompt_ids=[p for r in parts for p in r.prompt_ids],
                       completion_ids=cat([r.completion_ids for r in parts], pad_id),
                       completion_mask=cat([r.completion_mask for r in parts], 0),
                       logprobs=cat([r.logprobs for r in parts], 0.0), texts=[t for r in parts for t in r.texts],
                       truncated=[t for r in parts for t in r.truncated], n=parts[0].n, entropies=entropies, loss_mask=loss_mask,
                       **{k: [v for r in parts for v in (getattr(r, k) or [0] * len(r.texts))] for k in EPISODE_FIELDS
                          if any(getattr(r, k) is not None for r in parts)},
                       exact_logprobs=all(r.exact_logprobs for r in parts))


class Engine(Protocol):
    """A rollout engine: what training, evaluation and generation need, and all a new engine must provide
    (with a constructor `Engine(model, tokenizer, *, seed, **its own options)` and one ENGINES line).

    The trainer uses the log-probs as the old log-probs of the clipped objective, so they must be those of the
    weights being trained: an engine with its own copy of the weights (vLLM) takes them in `load_weights`,
    which the trainer calls after every optimizer step. Optional: `in_process = True` for an engine that
    computes in this process (the torch engine), so the trainer fits its CPU threads around it.

    Optional, for episodes with turns (engines/episodes.py): `run_episodes(prompt_ids, sampling, n, respond, *,
    close, max_turns, seeds=None) -> Rollout | None` runs them in the engine's own decode loop: every episode
    at most sampling.max_new_tokens completion tokens (generated + results) and max_turns generations; a turn
    that writes `close` (with turns left) waits for `respond(rows, turn_ids)` (rows: episode indices; turn_ids:
    each one's ids of this turn), which returns one result per row, the ids to append as read (loss_mask 0,
    log-prob 0), or None to end that episode. The Rollout has loss_mask and turns; None means the engine
    cannot here, and episodes.py runs turns over generate_ids. The torch engine's fast path has it.
    """

    tokenizer: object  # the one it was built with: prompts are rendered and padded with it

    def generate(self, prompts: list[str], sampling, n: int = 1, seeds: list[int] | None = None) -> Rollout:
        """n completions per prompt with these sampling settings (temperature, top_p, top_k, max_new_tokens, stop).

        seeds (one int per prompt, optional): prompt i's n completions are drawn from a random stream of its
        own, seeded by seeds[i], so they do not depend on the other prompts of the call (how prompts are
        batched, or split over processes: rl/rollouts.py passes them). None: the engine's own stream
        (`rng_state`), as before; callers pass `seeds` only when they use it."""

    def load_weights(self, model) -> None:
        """Sample from `model`'s current weights from now on (after an optimizer step)."""

    def rng_state(self) -> object:
        """The sampler's random state, saved in checkpoints so a resumed run samples what it would have."""

    def set_rng_state(self, state: object) -> None: ...

    def close(self) -> None:
        """Free what the engine holds (processes, device memory)."""


class StreamingEngine(Engine, Protocol):
    """An engine that also streams one completion as text while it is written: what `r1lab chat` and
    `r1lab serve` (stream=true) need beyond rollouts."""

    def stream(self, prompt: str, sampling, stop_event=None) -> Iterator[str]:
        """One completion of `prompt`, yielded as text while it is written. Setting `stop_event`
        (a threading.Event) or closing the iterator stops it."""


def pad_id(tokenizer) -> int:
    """The id completions are padded with: the tokenizer's pad token, else its EOS."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def left_padded(prompt_ids: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of several lengths as one batch: ids, attention mask (prompts, longest), padded on the left."""
    width = max(map(len, prompt_ids))
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(prompt_ids), width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        ids[i, width - len(p):] = torch.tensor(p)
        attn[i, width - len(p):] = 1
    return ids.to(device), attn.to(device)


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


def sample_next(logits: torch.Tensor, sampling, generator: torch.Generator,
                uniforms: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row from (B, V) logits -> (tokens (B,), their log-probs (B,), entropies (B,)), all
    under the temperature-scaled policy. Shared by both paths, so they draw the same tokens from the same
    generator state. `uniforms` (B,): the rows' draws, given instead of drawn from `generator` (per-prompt
    seeds). The entropy is logged by the trainer: here it costs two cheap ops, in the training pass a
    softmax over every completion token."""
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
        if uniforms is None:
            u = torch.rand((cdf.size(0), 1), generator=generator, device=cdf.device, dtype=cdf.dtype)
        else:
            u = uniforms.to(cdf.device, cdf.dtype)[:, None]
        choice = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp_(max=cdf.size(1) - 1)
    return choice, logprobs.gather(1, choice[:, None]).squeeze(1), entropy


