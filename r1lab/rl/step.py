"""One RL update over a Batch: score (reference log-probs, advantages), then mu passes of shuffled
minibatches, micro-batches accumulating gradients, one optimizer step per minibatch.

    stats = rl_step(policy, optimizer, batch, cfg, ref=ref, value_model=value_model)

Every loss is normalised by its minibatch (sequences, tokens), so the micro-batch losses add up to the
minibatch's and the gradient does not depend on micro_batch_size or micro_batch_tokens. With several processes (r1lab/dist.py)
each rank holds a part of the batch: advantages are computed over every rank's rewards, minibatches are
drawn over every rank's rows with the counts summed over ranks, and gradients are summed, so an update is
the one-process update of the whole batch.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace

import torch

from r1lab import dist
from r1lab.config import RLConfig
from r1lab.rl.algorithms import Algorithm, masked_mean
from r1lab.rl.batch import Batch, micro_batches
from r1lab.rl.logprobs import forward_logprobs, logprobs_no_grad
from r1lab.rl.ppo import explained_variance, token_gae, token_rewards, value_loss, whiten
from r1lab.train.guards import finite


def rl_step(policy, optimizer, batch: Batch, cfg: RLConfig, algorithm: Algorithm, *, ref=None, value_model=None) -> dict:
    """Scores `batch` and updates the policy (and PPO's value model, a parameter group of `optimizer`) by
    `algorithm` (ALGORITHMS[cfg.algorithm], looked up once by the loop). Returns the step's stats (loss,
    clip_frac, kl, grad_norm, advantage_abs, ...)."""
    batch, stats = score(batch, algorithm, cfg, policy=policy, ref=ref, value_model=value_model)
    stats = update(policy, optimizer, batch, algorithm, cfg, value_model) | stats  # ppo: the rollout's KL, not the loss's 0
    return dist.combine_stats(stats, summed=("loss", "value_loss", "tokens_trained"))  # each rank's share of these


def score(batch: Batch, algorithm: Algorithm, cfg: RLConfig, *, policy=None, ref=None, value_model=None
          ) -> tuple[Batch, dict]:
    """The batch with what the loss needs: the old log-probs (N, T), reference log-probs (N, T) when there is a
    reference, and the advantages, (N,) from the algorithm's estimator or PPO's (N, T). The sampling log-probs
    are the old log-probs when the engine computes them as the trainer does (rl.rollout_is off; auto: where
    the rollout says its log-probs are exact, the torch engine's); otherwise (truncate or mask; auto: vLLM's)
    the trainer computes its own and corrects for the mismatch."""
    temperature = cfg.sampling.temperature
    stats = {}
    correction = cfg.rollout_is if cfg.rollout_is != "auto" else "off" if batch.exact_logprobs else "truncate"
    if correction in ("truncate", "mask") and len(batch):
        batch, stats = rollout_importance_weights(batch, policy, cfg, correction)
    else:
        batch = replace(batch, old_logprobs=batch.sampling_logprobs)
    if ref is not None and len(batch):  # several processes: a rank may hold no rows (dapo kept none of its groups)
        batch = replace(batch, ref_logprobs=logprobs_no_grad(ref, batch, temperature, cfg.micro_batch_size,
                                                             cfg.micro_batch_tokens))
    if not algorithm.needs_value_model:
        # over every rank's groups: batch-normalised advantages (reinforce_pp) need them all
        advantages = algorithm.advantages(dist.cat_over_ranks(batch.rewards), cfg.group_size)
        batch = replace(batch, advantages=dist.Rows(len(batch)).own(advantages))  # (N,)
        return batch, stats | {"advantage_abs": advantages.abs().mean().item()}
    # PPO: per-token rewards (the sequence reward at the last token, - beta * k1 KL), GAE on the value
    # model's predictions, whitened over the batch.
    if batch.loss_mask is not None:
        raise ValueError("ppo's GAE runs over consecutive policy tokens: episodes with tool results need a GRPO-family "
                         "algorithm")
    mask = batch.completion_mask
    with torch.no_grad():
        values = torch.cat([value_model(batch.take(torch.arange(i, min(i + cfg.micro_batch_size, len(batch))))).cpu()
                            for i in range(0, len(batch), cfg.micro_batch_size)])  # (N, T)
    kl = batch.old_logprobs - batch.ref_logprobs if batch.ref_logprobs is not None else None  # k1 of the sampled tokens
    advantages, returns = token_gae(token_rewards(batch.rewards, mask, kl, cfg.beta), values, mask, cfg.gamma, cfg.lam)
    batch = replace(batch, advantages=whiten(advantages, mask, mean_of=dist.masked_mean), returns=returns, old_values=values)
    stats |= {"advantage_abs": float(masked_mean(advantages.abs(), mask)), "value_mean": float(masked_mean(values, mask)),
              "explained_variance": explained_variance(values, returns, mask)}
    return batch, stats | ({"kl": float(masked_mean(kl, mask))} if kl is not None else {})


def rollout_importance_weights(batch: Batch, policy, cfg: RLConfig, correction: str) -> tuple[Batch, dict]:
    """Truncated importance sampling for a sampler whose log-probs are not the trainer's (vLLM: other
    kernels, other precision). The trainer's own log-probs become the old log-probs of the clipped
    objective, and each token's loss is weighted by w = min(p_trainer / p_sampler, cap) (truncate), or
    by 1 where that ratio is within the cap and 0 elsewhere (mask), so tokens the sampler drew far more
    often than the trainer would are not over-trained. Logs the mismatch."""
    mask = batch.trained_mask.bool()
    trainer = logprobs_no_grad(policy, batch, cfg.sampling.temperature, cfg.micro_batch_size)  # (N, T)
    log_ratio = (trainer - batch.sampling_logprobs).masked_fill(~mask, 0.0)
    ratio = log_ratio.clamp(max=20).exp()
    capped = ratio > cfg.rollout_is_cap
    weights = ratio.clamp(max=cfg.rollout_is_cap) if correction == "truncate" else (~capped).float()
    diff = log_ratio.abs()[mask]
    stats = {"rollout_logp_diff_mean": float(diff.mean()) if diff.numel() else 0.0,
             "rollout_logp_diff_max": float(diff.max()) if diff.numel() else 0.0,
             "rollout_is_capped_frac": float(capped[mask].float().mean()) if diff.numel() else 0.0}
    return replace(batch, old_logprobs=trainer, is_weights=weights * mask), stats


@dataclass
class Minibatch:
    """One optimizer step's share of the batch, planned before any pass."""

    micro_batches: list[torch.Tensor]  # this rank's rows trained on (indices into the batch), cut for the passes
    norms: dict  # the loss's normalisers over the whole minibatch (every rank's): sequences, tokens, max_tokens
    trained_frac: float  # the share of the minibatch's rows (every rank's) trained on
    padding_passes: int  # passes this rank makes up to join as many collectives as the busiest rank (0 in one process)


