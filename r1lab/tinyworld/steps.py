"""Each step of a tiny-world response labelled right or wrong by the world's exact checker: the stand-in for the
human step annotation a process reward model is trained on (PRM800K's, in the R1 paper's account).

A step (data/steps.py: a sentence of the thinking, then the answer) is wrong when it states something false:
  arithmetic  a check "7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7, too small" with a number that is not the prompt's or
              not the product, sum or difference of the numbers it writes, or a verdict that does not follow its
              difference (ok: 0; too small / not c: above 0 ... the signs of solutions.py)
  countdown   a try "3 + 5 = 8, 8 * 7 = 56 no" whose numbers are not the prompt's, whose sums or products are
              wrong, or whose yes/no does not follow the target
  answer      a final answer the task scores 0 (or no answer at all)
  any step    a computation ("... = ...") in none of these forms: garbled arithmetic
Estimates and new tries ("x is about 6.", "wait, try 7:", "maybe (3 + 5) * 7.") claim nothing that can be false:
they are right, as PRM800K labels a reasonable move neutral. So a solution that checks a wrong first estimate,
sees the miss and corrects itself has no wrong step: the label judges statements, not luck.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable

from r1lab.data.example import Example
from r1lab.data.format import END_THINK
from r1lab.data.steps import split_steps
from r1lab.tinyworld.language import WORD

# problems.py's operations (it imports this module: the task's step_labels; so they are not imported from there)
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}

_N = r"(-?\d+)"
_ROUTE = re.compile(rf"{_N} \* {_N} = {_N}, {_N} ([-+]) {_N} = {_N}, {_N} - {_N} = {_N},? ?"
                    rf"({WORD['ok']}|{WORD['too small']}|{WORD['too big']}|{WORD['not']})?")
_TRY = re.compile(rf"{_N} ([-+*]) {_N} = {_N}, {_N} ([-+*]) {_N} = {_N} ?({WORD['yes']}|{WORD['no']})?")
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)


def step_labels(response: str, example: Example, answer_right: Callable[[str], bool]) -> list[bool]:
    """True (right) or False (wrong) for each step of `response` (data/steps.py split_steps), by the rules above;
    `answer_right(text)`: whether the text inside <answer></answer> is right (the task's score)."""
    steps = split_steps(response)
    answer_at = next((i for i, s in enumerate(steps) if END_THINK in s), None)
    labels = []
    for i, step in enumerate(steps):
        if answer_at is not None and i > answer_at:
            found = _ANSWER.search(step)
            labels.append(found is not None and answer_right(found.group(1)))
        else:
            labels.append(_step_right(step.split(END_THINK)[0], example))
    if answer_at is None or answer_at == len(steps) - 1:  # the thinking never closed, or no answer after it
        labels[-1] = False
    return labels


def _step_right(step: str, example: Example) -> bool:
    kind = example.meta["kind"]
    if kind == "arithmetic":
        found = _ROUTE.search(step)
        return _route_right(found, example) if found else "=" not in step
    if kind == "countdown":
        found = _TRY.search(step)
        return _try_right(found, example) if found else "=" not in step
    return True


def _route_right(m: re.Match, example: Example) -> bool:
    a, op, b, c, _ = example.meta["parts"]
    a_, x, product, product_, op_, b_, value, c_, value_, difference = (
        int(g) if g.lstrip("-").isdigit() else g for g in m.groups()[:10])
    numbers = (a_ == a and op_ == op and b_ == b and c_ == c and product == a * x and product_ == product
               and value == OPS[op](product, b) and value_ == value and difference == c - value)
    verdict = m.group(11)
    if verdict is None:
        return numbers
    if re.fullmatch(WORD["ok"], verdict):
        follows = difference == 0
    elif re.fullmatch(WORD["too small"], verdict):
        follows = difference > 0
    else:  # too big, or "not c"
        follows = difference < 0 if re.fullmatch(WORD["too big"], verdict) else difference != 0
    return numbers and follows


def _try_right(m: re.Match, example: Example) -> bool:
    x, op1, y, mid, mid_, op2, z, value = (int(g) if g.lstrip("-").isdigit() else g for g in m.groups()[:8])
    said = m.group(9)
    right = (sorted([x, y, z]) == sorted(example.meta["numbers"]) and mid == OPS[op1](x, y) and mid_ == mid
             and value == OPS[op2](mid, z))
    return right and (said is None or bool(re.fullmatch(WORD["yes"], said)) == (value == example.meta["target"]))
