"""The typed batch one RL update works on, built from a Rollout and its rewards.

Shapes: N rows (completions), T completion tokens, P the prompt width. Each distinct prompt is kept
once (a group's G completions share it), so the training pass can run it once per group (rl/logprobs.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import torch


def _per_row(default=None):
    return field(default=default, metadata={"per_row": True})


@dataclass
class Batch:
    prompt_ids: torch.Tensor  # (prompts, P) each distinct prompt once, left-padded
    prompt_mask: torch.Tensor  # (prompts, P) 1 on prompt tokens
    prompt_of_row: torch.Tensor = _per_row()  # (N,) the row's prompt: an index into prompt_ids
    completion_ids: torch.Tensor = _per_row()  # (N, T) right-padded
    completion_mask: torch.Tensor = _per_row()  # (N, T) 1 on completion tokens, EOS included: what the passes attend to
    loss_mask: torch.Tensor | None = _per_row()  # (N, T) 1 on the tokens the policy sampled, 0 on tool results; None:
    # the completion mask. Tool results have no ratio, no KL and no gradient (`trained_mask`).
    sampling_logprobs: torch.Tensor = _per_row()  # (N, T) the engine's, as it sampled
    old_logprobs: torch.Tensor | None = _per_row()  # (N, T) the trainer's for the policy that sampled: the clipped
    # ratio's denominator. Set when the batch is scored (rl/step.py): the sampling log-probs themselves for an engine
    # that computes them as the trainer does (rl.rollout_is off), the trainer's own pass otherwise.
    rewards: torch.Tensor = _per_row()  # (N,) the weighted reward of each completion
    advantages: torch.Tensor | None = _per_row()  # (N,) one per completion, or PPO's (N, T)
    ref_logprobs: torch.Tensor | None = _per_row()  # (N, T) under the reference model, when beta > 0
    old_values: torch.Tensor | None = _per_row()  # (N, T) ppo: the value model's at scoring time
    returns: torch.Tensor | None = _per_row()  # (N, T) ppo: GAE targets
    is_weights: torch.Tensor | None = _per_row()  # (N, T) rollout importance weights, when the sampler is not the trainer
    exact_logprobs: bool = False  # the engine's log-probs are the trainer's own (Rollout.exact_logprobs)

    @classmethod
    def from_rollout(cls, rollout, rewards: torch.Tensor, pad_id: int) -> "Batch":
        """Row i of the rollout answers prompt i // rollout.n; rewards (N,)."""
        P, n_prompts = max(map(len, rollout.prompt_ids), default=0), len(rollout.prompt_ids)  # 0 prompts: a rank with no kept group
        prompt_ids = torch.full((n_prompts, P), pad_id, dtype=torch.long)
        prompt_mask = torch.zeros((n_prompts, P), dtype=torch.long)
        for i, p in enumerate(rollout.prompt_ids):
            prompt_ids[i, P - len(p):] = torch.tensor(p, dtype=torch.long)
            prompt_mask[i, P - len(p):] = 1
        return cls(prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                   prompt_of_row=torch.arange(rollout.completion_ids.size(0)) // rollout.n,
                   completion_ids=rollout.completion_ids, completion_mask=rollout.completion_mask, loss_mask=rollout.loss_mask,
                   sampling_logprobs=rollout.logprobs, rewards=rewards.float(), exact_logprobs=rollout.exact_logprobs)

    @property
    def trained_mask(self) -> torch.Tensor:
        """(N, T) the tokens every loss, normaliser and statistic counts: the policy's own."""
        return self.completion_mask if self.loss_mask is None else self.loss_mask

    def __len__(self) -> int:
        return self.completion_ids.size(0)

    @property
    def prompt_len(self) -> int:
        return self.prompt_ids.size(1)

    def take(self, rows: torch.Tensor) -> "Batch":
        """The rows `rows` (indices), their prompts kept once each."""
        prompts, prompt_of_row = self.prompt_of_row[rows].unique(return_inverse=True)
        per_row = {f.name: getattr(self, f.name)[rows] for f in fields(self)
                   if f.metadata.get("per_row") and getattr(self, f.name) is not None}
        per_row["prompt_of_row"] = prompt_of_row  # re-indexed into the kept prompts
        return replace(self, **per_row, prompt_ids=self.prompt_ids[prompts], prompt_mask=self.prompt_mask[prompts])

    def to(self, device) -> "Batch":
        return replace(self, **{f.name: getattr(self, f.name).to(device) for f in fields(self)
                                if isinstance(getattr(self, f.name), torch.Tensor)})

    # The rows as [left-padded prompt | right-padded completion] (N, P + T): the plain training pass and
    # the value model read these. Logits at P-1 .. P+T-2 predict the completion.
    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids[self.prompt_of_row], self.completion_ids], 1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask[self.prompt_of_row], self.completion_mask], 1)

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.attention_mask.cumsum(1) - 1).clamp(min=0)


def micro_batches(batch: Batch, rows: torch.Tensor, size: int, tokens: int | None = None) -> list[torch.Tensor]:
    """`rows` (indices into `batch`) cut into micro-batches of at most `size` rows, in their order. With
    `tokens`, also at most `tokens` tokens each, counted as the training pass pads them: rows x (prompt
    width + longest completion); a row longer than that goes alone. The rows then go longest completion
    first, so each micro-batch pads little. Gradients add up over micro-batches: how they are cut
    changes the update only by float rounding."""
    if tokens is None:
        return [rows[i : i + size] for i in range(0, len(rows), size)]
    lengths = batch.completion_mask[rows].sum(1)
    order = torch.argsort(lengths, descending=True, stable=True)
    rows, lengths = rows[order], lengths[order].tolist()
    out, start = [], 0
    while start < len(rows):
        n = max(1, min(size, tokens // (batch.prompt_len + lengths[start])))  # its first row is its longest
        out.append(rows[start : start + n])
        start += n
    return out
