"""Prompts in, scored groups out: the sampling half of an RL step.

`PromptStream` hands out train examples in a seeded order; `sample_step` samples G completions per
prompt with the engine, scores them with the rewards and, for algorithms that resample (DAPO's dynamic
sampling), replaces groups whose rewards are all equal.

With several processes (r1lab.dist) every rank draws the same prompts from its own copy of the stream and
samples its share of them (a group's G completions on one rank); DAPO's resampling decisions are taken
over every rank's groups, so the stream stays the same on all ranks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from r1lab import dist
from r1lab.config import RLConfig
from r1lab.data.example import Example
from r1lab.data.format import response_prefix
from r1lab.engines.base import Rollout, pad_id


class PromptStream:
    """Train examples in a seeded shuffled order, epoch after epoch; its state is two ints."""

    def __init__(self, examples: list[Example], seed: int):
        if not examples:
            raise ValueError("the task's train split is empty")
        self.examples, self.seed, self.epoch, self.pos = examples, seed, 0, 0
        self._order()

    def _order(self):
        self.order = list(range(len(self.examples)))
        random.Random(self.seed + self.epoch).shuffle(self.order)

    def next(self, n: int) -> list[Example]:
        out = []
        while len(out) < n:
            if self.pos == len(self.order):
                self.epoch, self.pos = self.epoch + 1, 0
                self._order()
            out.append(self.examples[self.order[self.pos]])
            self.pos += 1
        return out

    def seeds(self, n: int) -> list[int]:
        """A seed for each of the next n prompts (ask before `next`): fixed by the run's seed and the
        prompt's place in the stream, so a prompt's samples do not depend on how prompts are batched or
        split over processes."""
        start = self.epoch * len(self.examples) + self.pos
        return [random.Random(f"{self.seed}/{start + i}").getrandbits(63) for i in range(n)]

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, state: dict) -> None:
        self.epoch, self.pos = state["epoch"], state["pos"]
        self._order()


@dataclass(kw_only=True)
class Scored:
    """Sampled groups and their rewards; row i belongs to prompt i // group_size."""

    rollout: Rollout
    examples: list[Example]  # (N,) one per completion
    responses: list[str]  # (N,) completions with the template's response prefix, as the rewards saw them
    rewards: torch.Tensor  # (N,) weighted totals, float64: exactly the reward functions' sums
    per_fn: dict[str, list]  # each reward function's raw scores (N,), None where it does not apply

    def select(self, groups: list[int]) -> "Scored":
        G = self.rollout.n
        rows = [g * G + j for g in groups for j in range(G)]
        return Scored(rollout=self.rollout.select(groups), examples=[self.examples[i] for i in rows],
                      responses=[self.responses[i] for i in rows], rewards=self.rewards[rows],
                      per_fn={name: [v[i] for i in rows] for name, v in self.per_fn.items()})

    @staticmethod
    def concat(parts: list["Scored"], pad_id: int) -> "Scored":
        if len(parts) == 1:
            return parts[0]
        return Scored(rollout=Rollout.concat([p.rollout for p in parts], pad_id),
                      examples=[e for p in parts for e in p.examples], responses=[r for p in parts for r in p.responses],
                      rewards=torch.cat([p.rewards for p in parts]),
                      per_fn={name: [v for p in parts for v in p.per_fn[name]] for name in parts[0].per_fn})


def sample_groups(engine, stream: PromptStream, rewards_fn, prompt_of, cfg: RLConfig, turns=None) -> Scored:
    """prompts_per_step prompts from the stream (this rank's share of them), group_size completions each, scored.
    Per-prompt seeds (rl.seed_per_prompt, always with several processes) make the samples independent of the split.
    turns (engines/episodes.py: Turns): episodes that call tools (the engine's own random stream, no seeds)."""
    seeds = stream.seeds(cfg.prompts_per_step) if cfg.seed_per_prompt or dist.world_size() > 1 else None
    mine = dist.share(cfg.prompts_per_step)
    examples = stream.next(cfg.prompts_per_step)[mine]
    prompts = [prompt_of(e) for e in examples]
    seeded = {"seeds": seeds[mine]} if seeds is not None else {}  # without: the engine's own stream, as always
    if turns is not None:
        rollout = turns.rollout(engine, prompts, cfg.sampling, cfg.group_size, examples)
    else:
        rollout = engine.generate(prompts, cfg.sampling, n=cfg.group_size, **seeded)
    group_examples = [e for e in examples for _ in range(cfg.group_size)]
    responses = [response_prefix(prompts[i // cfg.group_size]) + t for i, t in enumerate(rollout.texts)]
    infos = [{"num_tokens": n, "max_tokens": cfg.sampling.max_new_tokens, "truncated": tr, "completion_ids": ids[:n].tolist()}
             for n, tr, ids in zip(rollout.lengths.tolist(), rollout.truncated, rollout.completion_ids)]
    for key in ("tool_calls", "tool_errors", "environment_rewards"):  # rewards read an episode's calls (and env)
        for info, value in zip(infos, getattr(rollout, key) or []):
            info[key.removesuffix("s")] = value
    totals, per_fn = rewards_fn(responses, group_examples, infos)
    return Scored(rollout=rollout, examples=group_examples, responses=responses,
                  rewards=torch.tensor(totals, dtype=torch.float64), per_fn=per_fn)


def sample_step(engine, stream: PromptStream, rewards_fn, prompt_of, cfg: RLConfig,
                resample_zero_spread: bool = False, turns=None) -> tuple[Scored, Scored | None, dict]:
    """-> (everything sampled this step, the groups to train on, stats).

    With `resample_zero_spread` (DAPO's dynamic sampling): a group whose rewards are all equal has
    advantage 0 and only dilutes the batch, so it is dropped and prompts_per_step more prompts are
    sampled, up to max_resample_rounds extra rounds, until prompts_per_step groups have reward spread;
    past the cap it trains on the groups it found (None if none).
    """
    rounds = [sample_groups(engine, stream, rewards_fn, prompt_of, cfg, turns)]
    if not resample_zero_spread:
        return rounds[0], rounds[0], {}

    def spread_of(scored: Scored) -> torch.Tensor:  # (every rank's groups of the round,) bool, in prompt order
        return dist.cat_over_ranks(scored.rewards.view(-1, cfg.group_size).std(1) > 0)

    spread = [spread_of(rounds[0])]
    while torch.cat(spread).sum() < cfg.prompts_per_step and len(rounds) <= cfg.max_resample_rounds:
        rounds.append(sample_groups(engine, stream, rewards_fn, prompt_of, cfg, turns))
        spread.append(spread_of(rounds[-1]))
    seen, spread = Scored.concat(rounds, pad_id(engine.tokenizer)), torch.cat(spread)
    keep = spread.nonzero().squeeze(1)[: cfg.prompts_per_step]
    stats = {"groups_dropped": int((~spread).sum()), "resample_rounds": len(rounds) - 1}
    return seen, seen.select(_own_groups(keep, cfg.prompts_per_step)) if len(keep) else None, stats


def _own_groups(groups: torch.Tensor, per_round: int) -> list[int]:
    """This rank's groups among `groups` (indices into every rank's rounds, round after round, each round
    in prompt order), as indices into its own rounds. A rank may own none of them."""
    mine = dist.share(per_round)
    rounds, at = groups // per_round, groups % per_round
    own = (at >= mine.start) & (at < mine.stop)
    return (rounds[own] * (mine.stop - mine.start) + at[own] - mine.start).tolist()
