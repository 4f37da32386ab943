"""The tiny world's problems, their verifiers, and worked solutions in several styles.

Two families of checkable reasoning problems, and one of simple questions:
  arithmetic  "Solve 7 * x + 23 = 72"          -> 7 (x one digit: an inverse, found by estimating and checking)
  countdown   "Make 22 from 3, 5, 7"           -> an expression using each number once
  general     "What comes after 37?"           -> 38, answered without a chain of thought (R1's
              non-reasoning data: the part of the SFT mix that keeps a model from over-thinking)

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
answer). In about a third of the working solutions the words are mostly Chinese (R1-Zero's language mixing).
"""

from __future__ import annotations

import ast
import functools
import itertools
import random
import re

from r1lab.data.example import Example, Task

# Share of each style in the pretraining corpus. Guessing (answering without working) is the base
# model's main failure: a choice made at the first token, so T=0.6 sampling keeps it. The base lands
# near the 20-50% pass@1 the demo needs, and RL has behaviour to select: check instead of guess, and
# keep searching instead of giving up.
ARITH_STYLES = {"guess": 0.83, "impatient": 0.07, "check": 0.10}
COUNTDOWN_STYLES = {"guess": 0.40, "impatient": 0.40, "search": 0.20}
# The long, careful styles: they check, redo or keep searching. pretrain.careful_styles=false drops them
# from the corpus (`r1lab compare aha-ablation`: does RL's growth come from selecting them?).
CAREFUL_STYLES = ("check", "search")
# Bump when problems or solutions change: the cached base models are keyed on it.
WORLD_VERSION = 9
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


# ---------------------------------------------------------------- arithmetic


def arithmetic_problem(rng: random.Random) -> tuple[str, tuple[int, str, int, int, int]]:
    """Returns the question and its parts (a, op, b, c, x) of "Solve a * x op b = c": x and a one-digit,
    b up to 49, c in 10..99. Checking an x is two easy steps forward ("7 * 7 = 49, 49 + 23 = 72"); finding
    it in one go is an inverse the model does only roughly (about 4,000 problems: too many to memorise)."""
    while True:
        x, a, op = rng.randint(1, 9), rng.randint(2, 9), rng.choice("+-")
        b = rng.randint(2, 49)
        c = OPS[op](a * x, b)
        if 10 <= c <= 99:
            return f"Solve {a} * x {op} {b} = {c}", (a, op, b, c, x)


def _estimate(rng: random.Random, x: int) -> int:
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
    return _forward(a, op, b, c, _estimate(rng, x))[0]


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
    guess = _estimate(rng, x)
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


MAX_EXPR_CHARS = 200  # a countdown answer uses three digits: far shorter; a longer one is not an answer


def _evaluate(expr: str) -> tuple[int, list[int]] | None:
    """Safely evaluates an expression of ints, + - * and parentheses; returns (value, numbers used).
    A hostile answer (thousands of terms, deep brackets) is refused by size before parsing, and a
    RecursionError/MemoryError scores it wrong: evaluation must never crash on what a model writes."""
    if len(expr) > MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    numbers: list[int] = []

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            numbers.append(node.value)
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult):
            left, right = walk(node.left), walk(node.right)
            if left is None or right is None or abs(left) > 10**6 or abs(right) > 10**6:
                return None
            return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right}[type(node.op)]
        return None

    try:
        value = walk(tree)
    except (RecursionError, MemoryError):
        return None
    return None if value is None else (value, numbers)


def _chains(numbers: list[int]):
    """The 12 candidate solutions (x op1 y) op2 z with op in + and *: every pair first, both ops."""
    for i, j in itertools.combinations(range(3), 2):
        (k,) = {0, 1, 2} - {i, j}
        x, y, z = numbers[i], numbers[j], numbers[k]
        for op1, op2 in itertools.product("+*", repeat=2):
            mid = OPS[op1](x, y)
            yield (x, op1, y, mid, op2, z, OPS[op2](mid, z))


