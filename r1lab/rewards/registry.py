"""Reward functions by name, and `Rewards`: their weighted sum over a batch of samples.

A name in rl.rewards / rl.general_rewards is a built-in one (REWARD_FUNCTIONS maps it to a factory
`(task, **options) -> fn`; a new built-in is one function plus one line there) or the import path of your
own function, `module:function` (rewards/imported.py).

A reward function is called in one of two ways, told apart by its signature (`takes_batches`):
- per sample, r1lab's: `fn(response, example, **info) -> float` (rewards/rules.py says what info holds);
  any function taking two positional arguments (or *args) whose first parameter is not named as below;
- batched, TRL's: `fn(completions, **kwargs) -> list[float]`, one score per completion, called once per
  batch with keyword arguments only: a function whose first parameter is named `completions` or
  `prompts`, or that takes no positional parameter at all (`fn(**kwargs)`).
Any other signature (one positional parameter of another name, an async function) is refused when the
config is loaded. A batched function gets one list per column, an entry per sample (`batch_columns`):
`completions` (the responses as every reward sees them: with the template's opening "<think>"),
`prompts` (the examples' prompts, before the template), `answer` (their reference answers), a dataset
row's other columns by name (a dataset task's `solution`, …, as TRL passes them), each other key of the
examples' `meta` (None where an example lacks it; `source`, the tiny world's `kind`, reasoning-gym's
`entry`), each key of `info` (`num_tokens`, `max_tokens`, `truncated`, `completion_ids`; in episodes `tool_call`,
`tool_error`, `environment_reward`), and
`trainer_state` (not a list: `global_step` and `max_steps`, as TRL's has them). For a conversational
prompt (data.prompt_format=conversational), `prompts` holds its messages and `completions` a one-message
list `[{"role": "assistant", "content": ...}]`, TRL's conversational format.
The named ones win over a meta or info key of the same name. TRL's `log_metric`, `log_extra` and
`environments` are not passed.

A function that raises, or returns something that is not a real finite number (nan, "0.75", None: TRL's
"not applicable" too), scores that sample 0; a batched one that raises or returns the wrong number of scores scores its whole batch 0.
Either way: one warning per function and batch, naming it, and training goes on.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

from r1lab.data.example import Example, Task
from r1lab.errors import did_you_mean
from r1lab.rewards.imported import import_reward, is_import_path
from r1lab.rewards.language import language_consistency_reward
from r1lab.rewards.learned import LEARNED_REWARDS, learned_reward
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

# name -> factory(task, **options) -> reward fn. options: reward_model=PATH, device and dtype (the policy's).
REWARD_FUNCTIONS: dict[str, Callable[..., RewardFn]] = {
    "accuracy": lambda task, **options: make_accuracy_reward(task),
    "format": lambda task, **options: format_reward,
    "tag_count": lambda task, **options: tag_count_reward,
    "repetition": lambda task, **options: repetition_penalty,
    "length": lambda task, **options: length_penalty,
    "helpfulness": lambda task, **options: make_helpfulness_reward(task),
    "reward_model": lambda task, **options: RewardModel(options.get("reward_model"), options.get("device", "cpu"),
                                                        options.get("dtype")),
    "language": lambda task, **options: language_consistency_reward,
    "environment": lambda task, **options: environment_reward,
    **{name: functools.partial(lambda name, task, **options: learned_reward(
        name, options.get("reward_model"), options.get("device", "cpu"), options.get("dtype")), name)
       for name in LEARNED_REWARDS},
}


def environment_reward(response: str, example: Example, *, environment_reward: float | None = None, **_) -> float:
    """What the episode's environment says it earned (its reward(), TRL's environment_factory shape; rl.environment)."""
    if environment_reward is None:
        raise ValueError("no environment reward: the 'environment' reward needs rl.environment, a class with reward()")
    return environment_reward
BATCH_FIRST = ("completions", "prompts")  # a first parameter so named makes a function batched (TRL's)


def reward_factory(name: str) -> Callable[..., RewardFn]:
    """The factory of a built-in name, or of your own `module:function` (imported and its signature checked
    now); a ValueError saying what is wrong. recipes/load.py calls this when a config is loaded."""
    if name in REWARD_FUNCTIONS:
        return REWARD_FUNCTIONS[name]
    if is_import_path(name):
        fn = import_reward(name)
        takes_batches(fn, name)
        return lambda task, **options: fn
    module, dot, attr = name.rpartition(".")
    if dot:  # a dotted path: the one syntax is module:function
        raise ValueError(f"unknown reward {name!r}: your own function is named module:function, e.g. '{module}:{attr}'")
    raise ValueError(f"unknown reward {name!r}{did_you_mean(name, REWARD_FUNCTIONS)}; known rewards are "
                     f"{', '.join(REWARD_FUNCTIONS)}, or your own function as module:function")


def takes_batches(fn: Callable, name: str) -> bool:
    """True for a batched (TRL-style) function, False for a per-sample one, by the rule in the module
    docstring; a ValueError for a function that is neither."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__):
        raise ValueError(f"reward {name!r} is async; r1lab calls rewards synchronously, make it a plain def")
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        raise ValueError(f"reward {name!r}: cannot read the signature of {fn!r}") from None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    if (positional and positional[0].name in BATCH_FIRST) or not (positional or varargs):
        return True
    if len(positional) >= 2 or varargs:
        return False
    raise ValueError(f"reward {name!r}: cannot tell how to call {getattr(fn, '__name__', fn)}{inspect.signature(fn)}: "
                     "a per-sample reward takes (response, example, **info) and returns a number; a batched "
                     "(TRL-style) one names its first parameter 'completions' and returns a list of numbers")


