"""The GRPO family and PPO: advantage estimators and policy losses, registered by `RLConfig.algorithm`.

Algorithms know tensors, not models or files. Shapes: N completions (prompts x G, row i belongs to
group i // G), T completion tokens.

An algorithm is one `Algorithm` record in ALGORITHMS (docs/R1_RECIPE.md section 1):
- where the advantage comes from: `advantages(rewards, group_size) -> (N,)`, one advantage per
  completion broadcast to its tokens; PPO instead learns a value model and gets (N, T) from GAE (rl/ppo.py);
- how the clipped per-token objective is averaged into one number: `loss(logprobs, old_logprobs,
  advantages, completion_mask, ...) -> (loss, stats)`;
- its clip range, where its KL term goes, and whether it resamples groups without reward spread.
A new algorithm is its functions plus one ALGORITHMS entry; the config's allowed names come from it.

              advantage                          loss: token losses averaged as             clip (eps, eps_high)
  grpo          (r - group mean) / group std       mean over completions of their token mean  0.2, 0.2
  dr_grpo       r - group mean                     sum / (max_new_tokens * completions)       0.2, 0.2
  dapo          as grpo (+ dynamic sampling)       sum / all tokens of the minibatch          0.2, 0.28
  gspo          as grpo                            one ratio per sequence, mean over them     3e-4, 4e-4
  rloo          r - mean of the other G-1          as grpo                                    0.2, 0.2
  reinforce_pp  (r - batch mean) / batch std       as dapo; KL as the k3 loss term            0.2, 0.2
  ppo           GAE on a value model, whitened     as dapo; beta * k1 KL in the reward        0.2, 0.2

The trainer splits a minibatch into micro-batches, so every loss takes the minibatch's normaliser
(`num_sequences`, `num_tokens`) and returns these rows' share of the minibatch loss: the micro-batch
losses add up to the minibatch loss whatever the split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

# ---------------------------------------------------------------------------------------------
# Advantages: (rewards (N,), group_size) -> advantages (N,)


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """GRPO: A_i = (r_i - mean(group)) / (std(group) + eps). rewards: (N,), N = prompts * group_size.

    std is the unbiased sample std (as TRL). A group whose rewards are all equal gets advantage 0:
    it carries no signal, which is why `zero_std_frac` is logged.
    """
    grouped = rewards.view(-1, group_size)  # (prompts, G)
    mean = grouped.mean(1, keepdim=True)
    std = grouped.std(1, keepdim=True)
    return ((grouped - mean) / (std + eps)).view(-1)


def group_mean_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dr. GRPO: A_i = r_i - mean(group). Dividing by the std up-weights groups that are nearly all
    right or all wrong (small std), a difficulty bias the Dr. GRPO paper removes."""
    grouped = rewards.view(-1, group_size)  # (prompts, G)
    return (grouped - grouped.mean(1, keepdim=True)).view(-1)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO: A_i = r_i - mean of the other G-1 rewards of the group. The baseline does not contain
    r_i, so it is unbiased; it equals G/(G-1) * (r_i - mean(group))."""
    grouped = rewards.view(-1, group_size)  # (prompts, G)
    others_mean = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)
    return (grouped - others_mean).view(-1)


def batch_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """REINFORCE++: A_i = (r_i - mean(batch)) / (std(batch) + eps): no group baseline, normalised
    over the whole batch (less noisy than a group of G). group_size is unused."""
    return (rewards - rewards.mean()) / (rewards.std() + eps)


# ---------------------------------------------------------------------------------------------
# Policy losses: (logprobs, old_logprobs, advantages, completion_mask, ...) -> (loss, stats)

def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) by the k3 estimator: r - log r - 1 with r = pi_ref / pi; unbiased, >= 0."""
    log_ratio = ref_logprobs - logprobs
    return torch.exp(log_ratio) - log_ratio - 1


def clipped_objective(ratio, advantages, eps, eps_high):
    """-min(ratio * A, clip(ratio, 1-eps, 1+eps_high) * A), and where the clip took effect."""
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - eps, 1 + (eps if eps_high is None else eps_high)) * advantages
    return -torch.min(unclipped, clipped), clipped < unclipped


