"""A response's steps: what a process reward model scores one by one.

A step is a sentence of the thinking (it ends at ". ", ": " or the close of the thinking) and, last, the answer
after it. The tiny world's solutions are sentences ("x is about 6.", "check 7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7,
too small.", "wait, try 7:"), so its checker can label each one (tinyworld/steps.py), and the PRM reads each
step's score at the step's last token (rewards/learned.py).
"""

from __future__ import annotations

import re

from r1lab.data.format import END_THINK

_STEP_END = re.compile(r"[.:](?=\s|<|$)")


def step_ends(response: str) -> list[int]:
    """The character offset just after each step of `response`, in order; the last is len(response). A response
    without any sentence end is one step."""
    thinking_end = response.find(END_THINK)
    head = response if thinking_end < 0 else response[: thinking_end + len(END_THINK)]
    ends = [m.end() for m in _STEP_END.finditer(head)]
    if thinking_end >= 0:
        ends.append(thinking_end + len(END_THINK))  # the thinking's last words close with it
    kept: list[int] = []
    for end in dict.fromkeys(ends):
        piece = response[kept[-1] if kept else 0: end].strip(" .:")
        if piece == END_THINK and kept:  # the close alone is no step: the step before it takes it
            kept[-1] = end
        elif piece and end < len(response):
            kept.append(end)
    return [*kept, len(response)]


def split_steps(response: str) -> list[str]:
    """The steps' texts (step_ends' spans): "".join(split_steps(r)) == r."""
    ends = step_ends(response)
    return [response[start:end] for start, end in zip([0, *ends[:-1]], ends)]
