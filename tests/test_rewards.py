import logging
import math
import time

import pytest

from r1lab.data.example import Example, Task
from r1lab.data.format import extract_answer
from r1lab.rewards.registry import REWARD_FUNCTIONS, Rewards
from r1lab.rewards.rules import format_reward, length_penalty, make_accuracy_reward, repetition_penalty, tag_count_reward


class ExactTask(Task):
    name = "exact"

    def score(self, answer, example):
        return 1.0 if answer == example.answer else 0.0


EX = Example(id="t-0", prompt="3+4?", answer="7")
GOOD = "<think> 3+4=7 </think> <answer>7</answer>"
INFO = {"num_tokens": 10, "max_tokens": 100, "truncated": False}


# ---------------------------------------------------------------- extract_answer


@pytest.mark.parametrize("response, expected", [
    (GOOD, "7"),
    ("<think>x</think><answer>\n  7 \n</answer>", "7"),
    ("no tags at all", None),
    ("", None),
    ("<answer>7", None),                                      # unclosed
    ("7</answer>", None),                                     # close without open
    ("</answer>7<answer>", None),                             # wrong order
    ("<answer>1</answer> then <answer>2</answer>", "2"),      # repeated: last wins
    ("<answer>1</answer> then <answer>2", "1"),               # trailing unclosed ignored
    ("<answer><answer>5</answer></answer>", "5"),             # nested: innermost of the last
    ("<answer>1</answer></answer>", "1"),
    ("<answer>x <answer>y</answer>", "y"),
    ("<answer>7</answer> and some text after", "7"),
    ("<answer></answer>", ""),
    ("<answer>   </answer>", ""),
    ("<think>答案是七</think><answer>七 ✓ π≈3.14</answer>", "七 ✓ π≈3.14"),
    ("<ANSWER>7</ANSWER>", None),                             # tags are case-sensitive
])
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


def test_extract_answer_is_linear_on_huge_inputs():
    cases = [
        "<think>" + "a" * 1_000_000 + "</think><answer>42</answer>",
        "<answer>" * 100_000,
        "</answer>" * 100_000,
        "<answer>" * 100_000 + "1</answer>",
        "<answer>1</answer>" + "<answer>" * 100_000,
        "<answer" * 200_000 + "</answer",
        "</answer>" + "<answer>" * 100_000,
    ]
    start = time.perf_counter()
    results = [extract_answer(c) for c in cases]
    for c in cases:
        format_reward(c), tag_count_reward(c), repetition_penalty(c)
    assert time.perf_counter() - start < 2.0
    assert results == ["42", None, None, "1", "1", None, None]


# ---------------------------------------------------------------- format and tags


@pytest.mark.parametrize("response", [
    GOOD,
    "<think></think><answer>7</answer>",
    "\n <think>\nlong\nthoughts\n</think>\n\n<answer>\n7\n</answer>\n ",
    "<think>想一想：三加四等于七</think><answer>七</answer>",
    "<think>x < 3 and y > 2</think><answer>x < 3</answer>",
])
def test_format_good(response):
    assert format_reward(response, EX) == 1.0


@pytest.mark.parametrize("response", [
    "", "7", "<think>3+4=7</think>",                          # missing blocks
    "<answer>7</answer>",
    "<think>3+4=7 <answer>7</answer>",                        # missing </think>
    "3+4=7 </think> <answer>7</answer>",                      # missing <think>
    "<answer>7</answer><think>x</think>",                     # wrong order
    "<think>x</think> <answer>7</answer> trailing text",     # text after </answer>
    "<think>x</think> between <answer>7</answer>",           # text between blocks
    "prefix <think>x</think><answer>7</answer>",             # text before <think>
    "<think>x</think><answer>7</answer></answer>",           # repeated tag
    "<think>x</think><answer>7</answer><answer>8</answer>",  # repeated block
    "<think><think>x</think></think><answer>7</answer>",     # nested think
    "<think>x <answer>6</answer></think><answer>7</answer>", # tag inside think
    "<think>x</think><answer><think>7</answer>",             # tag inside answer
    "<think>x</think><answer></answer>",                      # empty answer
    "<think>x</think><answer>  \n </answer>",
    "<think>x</think><answer>7</answer" ,                     # broken close tag
    "<think>" * 100_000,
])
def test_format_bad(response):
    assert format_reward(response, EX) == 0.0


@pytest.mark.parametrize("response, expected", [
    (GOOD, 1.0),
    ("", 0.0),
    ("<think>x</think>", 0.5),
    ("<think>x</think> <answer>7", 0.75),
    ("<think>x</think></think><answer>7</answer>", 0.75),     # </think> twice: no credit for it
    ("<answer>7</answer><think>x</think>", 1.0),              # counts only, order is format_reward's job
    ("<think>" * 1000, 0.0),
])
def test_tag_count(response, expected):
    assert tag_count_reward(response, EX, **INFO) == expected


# ---------------------------------------------------------------- accuracy


def test_accuracy_reward():
    acc = make_accuracy_reward(ExactTask())
    assert acc(GOOD, EX, **INFO) == 1.0
    assert acc("<think>x</think><answer>8</answer>", EX, **INFO) == 0.0
    assert acc("<think>x</think> the answer is 7", EX, **INFO) == 0.0   # no answer block
    assert acc("<answer>6</answer> oops <answer>7</answer>", EX, **INFO) == 1.0  # last block counts
    assert acc("<answer></answer>", EX, **INFO) == 0.0


# ---------------------------------------------------------------- penalties