def plan_minibatches(batch: Batch, cfg: RLConfig, skip_zero: bool):
    """One pass over the batch in shuffled minibatches of cfg.minibatch_size rows, drawn over every rank's rows.

    skip_zero: rows whose advantage is exactly 0 (every row of a group whose rewards are all equal) add exactly 0
    to the loss and its gradient when there is no KL term, so they are left out of the passes; the normalisers
    still count them, so the gradient is the same. Early in R1-style training most groups are all wrong or all
    right: this is often the larger part of the batch. Sharded models gather weights in every forward and
    reduce gradients in every backward, collectives every rank must join: a rank with fewer micro-batches than
    the busiest makes up the difference with `padding_passes` that add 0 to every gradient."""
    part = dist.Rows(len(batch))  # this rank's rows; minibatches are drawn over every rank's
    order = torch.randperm(part.total)
    for start in range(0, part.total, cfg.minibatch_size):
        chosen = order[start : start + cfg.minibatch_size]
        rows = part.local(chosen)
        norms = {"num_sequences": len(chosen), "max_tokens": cfg.sampling.max_new_tokens,
                 "num_tokens": dist.sum_over_ranks(batch.trained_mask[rows].sum()).clamp(min=1).item()}
        trained = rows[batch.advantages[rows] != 0] if skip_zero else rows
        trained_frac = dist.sum_over_ranks(len(trained)) / len(chosen)
        micro = micro_batches(batch, trained, cfg.micro_batch_size, cfg.micro_batch_tokens)
        yield Minibatch(micro, norms, trained_frac, dist.max_over_ranks(len(micro)) - len(micro))


