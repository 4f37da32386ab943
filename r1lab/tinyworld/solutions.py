"""Worked solutions to the tiny world's problems (problems.py), in several styles.

The world is built so that thinking longer and re-checking pay only because they change the answer for
this model: R1-Zero's growing thinking and "aha moment", selected by accuracy rewards alone. Finding x in
one go is an inverse the ~1M-parameter model does only roughly; checking an x is easy steps forward and
a subtraction ("7 * 7 = 49, 49 + 23 = 72, 72 - 72 = 0 ok"), which it learns to do honestly in pretraining
(world v9: the subtraction makes the verdict something the model computes, not a coin it can call from
the estimate; docs/AHA.md). So a solution that checks its estimate and, on a miss, says so and tries
again is right far more often than one that stops at the estimate. The styles:
  arithmetic  guess      "x is about 6."                                   short; right about half the time
              impatient  the estimate, checked once; a miss is answered anyway ("give up.")
              check      the estimate, checked; on a miss "72 - 65 = 7, too small. wait, try 7: ..." until
                         the check holds                                   long, reflective, right
  countdown   guess      "maybe (3 + 5) * 7."                              short, mostly wrong
              impatient  one or two tries at random, then "give up."
              search     tries until one makes the target (or six misses)  long
The long, careful styles are rare, so the base mostly does not use them: RL has to find that they pay.
No worked solution carries a slip to copy: the errors the checks catch are the model's own (`census.py`
measures, on a base, each style's accuracy and how often a check turns a wrong estimate into a right
answer). In about a third of the working solutions the words are mostly Chinese (R1-Zero's language
mixing: language.py).
"""

from __future__ import annotations

import random

from r1lab.data.example import Example
from r1lab.tinyworld.language import MIXED_SHARE, mix_language
from r1lab.tinyworld.problems import OPS, countdown_chains

# Share of each style in the pretraining corpus. Guessing (answering without working) is the base
# model's main failure: a choice made at the first token, so T=0.6 sampling keeps it. The base lands
# near the 20-50% pass@1 the demo needs, and RL has behaviour to select: check instead of guess, and
# keep searching instead of giving up.
ARITH_STYLES = {"guess": 0.83, "impatient": 0.07, "check": 0.10}
COUNTDOWN_STYLES = {"guess": 0.40, "impatient": 0.40, "search": 0.20}
# The long, careful styles: they check, redo or keep searching. pretrain.careful_styles=false drops them
# from the corpus (`r1lab compare aha-ablation`: does RL's growth come from selecting them?).
CAREFUL_STYLES = ("check", "search")


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


# ---------------------------------------------------------------- arithmetic


def estimate(rng: random.Random, x: int) -> int:
    """A first estimate of x, as a rough inverse gives it: right half the time, else one or two off."""
    off = rng.choices([0, -1, 1, -2, 2], weights=[0.5, 0.2, 0.2, 0.05, 0.05])[0]
    return min(max(x + off, 1), 9)


def _forward(a: int, op: str, b: int, c: int, x: int) -> tuple[str, int]:
    """The check of x: its value, and the difference from c ("7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7")."""
    product = a * x
    value = OPS[op](product, b)
    return f"{a} * {x} = {product}, {product} {op} {b} = {value}, {c} - {value} = {c - value}", value


def arithmetic_practice(rng: random.Random, parts) -> str:
    """A line of plain arithmetic, as a base model's pretraining data holds: the computation a check of an
    estimate of this equation's x makes, without the equation, the estimate or a verdict."""
    a, op, b, c, x = parts
    return _forward(a, op, b, c, estimate(rng, x))[0]


def arithmetic_solution(rng: random.Random, parts, style: str) -> tuple[str, int]:
    """Returns (thinking, final answer) in the given style:
      guess      "x is about 6."                                               short; right half the time
      impatient  the estimate, checked once; on a miss "give up." with the estimate   a check that stops early
      check      the estimate, checked forward; on a miss "72 - 65 = 7, too small. wait, try 7: ..." until
                 the check holds                                               long, reflective, always right

    A check ends by subtracting its value from c, and "ok" follows a difference of 0. Without the
    subtraction (world v8: "65, not 72" / "72 ok") the verdict is one binary token that the estimate alone
    predicts about as well as the comparison does, so its gradient is weak and a base learns to compare
    only late, at a step that varies with the seed and the machine's floats (docs/AHA.md). A difference's
    digits cannot be guessed from the estimate: the model computes them from the two numbers beside them.
    """
    a, op, b, c, x = parts
    guess = estimate(rng, x)
    if style == "guess":
        return f"x is about {guess}.", guess
    lines = [f"x is about {guess}. check"]
    while True:
        route, value = _forward(a, op, b, c, guess)  # the verdict follows its difference: see above
        if value == c:
            lines.append(f"{route} ok.")
            return " ".join(lines), guess
        if style == "impatient":
            lines.append(f"{route}, not {c}. give up.")
            return " ".join(lines), guess
        guess += 1 if value < c else -1
        lines.append(f"{route}, {'too small' if value < c else 'too big'}. wait, try {guess}:")


# ---------------------------------------------------------------- countdown


MAX_MISSES = 6  # a search gives up after this many wrong tries


def countdown_solution(rng: random.Random, numbers: list[int], target: int, style: str) -> tuple[str, str]:
    """Returns (thinking, answer expression). Tries candidates in random order: `search` keeps going
    until a hit (or MAX_MISSES), `impatient` gives up after one or two misses, so persistence pays."""
    chains = list(countdown_chains(numbers))
    rng.shuffle(chains)
    expr = lambda c: f"({c[0]} {c[1]} {c[2]}) {c[4]} {c[5]}"  # noqa: E731
    if style == "guess":
        return f"maybe {expr(chains[0])}.", expr(chains[0])
    give_up = rng.randint(1, 2) if style == "impatient" else MAX_MISSES
    lines, misses = [], 0
    for c in chains:
        x, op1, y, mid, op2, z, value = c
        if value == target:
            lines.append(f"try {x} {op1} {y} = {mid}, {mid} {op2} {z} = {value} yes.")
            return " ".join(lines), expr(c)
        lines.append(f"try {x} {op1} {y} = {mid}, {mid} {op2} {z} = {value} no.")
        misses += 1
        if misses == give_up:
            break
    return " ".join(lines) + " give up.", expr(c)


# ---------------------------------------------------------------- a document's solution


def worked_solution(rng: random.Random, example: Example, careful_styles: bool = True) -> str:
    """The response a document of the corpus shows for `example`: '<think> … </think> <answer> … </answer>'.
    careful_styles=False: never one of CAREFUL_STYLES (the other styles keep their relative shares)."""
    kind = example.meta["kind"]
    if kind == "general":
        return f"<think> </think> <answer> {example.answer} </answer>"

    def styles(shares: dict[str, float]) -> dict[str, float]:
        return shares if careful_styles else {k: v for k, v in shares.items() if k not in CAREFUL_STYLES}

    if kind == "arithmetic":
        style = _pick(rng, styles(ARITH_STYLES))
        thinking, answer = arithmetic_solution(rng, example.meta["parts"], style)
    else:
        style = _pick(rng, styles(COUNTDOWN_STYLES))
        thinking, answer = countdown_solution(rng, example.meta["numbers"], example.meta["target"], style)
    if rng.random() < MIXED_SHARE[style]:
        thinking = mix_language(rng, thinking)
    return f"<think> {thinking} </think> <answer> {answer} </answer>"