def test_repetition_penalty():
    assert repetition_penalty("", EX) == 0.0
    assert repetition_penalty("one two", EX) == 0.0                   # fewer words than n
    assert repetition_penalty("a b c d e f", EX) == 0.0                # 4 trigrams, all unique
    assert math.copysign(1, repetition_penalty("a b c d", EX)) == 1.0  # a clean 0.0, not -0.0
    # "a b a b a b": trigrams (a b a) (b a b) (a b a) (b a b) -> 2 unique of 4 -> -0.5
    assert repetition_penalty("a b a b a b", EX) == -0.5
    # "x x x x x": 3 trigrams, 1 unique -> -(1 - 1/3)
    assert repetition_penalty("x x x x x", EX) == pytest.approx(-2 / 3)
    assert repetition_penalty("go " * 10_000, EX) == pytest.approx(-(1 - 1 / 9998))
    assert repetition_penalty("a b a b", EX, ngram_size=2) == pytest.approx(-1 / 3)


@pytest.mark.parametrize("num_tokens, truncated, expected", [
    (10, False, 0.0),
    (75, False, 0.0),      # max 100, buffer 25: free up to 75
    (80, False, -0.2),     # 5 of 25 into the buffer
    (90, False, -0.6),
    (100, False, -1.0),
    (120, False, -1.0),    # clamped
    (10, True, -1.0),      # truncated is always -1
])
def test_length_penalty(num_tokens, truncated, expected):
    assert length_penalty("x", EX, num_tokens=num_tokens, max_tokens=100, truncated=truncated) == pytest.approx(expected)


def test_length_penalty_custom_and_tiny_buffer():
    assert length_penalty("x", EX, num_tokens=95, max_tokens=100, truncated=False, buffer=10) == pytest.approx(-0.5)
    assert length_penalty("x", EX, num_tokens=3, max_tokens=3, truncated=False) == 0.0   # buffer 3//4 == 0
    assert length_penalty("x", EX, num_tokens=4, max_tokens=3, truncated=False) == -1.0


# ---------------------------------------------------------------- Rewards


def test_weighted_combination():
    rewards = Rewards({"accuracy": 1.0, "format": 0.5, "tag_count": 0.0, "length": 2.0}, ExactTask())
    responses = [GOOD, "<think>x</think><answer>8</answer> ps", "7"]
    infos = [INFO, dict(INFO, num_tokens=90), dict(INFO, truncated=True)]
    totals, raw = rewards(responses, [EX] * 3, infos)
    assert raw == {"accuracy": [1.0, 0.0, 0.0], "format": [1.0, 0.0, 0.0],
                   "tag_count": [1.0, 1.0, 0.0], "length": [0.0, -0.6, -1.0]}
    assert totals == pytest.approx([1.5, -1.2, -2.0])
    assert rewards([], [], []) == ([], {"accuracy": [], "format": [], "tag_count": [], "length": []})


def test_raising_reward_scores_zero_and_warns(caplog):
    def flaky(task, **_):
        def fn(response, example, **_):
            if "boom" in response:
                raise RuntimeError("kaboom")
            return float("nan") if "nan" in response else 1.0
        return fn

    REWARD_FUNCTIONS["flaky"] = flaky
    try:
        rewards = Rewards({"flaky": 1.0, "format": 1.0}, ExactTask())
        long_boom = "boom" + "z" * 1000
        with caplog.at_level(logging.WARNING, logger="r1lab.rewards"):
            totals, raw = rewards([GOOD, long_boom, "nan"], [EX] * 3, [INFO] * 3)
    finally:
        del REWARD_FUNCTIONS["flaky"]
    assert raw["flaky"] == [1.0, 0.0, 0.0]
    assert totals == [2.0, 0.0, 0.0]
    records = [r for r in caplog.records if r.name == "r1lab.rewards"]
    assert records and all(r.levelno == logging.WARNING for r in records)
    first = records[0].getMessage()
    assert "flaky" in first and "kaboom" in first and "boom" in first
    assert "z" * 200 not in first  # response is truncated
    assert any("2 of 3" in r.getMessage() for r in records)  # the nan counted as a failure too


def test_missing_info_is_an_error_not_a_crash(caplog):
    rewards = Rewards({"length": 1.0}, ExactTask())
    with caplog.at_level(logging.WARNING, logger="r1lab.rewards"):
        totals, _ = rewards([GOOD], [EX], [{}])
    assert totals == [0.0] and "length" in caplog.text


def test_unknown_reward_name():
    with pytest.raises(ValueError, match=r"'acuracy' \(did you mean 'accuracy'\?\); known rewards are accuracy, format"):
        Rewards({"acuracy": 1.0}, ExactTask())


def test_bad_weight_and_lengths():
    with pytest.raises(ValueError, match="format"):
        Rewards({"format": float("nan")}, ExactTask())
    with pytest.raises(ValueError, match="format"):
        Rewards({"format": "1"}, ExactTask())
    with pytest.raises(ValueError, match="same length"):
        Rewards({"format": 1.0}, ExactTask())([GOOD, GOOD], [EX], [INFO])


def test_accuracy_with_file_task_math_verify(tmp_path):
    from r1lab.recipes.tasks import load_task

    path = tmp_path / "half.jsonl"
    path.write_text("".join(f'{{"question": "q{i}", "answer": "#### {i}.5"}}\n' for i in range(5)))
    task = load_task(str(path), test_size=1)
    ex = task.examples("train")[0]
    n = ex.answer.split(".")[0]
    rewards = Rewards({"accuracy": 1.0, "format": 1.0}, task)
    totals, raw = rewards([f"<think>x</think><answer>\\frac{{{2 * int(n) + 1}}}{{2}}</answer>",
                           "<think>x</think><answer>99</answer>"], [ex, ex], [INFO, INFO])
    assert raw["accuracy"] == [1.0, 0.0] and totals == [2.0, 1.0]
