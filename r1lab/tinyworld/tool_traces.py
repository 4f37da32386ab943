"""Tool-using worked solutions the tiny world writes for the SFT stage that teaches tools (issue 25's r1-tools):
the model's first sight of the call and result tokens, which no pretraining document contains.

  arithmetic  "x is about 6. check <tool>calculator(72 - (7 * 6 + 23))</tool><result>7</result> too small.
               wait, try 7: <tool>calculator(72 - (7 * 7 + 23))</tool><result>0</result> ok."
  lookup      "<tool>search(412)</tool><result>river 412: 37 km</result> <tool>search(108)</tool><result>river 108:
               12 km</result> <tool>calculator(37 - 12)</tool><result>25</result>"  (than river 108)
              "<tool>search(412)</tool><result>river 412: 37 km</result> <tool>calculator(37 - 20)</tool>..." (than 20 km)
  arithmetic, no tool: the same check computed in the head (solutions.py's "check" style)
  lookup, no tool: "river 412 is about 40 km long. 40 - 20 = 20." (a guess: what a model without the tool can do)

Only `tool_share` of the traces call a tool, so RL has a choice to select: call, or answer from the head. With
tool_share=0 the traces are the no-tools arm's of `r1lab compare tools-vs-no-tools`: the same procedure, every
number computed in the head. The results written here are the tools' own (calculator, lookup.search), so SFT sees
what an episode will append.
"""

from __future__ import annotations

import random

from r1lab.data.example import Example
from r1lab.tinyworld.lookup import RIVERS, search
from r1lab.tinyworld.problems import OPS
from r1lab.tinyworld.solutions import arithmetic_solution, estimate
from r1lab.tools.calculator import calculator
from r1lab.tools.calls import PLAIN

OPEN, CLOSE, RESULT_OPEN, RESULT_CLOSE = PLAIN


def call(name: str, argument: str, result: str) -> str:
    return f"{OPEN}{name}({argument}){CLOSE}{RESULT_OPEN}{result}{RESULT_CLOSE}"


def arithmetic_with_calculator(rng: random.Random, example: Example) -> str:
    """solutions.py's "check" with the calculator computing each check's difference c - (a * x op b): estimate x,
    check it, and on a miss step towards c until the check holds. The verdict reads the sign of the result alone,
    so no number has to be copied out of a result (whose digits are other tokens than the same number in prose)."""
    a, op, b, c, x = example.meta["parts"]
    guess = estimate(rng, x)
    lines = [f"x is about {guess}. check"]
    while True:
        expression = f"{c} - ({a} * {guess} {op} {b})"
        difference = c - OPS[op](a * guess, b)
        line = call("calculator", expression, calculator(expression))
        if difference == 0:
            lines.append(f"{line} ok.")
            return " ".join(lines)
        guess += 1 if difference > 0 else -1
        lines.append(f"{line} {'too small' if difference > 0 else 'too big'}. wait, try {guess}:")


def lookup_with_search(example: Example) -> str:
    """Look every river up, then subtract with the calculator what the question asks."""
    rivers, km = example.meta["rivers"], example.meta["km"]
    found = " ".join(call("search", r, search(r)) for r in rivers)
    expression = f"{RIVERS[rivers[0]]} - {RIVERS[rivers[1]] if km is None else km}"
    return f"{found} {call('calculator', expression, calculator(expression))}"


def lookup_guess(rng: random.Random, example: Example) -> tuple[str, str]:
    """What a model without the tool can do: guess the lengths (right by chance) -> (thinking, answer)."""
    rivers, km = example.meta["rivers"], example.meta["km"]
    guesses = [rng.randint(10, 99) for _ in rivers]
    words = " ".join(f"river {r} is about {g} km long." for r, g in zip(rivers, guesses))
    other = guesses[1] if km is None else km
    return f"{words} {guesses[0]} - {other} = {guesses[0] - other}.", str(guesses[0] - other)


def trace(rng: random.Random, example: Example, tool_share: float) -> tuple[str, str]:
    """(thinking, answer) of one worked solution, calling tools with probability `tool_share`."""
    kind = example.meta["kind"]
    use_tool = rng.random() < tool_share
    if kind == "lookup":
        return (lookup_with_search(example), example.answer) if use_tool else lookup_guess(rng, example)
    if kind == "arithmetic":
        if use_tool:
            return arithmetic_with_calculator(rng, example), example.answer
        thinking, answer = arithmetic_solution(rng, example.meta["parts"], "check")
        return thinking, str(answer)
    raise ValueError(f"tool traces are written for arithmetic and lookup problems, not {kind}")
