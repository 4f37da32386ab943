"""GRPO: group-relative advantages and the clipped token-level objective with a k3 KL penalty.

Algorithms know tensors, not models or files. Shapes: N completions, T completion tokens.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """A_i = (r_i - mean(group)) / (std(group) + eps). rewards: (N,), N = prompts * group_size.

    std is the unbiased sample std (as TRL). A group whose rewards are all equal gets advantage 0:
    it carries no signal, which is why `zero_std_frac` is logged.
    """
    grouped = rewards.view(-1, group_size)  # (prompts, G)
    mean = grouped.mean(1, keepdim=True)
    std = grouped.std(1, keepdim=True)
    return ((grouped - mean) / (std + eps)).view(-1)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) by the k3 estimator: r - log r - 1 with r = pi_ref / pi; unbiased, >= 0."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


def grpo_loss(
    logprobs: torch.Tensor,  # (N, T) under the policy being trained (requires grad)
    old_logprobs: torch.Tensor,  # (N, T) under the policy that sampled
    advantages: torch.Tensor,  # (N,)
    completion_mask: torch.Tensor,  # (N, T) 1 for completion tokens
    eps: float = 0.2,
    eps_high: float | None = None,
    beta: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,  # (N, T), needed when beta > 0
) -> tuple[torch.Tensor, dict[str, float]]:
    """-J from R1_RECIPE.md section 1: mean over completions of the mean over their tokens of
    min(ratio * A, clip(ratio, 1-eps, 1+eps_high) * A) - beta * KL."""
    mask = completion_mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - eps, 1 + (eps if eps_high is None else eps_high)) * adv
    per_token = -torch.min(unclipped, clipped)
    kl = None
    if beta > 0:
        if ref_logprobs is None:
            raise ValueError("beta > 0 needs ref_logprobs")
        kl = kl_k3(logprobs, ref_logprobs)
        per_token = per_token + beta * kl
    tokens = mask.sum(1).clamp(min=1)  # (N,)
    loss = ((per_token * mask).sum(1) / tokens).mean()
    with torch.no_grad():
        n_tokens = mask.sum().clamp(min=1)
        stats = {
            "clip_frac": float(((clipped < unclipped).to(mask.dtype) * mask).sum() / n_tokens),
            "kl": float((kl * mask).sum() / n_tokens) if kl is not None else 0.0,
        }
    return loss, stats