def _kl_term(logprobs, ref_logprobs, beta):
    if beta <= 0:
        return None
    if ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs")
    return kl_k3(logprobs, ref_logprobs)


def _token_losses(logprobs, old_logprobs, advantages, completion_mask, eps, eps_high, beta, ref_logprobs, is_weights=None):
    """Per-token clipped objective (+ beta * k3 KL) (N, T), times the rollout importance weights when the
    sampler's log-probs are not the trainer's (is_weights (N, T), rl/step.py), and the stats every
    token-ratio loss logs."""
    mask = completion_mask.to(logprobs.dtype)
    adv = advantages[:, None] if advantages.dim() == 1 else advantages  # one advantage per sequence, or PPO's per token
    per_token, clipped = clipped_objective(torch.exp(logprobs - old_logprobs), adv, eps, eps_high)
    kl = _kl_term(logprobs, ref_logprobs, beta)
    if kl is not None:
        per_token = per_token + beta * kl
    if is_weights is not None:
        per_token = per_token * is_weights
    with torch.no_grad():
        stats = {"clip_frac": float(masked_mean(clipped.to(mask.dtype), mask)),
                 "kl": float(masked_mean(kl, mask)) if kl is not None else 0.0}
    return per_token * mask, stats


def grpo_loss(
    logprobs: torch.Tensor,  # (N, T) under the policy being trained (requires grad)
    old_logprobs: torch.Tensor,  # (N, T) under the policy that sampled
    advantages: torch.Tensor,  # (N,) or (N, T)
    completion_mask: torch.Tensor,  # (N, T) 1 for completion tokens
    eps: float = 0.2,
    eps_high: float | None = None,
    beta: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,  # (N, T), needed when beta > 0
    *,
    num_sequences: int | None = None,  # completions in the minibatch (default: N)
    is_weights: torch.Tensor | None = None,  # (N, T) rollout importance weights (rl/step.py), None: all 1
    **_,
) -> tuple[torch.Tensor, dict[str, float]]:
    """-J from docs/R1_RECIPE.md section 1: mean over completions of the mean over their tokens of
    min(ratio * A, clip(ratio, 1-eps, 1+eps_high) * A) - beta * KL.

    The 1/|o_i| makes a token of a short completion weigh more than one of a long completion: a wrong
    long answer is penalised less per token, the length bias Dr. GRPO and DAPO remove. Also RLOO's loss.
    """
    per_token, stats = _token_losses(logprobs, old_logprobs, advantages, completion_mask, eps, eps_high, beta, ref_logprobs,
                                     is_weights)
    tokens = completion_mask.sum(1).clamp(min=1)  # (N,)
    per_sequence = per_token.sum(1) / tokens
    loss = per_sequence.mean() if num_sequences is None else per_sequence.sum() / num_sequences
    return loss, stats


def dr_grpo_loss(logprobs, old_logprobs, advantages, completion_mask, eps=0.2, eps_high=None, beta=0.0,
                 ref_logprobs=None, *, num_sequences: int | None = None, max_tokens: int | None = None, is_weights=None, **_):
    """Dr. GRPO: sum of token losses / (max_tokens * num_sequences). The constant replaces 1/|o_i|, so
    every token weighs the same whatever its completion's length. max_tokens default: T."""
    per_token, stats = _token_losses(logprobs, old_logprobs, advantages, completion_mask, eps, eps_high, beta, ref_logprobs,
                                     is_weights)
    n = per_token.size(0) if num_sequences is None else num_sequences
    return per_token.sum() / ((max_tokens or per_token.size(1)) * n), stats


def token_level_loss(logprobs, old_logprobs, advantages, completion_mask, eps=0.2, eps_high=None, beta=0.0,
                     ref_logprobs=None, *, num_tokens: float | torch.Tensor | None = None, is_weights=None, **_):
    """DAPO's token-level loss: sum of token losses / all completion tokens of the minibatch, so long
    completions count by their tokens (their errors are not diluted). Also REINFORCE++'s and PPO's."""
    per_token, stats = _token_losses(logprobs, old_logprobs, advantages, completion_mask, eps, eps_high, beta, ref_logprobs,
                                     is_weights)
    return per_token.sum() / (completion_mask.sum().clamp(min=1) if num_tokens is None else num_tokens), stats