def countdown_problem(rng: random.Random) -> tuple[str, list[int], int]:
    while True:
        numbers = [rng.randint(1, 9) for _ in range(3)]
        target = rng.choice(list(_chains(numbers)))[-1]
        if 10 <= target <= 99 and target not in numbers:
            return f"Make {target} from {', '.join(map(str, numbers))}", numbers, target


MAX_MISSES = 6  # a search gives up after this many wrong tries


def countdown_solution(rng: random.Random, numbers: list[int], target: int, style: str) -> tuple[str, str]:
    """Returns (thinking, answer expression). Tries candidates in random order: `search` keeps going
    until a hit (or MAX_MISSES), `impatient` gives up after one or two misses, so persistence pays."""
    chains = list(_chains(numbers))
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


# ---------------------------------------------------------------- corpus and task


def sample_problem(rng: random.Random, kind: str) -> Example:
    """One problem of `kind` (one of KINDS); the id is the prompt, so splits dedupe on it.

    General questions carry meta["general"] = True: RL scores them with the general reward, not the rules."""
    if kind == "general":
        prompt, answer = general_problem(rng)
        return Example(id=prompt, prompt=prompt, answer=answer, meta={"kind": kind, "general": True})
    if kind == "arithmetic":
        prompt, parts = arithmetic_problem(rng)
        return Example(id=prompt, prompt=prompt, answer=str(parts[-1]), meta={"kind": kind, "parts": parts})
    prompt, numbers, target = countdown_problem(rng)
    return Example(id=prompt, prompt=prompt, answer=str(target), meta={"kind": kind, "numbers": numbers, "target": target})


# Some chains of thought are mostly Chinese, as R1-Zero's were: the words, never the numbers, so a
# mixed solution is exactly as right as a clean one and only a language reward can tell them apart.
# Whether a document mixes is one choice, made at its first word, so sampling at T=0.6 keeps it (a
# per-word coin would be flattened to English). The Chinese documents come from a more careful source:
# they guess and give up less. So an accuracy-only RL policy drifts *toward* mixing, as R1-Zero did,
# and R1's language reward has a pull to work against (the paper: it costs a little accuracy).
MIXED_SHARE = {"guess": 0.15, "impatient": 0.15, "check": 0.45, "search": 0.45}
MIXED_WORD_SHARE = 0.85
CHINESE = {"try": "试", "no": "不对", "yes": "对", "wait": "等等", "recheck": "再算", "check": "验算", "ok": "好",
           "not": "不是", "too small": "太小", "too big": "太大", "give up": "放弃", "maybe": "也许", "x is about": "x大约是", "then": "然后"}
_WORDS = re.compile(r"\b(" + "|".join(sorted(map(re.escape, CHINESE), key=len, reverse=True)) + r")\b")


def mix_language(rng: random.Random, thinking: str) -> str:
    """The first word always turns Chinese (the document's choice shows at once); later ones mostly do."""
    first = True

    def swap(m: re.Match) -> str:
        nonlocal first
        chinese, first = first or rng.random() < MIXED_WORD_SHARE, False
        return CHINESE[m.group(1)] if chinese else m.group(1)

    return _WORDS.sub(swap, thinking)


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


# ---------------------------------------------------------------- general questions


def general_problem(rng: random.Random) -> tuple[str, str]:
    """A simple question a model should answer at once: (question, answer)."""
    form = rng.randrange(3)
    if form == 0:
        n = rng.randint(10, 998)
        return f"What comes after {n}?", str(n + 1)
    if form == 1:
        a, b = rng.sample(range(10, 100), 2)
        return f"Which is larger, {a} or {b}?", str(max(a, b))
    digits = " ".join(str(rng.randint(0, 9)) for _ in range(rng.randint(3, 5)))
    return f"Repeat {digits}", digits


def score(answer: str | None, example: Example) -> float:
    if answer is None:
        return 0.0
    if example.meta["kind"] == "general":
        return float(" ".join(answer.split()) == example.answer)
    if example.meta["kind"] == "arithmetic":
        return float(answer.strip() == example.answer)
    result = _evaluate(answer)
    return float(result is not None and result[0] == example.meta["target"] and sorted(result[1]) == sorted(example.meta["numbers"]))


