"""The tiny world's problems, their verifiers, and deliberately imperfect worked solutions.

Two families of checkable reasoning problems, and one of simple questions:
  arithmetic  "Compute (16 - 7 + 9) * 2"       -> 36 (a two-digit start, 2-3 one-digit steps)
  countdown   "Make 22 from 3, 5, 7"           -> an expression using each number once
  general     "What comes after 37?"           -> 38, answered without a chain of thought (R1's
              non-reasoning data: the part of the SFT mix that keeps a model from over-thinking)

Worked solutions come in styles, so a model pretrained on them is only partly right and RL has
behaviour to select for (the point of R1-Zero):
  guess    answers without working                          (short, mostly wrong)
  slip     works step by step, makes a slip, leaves it      (wrong)
  careful  works step by step                               (right)
  verify   checks each step; a slip is caught by the check  (long, right, reflective)
  catch    makes a slip, then "wait, recheck" and fixes it  (right, reflective)
and in about 30% of them the words of the reasoning are mostly Chinese (R1-Zero's language mixing).
"""

from __future__ import annotations

import ast
import functools
import itertools
import random
import re

from r1lab.data.example import Example, Task

# Share of each style in the pretraining corpus. Guessing (answering without working) is the base
# model's main failure: a choice made at the first token, so T=0.6 sampling keeps it, while scattered
# slips mostly vanish at low temperature. The base lands near the 20-50% pass@1 the demo needs, and
# RL has a behaviour to select: think instead of guess (and, in countdown, keep searching).
ARITH_STYLES = {"guess": 0.55, "slip": 0.12, "careful": 0.12, "verify": 0.10, "catch": 0.11}
COUNTDOWN_STYLES = {"guess": 0.40, "impatient": 0.25, "search": 0.20, "catch": 0.15}
# The long, careful styles: they check, redo or keep searching. pretrain.careful_styles=false drops them
# from the corpus (`r1lab compare aha-ablation`: does RL's growth come from selecting them?).
CAREFUL_STYLES = ("verify", "catch", "search")
# Bump when problems or solutions change: the cached base models are keyed on it.
WORLD_VERSION = 6
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _slip(rng: random.Random, value: int) -> int:
    wrong = value + rng.choice([-10, -2, -1, 1, 2, 10])
    return wrong if wrong >= 0 else value + 1


# ---------------------------------------------------------------- arithmetic


def arithmetic_problem(rng: random.Random) -> tuple[str, list[tuple[int, str, int, int]]]:
    """Returns the question and its steps [(a, op, b, result)]: a two-digit start, then 2-3 steps
    adding or subtracting a digit, or multiplying by up to 5; every value stays in 0..99.

    One-digit operands keep the skills few (the same ones countdown needs), so a ~1M-parameter
    model learns them in minutes on a CPU."""
    value = rng.randint(10, 50)
    steps = []
    for _ in range(rng.choice([2, 2, 3])):
        ops = ["+", "-"] + (["*"] if 2 <= value <= 19 else [])
        op = rng.choice(ops)
        if op == "*":
            b = rng.randint(2, min(5, 99 // value))
        elif op == "+":
            b = rng.randint(2, min(9, 99 - value)) if value <= 97 else None
        else:
            b = rng.randint(2, min(9, value)) if value >= 2 else None
        if b is None:
            op, b = ("-", 2) if value > 97 else ("+", 2)
        result = OPS[op](value, b)
        steps.append((value, op, b, result))
        value = result
    text = f"{steps[0][0]}"
    for i, (_, op, b, _) in enumerate(steps):
        # The steps run left to right; a product after a sum needs brackets to mean the same.
        text = f"({text}) {op} {b}" if op == "*" and i > 0 else f"{text} {op} {b}"
    return f"Compute {text}", steps


def arithmetic_solution(rng: random.Random, steps, style: str) -> tuple[str, int]:
    """Returns (thinking, final answer) in the given style."""
    answer = steps[-1][3]
    if style == "guess":
        guess = max(0, answer + rng.choice([-12, -7, -3, 3, 5, 9, 11, 0]))
        return f"it is about {guess}.", guess
    slip_at = rng.randrange(len(steps)) if style in ("slip", "catch", "verify") else -1
    if style == "verify" and rng.random() < 0.5:
        slip_at = -1  # half of the verified solutions have nothing to catch
    lines, value = [], steps[0][0]
    for i, (_, op, b, result) in enumerate(steps):
        true = OPS[op](value, b)
        got = _slip(rng, true) if i == slip_at else true
        line = f"{value} {op} {b} = {got}."
        if style == "verify":
            inv = {"+": "-", "-": "+", "*": "/"}[op]
            back = got - b if op == "+" else got + b if op == "-" else None
            if back is None:  # multiplication: check by adding up instead of dividing
                line += f" check {b} * {value} = {true}" + (" ok." if got == true else f" not {got}. so {value} {op} {b} = {true}.")
            elif got == true:
                line += f" check {got} {inv} {b} = {back} ok."
            else:
                line += f" check {got} {inv} {b} = {back} not {value}. wait, recheck {value} {op} {b} = {true}."
        elif style == "catch" and i == slip_at:
            line += f" wait, recheck {value} {op} {b} = {true}."
        lines.append(line)
        value = true if style in ("verify", "catch") or i != slip_at else got
    return " then ".join(lines), value  # a word per step, so arithmetic thinking can drift into Chinese too


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
            if style == "catch":
                lines.append(f"try {x} {op1} {y} = {mid}, {mid} {op2} {z} = {_slip(rng, value)} no. wait, recheck {mid} {op2} {z} = {value} yes.")
            else:
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
        prompt, steps = arithmetic_problem(rng)
        return Example(id=prompt, prompt=prompt, answer=str(steps[-1][3]), meta={"kind": kind, "steps": steps})
    prompt, numbers, target = countdown_problem(rng)
    return Example(id=prompt, prompt=prompt, answer=str(target), meta={"kind": kind, "numbers": numbers, "target": target})


# Some chains of thought are mostly Chinese, as R1-Zero's were: the words, never the numbers, so a
# mixed solution is exactly as right as a clean one and only a language reward can tell them apart.
# Whether a document mixes is one choice, made at its first word, so sampling at T=0.6 keeps it (a
# per-word coin would be flattened to English). The Chinese documents come from a more careful source:
# they guess and give up less. So an accuracy-only RL policy drifts *toward* mixing, as R1-Zero did,
# and R1's language reward has a pull to work against (the paper: it costs a little accuracy).
MIXED_SHARE = {"guess": 0.15, "impatient": 0.15, "slip": 0.45, "careful": 0.45, "verify": 0.45, "catch": 0.45, "search": 0.45}
MIXED_WORD_SHARE = 0.85
CHINESE = {"try": "试", "no": "不对", "yes": "对", "wait": "等等", "recheck": "再算", "check": "验算", "ok": "好",
           "not": "不是", "so": "所以", "give up": "放弃", "maybe": "也许", "it is about": "大约是", "then": "然后"}
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
        thinking, answer = arithmetic_solution(rng, example.meta["steps"], style)
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
    train = [e for i, k in enumerate(kinds) for e in TinyWorldTask._draw(rng, k, train_size // len(kinds) + (i < train_size % len(kinds)), exclude)]
    rng.shuffle(train)
    return test, train
