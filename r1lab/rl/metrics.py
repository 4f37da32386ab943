"""What an RL step logs: metrics.jsonl rows and a few sample completions for samples.jsonl."""

from __future__ import annotations

from r1lab.config import RLConfig
from r1lab.data.format import reflects
from r1lab.rewards.language import language_consistency_reward
from r1lab.rewards.learned import LEARNED_REWARDS
from r1lab.rl.algorithms import masked_mean
from r1lab.rl.rollouts import Scored


def step_metrics(stage: str, step: int, seen: Scored, stats: dict, cfg: RLConfig, t_gen: float, t_step: float,
                 lr: float) -> dict:
    """Rewards and lengths over everything sampled (dapo: all rounds, dropped groups too); training stats
    (loss, advantages, ...) over the groups trained on."""
    rewards, per_fn, rollout, responses = seen.rewards, seen.per_fn, seen.rollout, seen.responses
    lengths = rollout.lengths.float()
    grouped = rewards.view(-1, cfg.group_size)
    out = {"stage": stage, "step": step, "reward": rewards.mean().item()}
    sampled = rollout.completion_mask if rollout.loss_mask is None else rollout.loss_mask  # not a tool's result tokens
    applied = {name: [v for v in values if v is not None] for name, values in per_fn.items()}  # general vs reasoning
    out.update({f"reward/{name}": sum(v) / len(v) for name, v in applied.items() if v})
    out.update({
        "accuracy": sum(a >= 1.0 for a in applied["accuracy"]) / len(applied["accuracy"]) if applied.get("accuracy") else None,
        "format_rate": sum(f >= 1.0 for f in applied["format"]) / len(applied["format"]) if applied.get("format") else None,
        "completion_len_mean": lengths.mean().item(),
        "tokens": int(lengths.sum().item()),  # generated this step (every rank's, dapo's extra rounds too): the compute ledger
        "completion_len_max": int(lengths.max()),
        "truncated_frac": sum(rollout.truncated) / len(responses),
        "reflection_rate": sum(reflects(r, cfg.reflection_phrases) for r in responses) / len(responses),
        "language_consistency": sum(map(language_consistency_reward, responses)) / len(responses),
        "zero_std_frac": (grouped.std(1) == 0).float().mean().item(),
        "entropy": float(masked_mean(rollout.entropies, sampled)) if rollout.entropies is not None else None,
        **(episode_metrics(rollout, per_fn.get("accuracy")) if rollout.turns is not None else {}),
        **stats,
        "lr": lr,
        "tokens_per_s": int(lengths.sum().item() / max(t_step, 1e-9)),
        "gen_time": round(t_gen, 3),
        "step_time": round(t_step, 3),
    })
    return {k: v for k, v in out.items() if v is not None}


def episode_metrics(rollout, accuracy: list[float | None] | None = None) -> dict:
    """Episodes with tools: turns and calls per episode, the share of episodes that called, of calls that came
    back as errors, and of completion tokens that were tool results (read, not trained); with `accuracy` (per
    episode, None where it does not apply), the accuracy of the episodes that called and of those that did not:
    whether calling pays (the report marks the step from which it does)."""
    episodes, calls = len(rollout.turns), sum(rollout.tool_calls)
    tokens = rollout.completion_mask.sum().clamp(min=1)
    out = {"turns_mean": sum(rollout.turns) / episodes, "tool_calls_mean": calls / episodes,
           "tool_call_rate": sum(c > 0 for c in rollout.tool_calls) / episodes,
           "tool_error_frac": sum(rollout.tool_errors) / calls if calls else 0.0,
           "masked_token_frac": float((rollout.completion_mask - rollout.loss_mask).sum() / tokens)}
    for key, called in (("accuracy_calling", True), ("accuracy_not_calling", False)):
        right = [a >= 1.0 for a, c in zip(accuracy or [], rollout.tool_calls) if a is not None and (c > 0) == called]
        out[key] = sum(right) / len(right) if right else None
    return out


def step_samples(stage: str, step: int, seen: Scored, cfg: RLConfig) -> list[dict]:
    """The first completion of the first few groups, for samples.jsonl; with a learned reward (rewards/learned.py)
    and the accuracy beside it, also up to log_samples completions where the two disagree (the learned score at
    0.5 or more on a wrong answer, or under 0.5 on a right one), marked "disagree": where a hack shows first."""
    totals = seen.rewards.tolist()
    correct = [c if c is not None else t for c, t in zip(seen.per_fn.get("accuracy", totals), totals)]

    def row(i: int, **extra) -> dict:
        return {"stage": stage, "step": step, "prompt": seen.examples[i].prompt, "answer": seen.examples[i].answer,
                "response": seen.responses[i], "reward": totals[i], "correct": correct[i] >= 1.0, **extra}

    rows = [row(i) for i in range(0, len(seen.responses), cfg.group_size)[: cfg.log_samples]]
    learned = next((name for name in LEARNED_REWARDS if name in seen.per_fn), None)
    if learned is not None and "accuracy" in seen.per_fn:
        scores = seen.per_fn[learned]
        disagree = [i for i, (s, a) in enumerate(zip(scores, seen.per_fn["accuracy"]))
                    if s is not None and a is not None and (s >= 0.5) != (a >= 1.0)]
        rows += [row(i, learned_reward=scores[i], disagree=True) for i in disagree[: cfg.log_samples]]
    return rows