KINDS = ("arithmetic", "countdown", "general")
REASONING = ("arithmetic", "countdown")  # what plain `tinyworld` means


RESERVED_TEST = 1000  # per kind: problems no corpus or train split ever contains


class TinyWorldTask(Task):
    """`tinyworld` mixes the reasoning kinds; `tinyworld/countdown` picks one, `tinyworld/arithmetic+general`
    several (kinds alternate in the test split).

    The test split is a fixed property of the world: the first `test_size` of RESERVED_TEST problems
    per kind, drawn from a stream of their own. Train (and so the pretraining corpus) excludes all
    reserved problems, so any test_size up to 2 * RESERVED_TEST is unseen, whatever the seed.
    """

    def __init__(self, name: str = "tinyworld", train_size: int | None = None, test_size: int = 200, seed: int = 0):
        kinds = tuple(name.partition("/")[2].split("+")) if "/" in name else REASONING
        if not kinds or any(k not in KINDS for k in kinds) or len(set(kinds)) < len(kinds):
            raise ValueError(f"unknown tiny-world task '{name}': choose tinyworld (= {'+'.join(REASONING)}) or "
                             f"tinyworld/KIND[+KIND...] with kinds from {', '.join(KINDS)}")
        self.name, self.kinds = name, kinds
        if test_size > RESERVED_TEST * len(self.kinds):
            raise ValueError(f"test_size {test_size} is more than the {RESERVED_TEST * len(self.kinds)} reserved test problems of {name}")
        self.test, self.train = _splits(kinds, train_size or 20000, test_size, seed)

    @staticmethod
    def _draw(rng: random.Random, kind: str, n: int, exclude: set[str]) -> list[Example]:
        """Up to n distinct problems of one kind (fewer if the kind runs out of new ones)."""
        seen, out = set(exclude), []
        for _ in range(5 * n):
            if len(out) == n:
                break
            ex = sample_problem(rng, kind)
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(ex)
        return out

    def examples(self, split: str) -> list[Example]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not '{split}'")
        return list(self.train if split == "train" else self.test)

    def score(self, answer: str, example: Example) -> float:
        return score(answer, example)

    def vote_key(self, answer: str, example: Example) -> str:
        """Countdown has many right expressions ("(2 + 6) * 5", "5 * (6 + 2)"): they vote together, by
        value and numbers used, or a split right vote would lose to a wrong answer repeated twice."""
        result = _evaluate(answer) if example.meta["kind"] == "countdown" else None
        return f"= {result[0]} from {sorted(result[1])}" if result else " ".join(answer.split())


@functools.lru_cache(maxsize=16)  # drawing 20k problems takes seconds; a run asks for the same splits often
def _splits(kinds: tuple[str, ...], train_size: int, test_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    reserved = {k: TinyWorldTask._draw(random.Random(f"tinyworld-test-{k}"), k, RESERVED_TEST, set()) for k in KINDS}
    per_kind = [reserved[k][: test_size // len(kinds) + (i < test_size % len(kinds))] for i, k in enumerate(kinds)]
    test = [e for pair in itertools.zip_longest(*per_kind) for e in pair if e is not None]
    exclude = {e.prompt for r in reserved.values() for e in r}
    rng = random.Random(f"tinyworld-train-{seed}")
    per_kind = [TinyWorldTask._draw(rng, k, train_size // len(kinds) + (i < train_size % len(kinds)), exclude) for i, k in enumerate(kinds)]
    # Kinds stay balanced when one runs out of new problems (arithmetic has ~3,500 beside the reserved
    # ones): a corpus or an RL run drawn from a lopsided split would mostly practise the other kind.
    n = min(map(len, per_kind))
    train = [e for examples in per_kind for e in examples[:n]]
    rng.shuffle(train)
    return test, train
