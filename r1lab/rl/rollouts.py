"""Prompts in, scored groups out: the sampling half of an RL step.

`PromptStream` hands out train examples in a seeded order; `sample_step` samples G completions per
prompt with the engine, scores them with the rewards and, for algorithms that resample (DAPO's dynamic
sampling), replaces groups whose rewards are all equal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from r1lab.config import RLConfig
from r1lab.data.example import Example
from r1lab.data.format import response_prefix
from r1lab.engines.base import Rollout


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


def sample_groups(engine, stream: PromptStream, rewards_fn, prompt_of, cfg: RLConfig) -> Scored:
    """prompts_per_step prompts from the stream, group_size completions each, scored."""
    examples = stream.next(cfg.prompts_per_step)
    prompts = [prompt_of(e) for e in examples]
    rollout = engine.generate(prompts, cfg.sampling, n=cfg.group_size)
    group_examples = [e for e in examples for _ in range(cfg.group_size)]
    responses = [response_prefix(prompts[i // cfg.group_size]) + t for i, t in enumerate(rollout.texts)]
    infos = [{"num_tokens": int(n), "max_tokens": cfg.sampling.max_new_tokens, "truncated": tr}
             for n, tr in zip(rollout.lengths, rollout.truncated)]
    totals, per_fn = rewards_fn(responses, group_examples, infos)
    return Scored(rollout=rollout, examples=group_examples, responses=responses,
                  rewards=torch.tensor(totals, dtype=torch.float64), per_fn=per_fn)


def sample_step(engine, stream: PromptStream, rewards_fn, prompt_of, cfg: RLConfig,
                resample_zero_spread: bool = False) -> tuple[Scored, Scored | None, dict]:
    """-> (everything sampled this step, the groups to train on, stats).

    With `resample_zero_spread` (DAPO's dynamic sampling): a group whose rewards are all equal has
    advantage 0 and only dilutes the batch, so it is dropped and prompts_per_step more prompts are
    sampled, up to max_resample_rounds extra rounds, until prompts_per_step groups have reward spread;
    past the cap it trains on the groups it found (None if none).
    """
    rounds = [sample_groups(engine, stream, rewards_fn, prompt_of, cfg)]
    if not resample_zero_spread:
        return rounds[0], rounds[0], {}

    def has_spread() -> torch.Tensor:  # (groups so far,) bool
        return torch.cat([r.rewards for r in rounds]).view(-1, cfg.group_size).std(1) > 0

    while has_spread().sum() < cfg.prompts_per_step and len(rounds) <= cfg.max_resample_rounds:
        rounds.append(sample_groups(engine, stream, rewards_fn, prompt_of, cfg))
    seen, spread = Scored.concat(rounds, engine.pad_id), has_spread()
    keep = spread.nonzero().squeeze(1)[: cfg.prompts_per_step].tolist()
    stats = {"groups_dropped": int((~spread).sum()), "resample_rounds": len(rounds) - 1}
    return seen, seen.select(keep) if keep else None, stats
