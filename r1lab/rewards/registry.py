"""Reward functions by name, and `Rewards`: their weighted sum over a batch of samples.

A reward function scores one sample: `fn(response, example, **info) -> float` (see rewards/rules.py).
REWARD_FUNCTIONS maps a name to a factory `(task, **options) -> fn`; a new reward is one function plus
one line here.
"""

from __future__ import annotations

import logging
import math
import numbers
from typing import Callable

from r1lab.data.example import Example, Task
from r1lab.rewards.language import language_consistency_reward
from r1lab.rewards.reward_model import RewardModel
from r1lab.rewards.rules import (
    RewardFn,
    format_reward,
    length_penalty,
    make_accuracy_reward,
    make_helpfulness_reward,
    repetition_penalty,
    tag_count_reward,
)

log = logging.getLogger("r1lab.rewards")

# name -> factory(task, **options) -> reward fn (options: e.g. reward_model=PATH). Other modules add entries (e.g. a language-consistency reward).
REWARD_FUNCTIONS: dict[str, Callable[..., RewardFn]] = {
    "accuracy": lambda task, **options: make_accuracy_reward(task),
    "format": lambda task, **options: format_reward,
    "tag_count": lambda task, **options: tag_count_reward,
    "repetition": lambda task, **options: repetition_penalty,
    "length": lambda task, **options: length_penalty,
    "helpfulness": lambda task, **options: make_helpfulness_reward(task),
    "reward_model": lambda task, **options: RewardModel(options.get("reward_model")),
    "language": lambda task, **options: language_consistency_reward,
}


def is_general(example: Example) -> bool:
    """General prompts (no rule checks a reasoning answer) get the general rewards."""
    return bool(example.meta and example.meta.get("general"))


class Rewards:
    """Weighted sums of named reward functions: `weights` for reasoning prompts, `general_weights` for
    general ones (R1's all-scenario RL). Weight-0 entries are still computed, so they can be logged.
    A function is run only on the samples whose weights name it; elsewhere its score is None."""

    def __init__(self, weights: dict[str, float], task: Task, general_weights: dict[str, float] | None = None,
                 **options):
        self.weights = self._check(weights)
        self.general_weights = self._check(general_weights or {})
        self.fns = {name: REWARD_FUNCTIONS[name](task, **options) for name in {**self.weights, **self.general_weights}}

    @staticmethod
    def _check(weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - set(REWARD_FUNCTIONS))
        if unknown:
            raise ValueError(f"unknown reward name(s) {unknown}; valid names: {sorted(REWARD_FUNCTIONS)}")
        for name, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
                raise ValueError(f"reward weight for {name!r} must be a finite number, got {w!r}")
        return {name: float(w) for name, w in weights.items()}

    def __call__(self, responses: list[str], examples: list[Example],
                 infos: list[dict]) -> tuple[list[float], dict[str, list[float | None]]]:
        """-> (weighted total per sample, {name: raw score per sample, None where it does not apply})."""
        if not len(responses) == len(examples) == len(infos):
            raise ValueError(f"responses, examples and infos must be the same length, "
                             f"got {len(responses)}, {len(examples)}, {len(infos)}")
        general = [is_general(e) for e in examples]
        if any(general) and not self.general_weights:
            raise ValueError("the task has general prompts but rl.general_rewards is empty")
        weights = [self.general_weights if g else self.weights for g in general]
        raw = {name: self._score_all(name, fn, responses, examples, infos, [name in w for w in weights])
               for name, fn in self.fns.items()}
        totals = [sum(w * raw[name][i] for name, w in weights[i].items()) for i in range(len(responses))]
        return totals, raw

    @staticmethod
    def _score_all(name: str, fn: RewardFn, responses, examples, infos, applies) -> list[float | None]:
        """Score every sample it applies to; one bad sample scores 0 and is logged, it never stops training."""
        scores, failures = [], 0
        for response, example, info, use in zip(responses, examples, infos, applies):
            if not use:
                scores.append(None)
                continue
            try:
                value = real_reward(fn(response, example, **info))
            except Exception as e:
                failures += 1
                if failures == 1:  # one detailed line per function per batch, not a flood
                    log.warning("reward %r failed on response %s: %s", name, repr(str(response)[:200]), repr(e)[:200])
                value = 0.0
            scores.append(value)
        if failures > 1:
            log.warning("reward %r failed on %d of %d samples in this batch (scored 0)", name, failures, len(scores))
        return scores


def real_reward(value) -> float:
    """A reward must be a real, finite number (bool, int, float, numpy scalars): a string like "0.75" or None is a
    bug in the reward function, not a score, and float() would quietly accept "0.75" and "nan"."""
    if not isinstance(value, numbers.Real):
        raise TypeError(f"returned {type(value).__name__} {value!r:.60}, not a real number")
    if not math.isfinite(value):
        raise ValueError(f"non-finite reward {value}")
    return float(value)