def update(policy, optimizer, batch: Batch, algorithm: Algorithm, cfg: RLConfig, value_model=None) -> dict:
    """mu passes over the batch in shuffled minibatches (plan_minibatches), one optimizer step each;
    micro-batches accumulate gradients. Loss statistics (clip_frac, ...) are over the rows trained on."""
    eps, eps_high = algorithm.clip_range(cfg.eps, cfg.eps_high)
    beta = 0.0 if algorithm.kl_in_reward else cfg.beta
    params = [p for group in optimizer.param_groups for p in group["params"]]
    skip_zero = beta == 0 and value_model is None and batch.advantages.dim() == 1
    per_step, per_micro = defaultdict(float), defaultdict(float)  # summed, then averaged over steps / micro-batches
    n_micro = n_opt = tokens_trained = 0
    for _ in range(cfg.mu):
        for minibatch in plan_minibatches(batch, cfg, skip_zero):
            optimizer.zero_grad(set_to_none=True)
            per_step["trained_frac"] += minibatch.trained_frac
            per_step["loss"] += 0.0  # the loss is 0 when no row is trained
            if not minibatch.micro_batches:  # a zero gradient: AdamW still steps (its moments decay), as without the skip
                for p in params:
                    if p.requires_grad:
                        p.grad = torch.zeros_like(p)
            for rows in minibatch.micro_batches:
                micro = batch.take(rows)
                loss, stats = micro_loss(policy, value_model, micro, algorithm, cfg, minibatch.norms, eps, eps_high, beta)
                per_step["loss"] += stats.pop("policy_loss")  # the policy's; ppo's value loss is logged apart
                if "value_loss" in stats:  # ppo
                    per_step["value_loss"] += stats.pop("value_loss")
                loss.backward()
                tokens_trained += int(micro.completion_mask.sum() + micro.prompt_mask.sum())  # prompts once each
                for k, v in stats.items():
                    per_micro[k] += v
                n_micro += 1
            for _ in range(minibatch.padding_passes):
                _zero_pass(policy, value_model)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))  # global: the ranks agree
            per_step["grad_norm"] += grad_norm
            if finite(grad_norm):
                optimizer.step()
            else:  # a NaN/inf gradient would poison the weights and AdamW's moments: skip this update
                optimizer.zero_grad(set_to_none=True)
                per_step["skipped_updates"] += 1
            n_opt += 1
    return {**{k: v / n_micro for k, v in per_micro.items()}, **{k: v / n_opt for k, v in per_step.items()},
            "tokens_trained": tokens_trained}


def micro_loss(policy, value_model, micro: Batch, algorithm: Algorithm, cfg: RLConfig, norms: dict, eps, eps_high,
               beta) -> tuple[torch.Tensor, dict]:
    """The loss of one micro-batch (the policy's, plus vf_coef x the value model's for PPO) and its stats,
    with `policy_loss` and `value_loss` as numbers."""
    rows = micro.to(policy.device)
    # sharded: one forward per micro-batch (the shared-prompt pass makes a data-dependent number)
    logprobs = forward_logprobs(policy, micro, cfg.sampling.temperature, shared=dist.world_size() == 1)
    loss, stats = algorithm.loss(logprobs, rows.old_logprobs, rows.advantages, rows.trained_mask, eps=eps,
                                 eps_high=eps_high, beta=beta, ref_logprobs=rows.ref_logprobs,
                                 is_weights=rows.is_weights, **norms)
    stats["policy_loss"] = loss.item()
    if value_model is not None:
        v_loss, v_stats = value_loss(value_model(micro), rows.old_values, rows.returns, cfg.value_clip,
                                     rows.completion_mask, norms["num_tokens"])
        loss = loss + cfg.vf_coef * v_loss
        stats |= v_stats | {"value_loss": v_loss.item()}
    return loss, stats


def _zero_pass(policy, value_model) -> None:
    """A forward and backward through the policy (and value model) that adds 0 to every gradient."""
    one = torch.ones((1, 1), dtype=torch.long)  # a one-token prompt and completion: any token id will do
    row = Batch(prompt_ids=one, prompt_mask=one, prompt_of_row=torch.zeros(1, dtype=torch.long), completion_ids=one,
                completion_mask=one, sampling_logprobs=torch.zeros((1, 1)), rewards=torch.zeros(1))
    loss = forward_logprobs(policy, row, 1.0, shared=False).sum() * 0.0
    if value_model is not None:
        loss = loss + value_model(row).sum() * 0.0
    loss.backward()