def gspo_loss(logprobs, old_logprobs, advantages, completion_mask, eps=3e-4, eps_high=4e-4, beta=0.0,
              ref_logprobs=None, *, num_sequences: int | None = None, is_weights=None, **_):
    """GSPO: one importance ratio per sequence, s_i = exp(mean_t (logp - old_logp)), clipped at the
    sequence level: the reward is given to a sequence, so the correction is too, and one noisy token
    ratio cannot clip or blow up its sequence. advantages: (N,). Mean over sequences."""
    if advantages.dim() != 1:
        raise ValueError("gspo's ratio is per sequence: it needs one advantage per sequence, shape (N,)")
    mask = completion_mask.to(logprobs.dtype)
    tokens = mask.sum(1).clamp(min=1)  # (N,)
    seq_ratio = torch.exp(((logprobs - old_logprobs) * mask).sum(1) / tokens)  # (N,)
    per_sequence, clipped = clipped_objective(seq_ratio, advantages, eps, eps_high)
    kl = _kl_term(logprobs, ref_logprobs, beta)
    if kl is not None:
        per_sequence = per_sequence + beta * (kl * mask).sum(1) / tokens
    if is_weights is not None:  # a sequence's share of its tokens' rollout importance weights
        per_sequence = per_sequence * (is_weights * mask).sum(1) / tokens
    n = per_sequence.size(0) if num_sequences is None else num_sequences
    with torch.no_grad():
        stats = {"clip_frac": float(clipped.float().mean()),  # share of sequences, not tokens
                 "kl": float(masked_mean(kl, mask)) if kl is not None else 0.0}
    return per_sequence.sum() / n, stats


# ---------------------------------------------------------------------------------------------
# The registry: one record per algorithm


@dataclass(frozen=True)
class Algorithm:
    loss: Callable  # (logprobs, old_logprobs, advantages, completion_mask, eps, eps_high, beta, ref_logprobs, **norms)
    advantages: Callable | None  # (rewards (N,), group_size) -> (N,); None: GAE on a value model (rl/ppo.py)
    eps: float = 0.2  # clip range [1 - eps, 1 + eps_high] when the config leaves it None
    eps_high: float | None = None  # None: eps
    kl_in_reward: bool = False  # beta * KL folded into the per-token reward instead of the loss
    resample_zero_spread: bool = False  # drop groups whose rewards are all equal and sample more prompts

    @property
    def needs_value_model(self) -> bool:
        return self.advantages is None

    def clip_range(self, eps: float | None = None, eps_high: float | None = None) -> tuple[float, float]:
        """[1 - eps, 1 + eps_high] from the config, a None filled with this algorithm's default."""
        eps = self.eps if eps is None else eps
        return eps, eps_high if eps_high is not None else self.eps_high if self.eps_high is not None else eps


ALGORITHMS = {
    "grpo": Algorithm(grpo_loss, group_advantages),
    "dr_grpo": Algorithm(dr_grpo_loss, group_mean_advantages),
    # clip-higher: more room for unlikely tokens to grow keeps entropy up
    "dapo": Algorithm(token_level_loss, group_advantages, eps_high=0.28, resample_zero_spread=True),
    # the GSPO paper's range: a sequence ratio is a mean of T log-ratios, so it moves little
    "gspo": Algorithm(gspo_loss, group_advantages, eps=3e-4, eps_high=4e-4),
    "rloo": Algorithm(grpo_loss, leave_one_out_advantages),
    # KL as GRPO's k3 term in the loss (OpenRLHF's --use_kl_loss), not in the reward
    "reinforce_pp": Algorithm(token_level_loss, batch_advantages),
    "ppo": Algorithm(token_level_loss, None, kl_in_reward=True),
}
