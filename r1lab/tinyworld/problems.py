"""The tiny world's problems, their verifiers, and the task that splits them into train and test.

Two families of checkable reasoning problems, and one of simple questions:
  arithmetic  "Solve 7 * x + 23 = 72"          -> 7 (x one digit: an inverse, found by estimating and checking)
  countdown   "Make 22 from 3, 5, 7"           -> an expression using each number once
  general     "What comes after 37?"           -> 38, answered without a chain of thought (R1's
              non-reasoning data: the part of the SFT mix that keeps a model from over-thinking)
  lookup      "How much longer is river 412 than 20 km?" -> 17, a made-up fact no corpus holds: answerable with the
              `search` tool (lookup.py), a guess without it. Not part of plain `tinyworld` or its corpus.

The worked solutions a corpus shows for them, in several styles: solutions.py; the Chinese words some
of those solutions mix in: language.py.
"""

from __future__ import annotations

import ast
import functools
import itertools
import random

from r1lab.data.example import Example, Task
from r1lab.tinyworld.lookup import lookup_problem
from r1lab.tinyworld.steps import step_labels

# Bump when problems or solutions (solutions.py, language.py) change: the cached base models are keyed on it.
WORLD_VERSION = 9
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


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


def countdown_chains(numbers: list[int]):
    """The 12 candidate solutions (x op1 y) op2 z with op in + and *: every pair first, both ops (the
    targets a problem draws from, and the tries a worked solution makes: solutions.py)."""
    for i, j in itertools.combinations(range(3), 2):
        (k,) = {0, 1, 2} - {i, j}
        x, y, z = numbers[i], numbers[j], numbers[k]
        for op1, op2 in itertools.product("+*", repeat=2):
            mid = OPS[op1](x, y)
            yield (x, op1, y, mid, op2, z, OPS[op2](mid, z))


def countdown_problem(rng: random.Random) -> tuple[str, list[int], int]:
    while True:
        numbers = [rng.randint(1, 9) for _ in range(3)]
        target = rng.choice(list(countdown_chains(numbers)))[-1]
        if 10 <= target <= 99 and target not in numbers:
            return f"Make {target} from {', '.join(map(str, numbers))}", numbers, target


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


# ---------------------------------------------------------------- problems, scores and the task


def sample_problem(rng: random.Random, kind: str) -> Example:
    """One problem of `kind` (one of KINDS); the id is the prompt, so splits dedupe on it.

    General questions carry meta["general"] = True: RL scores them with the general reward, not the rules."""
    if kind == "general":
        prompt, answer = general_problem(rng)
        return Example(id=prompt, prompt=prompt, answer=answer, meta={"kind": kind, "general": True})
    if kind == "lookup":
        prompt, answer, rivers, km = lookup_problem(rng)
        return Example(id=prompt, prompt=prompt, answer=answer, meta={"kind": kind, "rivers": rivers, "km": km})
    if kind == "arithmetic":
        prompt, parts = arithmetic_problem(rng)
        return Example(id=prompt, prompt=prompt, answer=str(parts[-1]), meta={"kind": kind, "parts": parts})
    prompt, numbers, target = countdown_problem(rng)
    return Example(id=prompt, prompt=prompt, answer=str(target), meta={"kind": kind, "numbers": numbers, "target": target})


def score(answer: str | None, example: Example) -> float:
    if answer is None:
        return 0.0
    if example.meta["kind"] == "general":
        return float(" ".join(answer.split()) == example.answer)
    if example.meta["kind"] in ("arithmetic", "lookup"):
        return float(answer.strip() == example.answer)
    result = _evaluate(answer)
    return float(result is not None and result[0] == example.meta["target"] and sorted(result[1]) == sorted(example.meta["numbers"]))


KINDS = ("arithmetic", "countdown", "general", "lookup")
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

    def step_labels(self, response: str, example: Example) -> list[bool]:
        return step_labels(response, example, lambda answer: score(answer, example) >= 1.0)

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
