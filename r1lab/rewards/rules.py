"""Rule-based rewards, as in DeepSeek-R1: accuracy + format, plus optional shaping terms.

A reward function scores one sample: `fn(response, example, **info) -> float`, where `response` is the
model's whole response starting with its opening "<think>", and `info` holds at least
`num_tokens`, `max_tokens` (the generation limit) and `truncated` (hit the limit without EOS); in RL also
`completion_ids` (the sampled token ids, EOS included); in episodes with tools also `tool_call` (calls made),
`tool_error` (of them, errors) and, with rl.environment, `environment_reward` (its reward()). Functions take
`**_` and ignore what they don't need. `Rewards` (rewards/registry.py) combines them with weights, and also calls batched (TRL-style) ones.
"""

from __future__ import annotations

from typing import Callable

from r1lab.data.example import Example, Task
from r1lab.data.format import TAGS, extract_answer, thinking_part
from r1lab.rewards.language import count_words

RewardFn = Callable[..., float]


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

    def helpfulness_reward(response: str, example: Example, **_) -> float:
        answer = extract_answer(response)
        if not answer:
            return 0.0
        correct = float(task.score(answer, example)) if example.answer else 1.0
        words = sum(count_words(thinking_part(response)).values())
        concise = 1.0 - min(1.0, max(0, words - 8) / 32)
        return 0.5 * correct + 0.25 * format_reward(response) + 0.25 * concise

    return helpfulness_reward
