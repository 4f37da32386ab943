"""PPO's parts: per-token rewards, GAE, the clipped value loss and the value model (a critic on a copy
of the policy's transformer). GAE and the value loss serve the control tasks too (gym/ppo.py).

Shapes: N completions, T completion tokens; for GAE, any leading shape with time last.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from r1lab.models.device import autocast, compute_dtype, set_compute_dtype
from r1lab.rl.algorithms import masked_mean


def token_rewards(rewards: torch.Tensor, completion_mask: torch.Tensor, kl: torch.Tensor | None = None,
                  beta: float = 0.0) -> torch.Tensor:
    """PPO/InstructGPT: the sequence reward (N,) paid at the last completion token, minus beta * KL
    at every token (kl: (N, T), k1 = logp - ref_logp of the sampled tokens). Returns (N, T)."""
    mask = completion_mask.to(rewards.dtype)
    last = (mask.sum(1).long() - 1).clamp(min=0)  # (N,) index of the last completion token
    out = torch.zeros_like(mask).scatter(1, last[:, None], rewards[:, None])
    if kl is not None and beta > 0:
        out = out - beta * kl
    return out * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, live: torch.Tensor,
        gamma: float = 1.0, lam: float = 0.95) -> torch.Tensor:
    """Generalised advantage estimation, time on the last axis; every argument (..., T).

    delta_t = r_t + gamma * live_t * V'_t - V_t,  A_t = delta_t + gamma * lam * live_t * A_{t+1},
    where V'_t is the value of the state after step t and live_t = 0 when the episode ended at step t
    (nothing flows back across an episode's end). Returns the advantages (..., T)."""
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[..., 0])
    for t in reversed(range(values.size(-1))):
        delta = rewards[..., t] + gamma * live[..., t] * next_values[..., t] - values[..., t]
        running = delta + gamma * lam * live[..., t] * running
        advantages[..., t] = running
    return advantages


def token_gae(rewards: torch.Tensor, values: torch.Tensor, completion_mask: torch.Tensor, gamma: float = 1.0,
              lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over completion tokens (N, T): the state after the last token is terminal (V = 0), padding
    carries nothing. Returns (advantages, returns = advantages + values), 0 on padding."""
    mask = completion_mask.to(values.dtype)
    values = values * mask  # padding is past the end: value 0, so V after the last token is 0
    next_values = F.pad(values[:, 1:], (0, 1))
    advantages = gae(rewards * mask, values, next_values, torch.ones_like(mask), gamma, lam) * mask
    return advantages, (advantages + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, mean_of=masked_mean) -> torch.Tensor:
    """(x - mean) / std over the masked entries of the whole batch (PPO's advantage whitening). mean_of:
    the masked mean to use (dist.masked_mean: over every rank's batch)."""
    mean = mean_of(x, mask)
    var = mean_of((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask.to(x.dtype)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float | None:
    """1 - Var(returns - values) / Var(returns): 1 is a perfect critic, <= 0 one no better than a constant.
    None when the returns do not vary (nothing to explain)."""
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    error = returns - values
    var_error = masked_mean((error - masked_mean(error, mask)) ** 2, mask)
    return float(1 - var_error / var_returns) if var_returns > 0 else None


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, value_clip: float | None = 0.2,
               mask: torch.Tensor | None = None, num_tokens: float | torch.Tensor | None = None
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """0.5 * max((V - R)^2, (V_clipped - R)^2), V_clipped within value_clip of the old value (None: no
    clip): like the ratio clip, it stops one batch from moving the critic far (as OpenAI baselines,
    CleanRL, TRL). Averaged over the mask's entries, or divided by `num_tokens` (a minibatch's count,
    so micro-batch losses add up); no mask: the mean over every entry."""
    mask = torch.ones_like(values) if mask is None else mask.to(values.dtype)
    unclipped_error = (values - returns) ** 2
    clipped_error = unclipped_error
    if value_clip is not None:
        clipped_error = (old_values + torch.clamp(values - old_values, -value_clip, value_clip) - returns) ** 2
    per_token = 0.5 * torch.max(unclipped_error, clipped_error)
    loss = (per_token * mask).sum() / (mask.sum().clamp(min=1) if num_tokens is None else num_tokens)
    with torch.no_grad():
        stats = {"value_clip_frac": float(masked_mean((clipped_error > unclipped_error).to(mask.dtype), mask))}
    return loss, stats


class ValueModel(torch.nn.Module):
    """PPO's critic: a copy of the policy's transformer (without its LM head) and a scalar head.
    values[:, t] estimates the return from the state before token t, read where the policy's logits are."""

    def __init__(self, policy):
        super().__init__()
        if policy.base_model is policy:
            raise ValueError(f"ppo needs the policy's transformer without its LM head; {type(policy).__name__} has no base_model")
        self.body = copy.deepcopy(policy.base_model)  # e.g. LlamaModel: hidden states, no vocabulary projection
        self.head = torch.nn.Linear(policy.config.hidden_size, 1, device=policy.device)
        torch.nn.init.zeros_(self.head.weight)  # V = 0 at the start: no made-up baseline before any data
        torch.nn.init.zeros_(self.head.bias)
        set_compute_dtype(self, compute_dtype(policy))  # the body computes as the policy does

    @property
    def device(self):
        return self.head.weight.device

    def forward(self, batch) -> torch.Tensor:
        """Values (n, T) of a `Batch`'s rows: the state each completion token was sampled in."""
        dev = self.device
        with autocast(self):
            hidden = self.body(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev),
                               position_ids=batch.position_ids.to(dev)).last_hidden_state
        # The head in fp32 whatever the body computes in (FSDP's mixed precision hands it its weights in bf16).
        values = F.linear(hidden.float(), self.head.weight.float(), self.head.bias.float())
        return values.squeeze(-1)[:, batch.prompt_len - 1 : -1]