@dataclass
class TrainerState:
    """What TRL's `trainer_state` argument tells a batched reward about progress (the fields r1lab has)."""

    global_step: int = 0  # optimizer steps done before this batch was sampled
    max_steps: int = 0


def is_general(example: Example) -> bool:
    """General prompts (no rule checks a reasoning answer) get the general rewards."""
    return bool(example.meta and example.meta.get("general"))


class Rewards:
    """Weighted sums of named reward functions: `weights` for reasoning prompts, `general_weights` for
    general ones (R1's all-scenario RL). Weight-0 entries are still computed, so they can be logged.
    A function is run only on the samples whose weights name it; elsewhere its score is None.
    `options` go to the built-in factories (reward_model=PATH; device and dtype: the policy's)."""

    def __init__(self, weights: dict[str, float], task: Task, general_weights: dict[str, float] | None = None,
                 **options):
        self.weights = self._check(weights)
        self.general_weights = self._check(general_weights or {})
        names = {**self.weights, **self.general_weights}
        self.fns = {name: reward_factory(name)(task, **options) for name in names}
        self.batched = {name: takes_batches(fn, name) for name, fn in self.fns.items()}
        self.trainer_state = TrainerState()  # the RL loop sets it each step

    @staticmethod
    def _check(weights: dict[str, float]) -> dict[str, float]:
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
        raw = {}
        for name in self.fns:
            rows = [i for i, w in enumerate(weights) if name in w]
            scores = self._score(name, [responses[i] for i in rows], [examples[i] for i in rows], [infos[i] for i in rows])
            raw[name] = [None] * len(responses)
            for i, score in zip(rows, scores):
                raw[name][i] = score
        totals = [sum(w * raw[name][i] for name, w in weights[i].items()) for i in range(len(responses))]
        return totals, raw

    def _score(self, name: str, responses: list[str], examples: list[Example], infos: list[dict]) -> list[float]:
        """Every sample's score. A failure scores 0 with one warning per function and batch: it never stops training."""
        fn, batched = self.fns[name], self.batched[name]
        if not responses:
            return []
        if batched:
            try:
                values = fn(**batch_columns(responses, examples, infos) | {"trainer_state": self.trainer_state})
                values = values.tolist() if hasattr(values, "tolist") else values  # numpy / torch
                if not isinstance(values, (list, tuple)) or len(values) != len(responses):
                    raise TypeError(f"returned {type(values).__name__} {values!r:.60}, not a list of {len(responses)} scores")
            except Exception as e:
                log.warning("reward %r failed on a batch of %d samples (all scored 0): %s", name, len(responses), repr(e)[:200])
                return [0.0] * len(responses)
        scores, failures = [], []
        for i, response in enumerate(responses):
            try:
                scores.append(real_reward(values[i] if batched else fn(response, examples[i], **infos[i])))
            except Exception as e:
                failures.append((response, e))
                scores.append(0.0)
        if failures:
            response, e = failures[0]
            log.warning("reward %r failed on %d of %d samples in this batch (scored 0); the first, on response %s: %s",
                        name, len(failures), len(scores), repr(str(response)[:200]), repr(e)[:200])
        return scores


def batch_columns(responses: list[str], examples: list[Example], infos: list[dict]) -> dict[str, list]:
    """The keyword lists a batched reward gets (the module docstring lists them), trainer_state aside. A dataset
    row's own columns (meta["columns"]) come by their names, as TRL passes them; a conversational example's
    prompt is its messages and its completion [{"role": "assistant", "content": ...}], TRL's conversational form."""
    rows = [e.fields() for e in examples]
    columns = {key: [row.get(key) for row in rows] for key in dict.fromkeys(k for row in rows for k in row)}
    columns |= {key: [info.get(key) for info in infos] for key in dict.fromkeys(k for info in infos for k in info)}
    prompts = [e.prompt if e.messages is None else list(e.messages) for e in examples]
    completions = [r if e.messages is None else [{"role": "assistant", "content": r}] for r, e in zip(responses, examples)]
    return columns | {"prompts": prompts, "completions": completions, "answer": [e.answer for e in examples]}


def real_reward(value) -> float:
    """A reward must be a real, finite number (bool, int, float, numpy scalars): a string like "0.75" or None is a
    bug in the reward function, not a score, and float() would quietly accept "0.75" and "nan"."""
    if not isinstance(value, numbers.Real):
        raise TypeError(f"returned {type(value).__name__} {value!r:.60}, not a real number")
    if not math.isfinite(value):
        raise ValueError(f"non-finite reward {value}")
    return float(value)
