"""Rule-based rewards, as in DeepSeek-R1: accuracy + format, plus optional shaping terms.

A reward function scores one sample: `fn(response, example, **info) -> float`, where `response` is the
model's whole response starting with its opening "<think>", and `info` holds at least
`num_tokens`, `max_tokens` (the generation limit) and `truncated` (hit the limit without EOS).
Functions take `**_` and ignore what they don't need. `Rewards` combines them with weights.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

from r1lab.tasks import Example, Task

log = logging.getLogger("r1lab.rewards")

RewardFn = Callable[..., float]
TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def extract_answer(response: str) -> str | None:
    """Stripped text of the last complete <answer>…</answer> block, or None if there is none.

    Built from str.find/rfind only, so it is linear-time on any input (no regex backtracking).
      - repeated blocks: the last one wins ("<answer>1</answer><answer>2</answer>" -> "2")
      - nested blocks: the innermost of the last one ("<answer><answer>5</answer></answer>" -> "5")
      - an unclosed trailing "<answer>" is ignored; the last closed block before it still counts
      - a "</answer>" with no "<answer>" before it -> None
      - an empty block -> "" (callers treat that as no answer)
    """
    close = response.rfind("</answer>")
    if close < 0:
        return None
    open_ = response.rfind("<answer>", 0, close)
    if open_ < 0:
        return None
    start = open_ + len("<answer>")
    return response[start : response.find("</answer>", start)].strip()


def format_reward(response: str, example: Example | None = None, **_) -> float:
    """1.0 iff the response is exactly `<think>…</think> <answer>…</answer>` (whitespace allowed around
    the blocks), each tag once, nothing after </answer>, and a non-empty answer; else 0.0."""
    text = response.strip()
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return 0.0
    if any(text.count(tag) != 1 for tag in TAGS):  # so neither block can contain a tag
        return 0.0
    think_end, answer_start = text.find("</think>"), text.find("<answer>")
    between = text[think_end + len("</think>") : answer_start]
    if answer_start < think_end or between.strip():
        return 0.0
    answer = text[answer_start + len("<answer>") : -len("</answer>")]
    return 1.0 if answer.strip() else 0.0


def tag_count_reward(response: str, example: Example | None = None, **_) -> float:
    """0.25 for each of the four tags that appears exactly once (open-r1's partial format credit)."""
    return sum(0.25 for tag in TAGS if response.count(tag) == 1)


def make_accuracy_reward(task: Task) -> RewardFn:
    """Accuracy as the task judges it, on the extracted answer; no (or an empty) answer scores 0."""

    def accuracy_reward(response: str, example: Example, **_) -> float:
        answer = extract_answer(response)
        return float(task.score(answer, example)) if answer else 0.0

    return accuracy_reward


def repetition_penalty(response: str, example: Example | None = None, *, ngram_size: int = 3, **_) -> float:
    """-(fraction of repeated word n-grams), in [-1, 0]: 0 when every n-gram is new (or too short to tell)."""
    words = response.split()
    total = len(words) - ngram_size + 1
    if total <= 0:
        return 0.0
    unique = len(set(zip(*(words[i:] for i in range(ngram_size)))))
    return (unique - total) / total  # == -(1 - unique/total), without a -0.0


def length_penalty(response: str, example: Example | None = None, *, num_tokens: int, max_tokens: int,
                   truncated: bool = False, buffer: int | None = None, **_) -> float:
    """DAPO's soft overlong punishment: 0 up to max_tokens - buffer, then linearly down to -1 at max_tokens;
    -1 for a truncated response (its answer, if any, was cut off mid-thought)."""
    if truncated:
        return -1.0
    buffer = max_tokens // 4 if buffer is None else buffer
    excess = num_tokens - (max_tokens - buffer)
    if excess <= 0:
        return 0.0
    return -min(1.0, excess / buffer) if buffer > 0 else -1.0


def make_helpfulness_reward(task: Task) -> RewardFn:
    """The tiny world's rule-based stand-in for R1's helpfulness reward model, for general prompts:
    0.5 for the right answer (the task's check), 0.25 for answering in the format, 0.25 for not
    thinking at length about a simple question (full up to 8 thinking words, none from 40)."""
    from r1lab.language import count_words, thinking_part

    def helpfulness_reward(response: str, example: Example, **_) -> float:
        answer = extract_answer(response)
        if not answer:
            return 0.0
        correct = float(task.score(answer, example)) if example.answer else 1.0
        words = sum(count_words(thinking_part(response)).values())
        concise = 1.0 - min(1.0, max(0, words - 8) / 32)
        return 0.5 * correct + 0.25 * format_reward(response) + 0.25 * concise

    return helpfulness_reward


class RewardModel:
    """Any HF sequence-classification model as a reward function: the score of prompt + response.

    One output: its logit is the reward (a Bradley-Terry reward model). Several: the probability of
    the last label (a "good" class). Loaded on first use, run without gradients.
    """

    def __init__(self, path: str | None):
        if not path:
            raise ValueError("the 'reward_model' reward needs rl.reward_model=PATH (an HF sequence-classification model)")
        self.path, self.model, self.tokenizer = path, None, None

    def _load(self):
        from pathlib import Path

        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not Path(self.path).exists() and (self.path.startswith((".", "/", "~")) or self.path.count("/") > 1):
            raise FileNotFoundError(f"rl.reward_model: no such directory '{self.path}'")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModelForSequenceClassification.from_pretrained(self.path).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id or self.tokenizer.eos_token_id or 0

    def __call__(self, response: str, example: Example, **_) -> float:
        import torch

        if self.model is None:
            self._load()
        inputs = self.tokenizer(example.prompt + "\n" + response, return_tensors="pt", truncation=True)
        with torch.no_grad():
            logits = self.model(**inputs).logits[0].float()
        return float(logits[0]) if logits.numel() == 1 else float(logits.softmax(-1)[-1])


# name -> factory(task, **options) -> reward fn (options: e.g. reward_model=PATH). Other modules add entries (e.g. a language-consistency reward).
REWARD_FUNCTIONS: dict[str, Callable[..., RewardFn]] = {
    "accuracy": lambda task, **options: make_accuracy_reward(task),
    "format": lambda task, **options: format_reward,
    "tag_count": lambda task, **options: tag_count_reward,
    "repetition": lambda task, **options: repetition_penalty,
    "length": lambda task, **options: length_penalty,
    "helpfulness": lambda task, **options: make_helpfulness_reward(task),
    "reward_model": lambda task, **options: RewardModel(options.get("reward_model")),
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
                value = float(fn(response, example, **info))
                if not math.isfinite(value):
                    raise ValueError(f"non-finite reward {value}")
            except Exception as e:
                failures += 1
                if failures == 1:  # one detailed line per function per batch, not a flood
                    log.warning("reward %r failed on response %s: %s", name, repr(str(response)[:200]), repr(e)[:200])
                value = 0.0
            scores.append(value)
        if failures > 1:
            log.warning("reward %r failed on %d of %d samples in this batch (scored 0)", name, failures, len(scores))
        return scores


def _language_reward(task: Task, **_) -> RewardFn:  # imported on use, so r1lab.language may import this module
    from r1lab.language import language_consistency_reward

    return language_consistency_reward


REWARD_FUNCTIONS["language"] = _language_reward
