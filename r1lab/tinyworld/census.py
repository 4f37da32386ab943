"""A model's samples of the tiny world counted by style: the check that the world's careful styles pay.

R1-Zero's growth in length and reflection can only come from RL selecting behaviour the base already has,
and only where it is right more often at the model's own competence. This counts, for k samples of each
test problem, the style each response is written in (read from its text, English or mixed), and each
style's share, accuracy and length. For arithmetic it also counts how often a wrong first estimate ends
right, and judges every check line (copied b, sum right, verdict agrees with the value written).

    python -m r1lab.tinyworld.census MODEL_DIR [N_PROBLEMS] [TEMPERATURE]

`check_honesty` is the part of it that `r1lab pretrain` measures on every base it builds (r1lab.json's
"checks"): a base whose checks are decorative gives R1-Zero nothing to amplify.
"""

from __future__ import annotations

import re
import sys

from r1lab.data.example import Example
from r1lab.tinyworld.language import WORD
from r1lab.tinyworld.problems import OPS

_ESTIMATE = re.compile(rf"(?:{WORD['x is about']}) (\d+)")


def style_of(response: str, example: Example) -> str:
    """The style of a tiny-world response (solutions.py's names); 'other' if none fits. An impatient check
    whose estimate was right reads as a check: the two write the same text then."""
    thinking = response.split("</think>")[0]
    if example.meta["kind"] == "arithmetic":
        if not _ESTIMATE.search(thinking):
            return "other"
        if not re.search(WORD["check"], thinking):
            return "guess"
        return "impatient" if re.search(WORD["give up"], thinking) else "check"
    if re.search(WORD["maybe"], thinking):
        return "guess"
    if not re.search(WORD["try"], thinking):
        return "other"
    return "impatient" if re.search(WORD["give up"], thinking) and thinking.count("=") <= 4 else "search"


def first_estimate_right(response: str, example: Example) -> bool | None:
    """Whether an arithmetic response's first estimate of x is the answer (None: no estimate)."""
    found = _ESTIMATE.search(response)
    return None if found is None else found.group(1) == example.answer


_MISS = f"{WORD['not']}|{WORD['too small']}|{WORD['too big']}"
_CHECK_LINE = re.compile(rf"(\d+) \* (\d+) = (\d+), (\d+) ([-+]) (\d+) = (\d+), (\d+) - (\d+) = (-?\d+),? ?(?:{WORD['ok']}|{_MISS})")


def check_parts(response: str, example: Example) -> list[dict[str, bool]]:
    """Each check line of an arithmetic response, judged part by part: whether it copied b from the
    prompt, wrote its sum right, subtracted that sum from c right, and said "ok" exactly when the value it
    wrote is c. A model whose verdicts do not follow what it wrote is checking nothing (docs/AHA.md)."""
    b, c = example.meta["parts"][2:4]
    parts = []
    for m in _CHECK_LINE.finditer(response):
        _, _, _, product, sign, b_copy, value, c_copy, value_copy, difference = m.groups()
        true = OPS[sign](int(product), int(b_copy))
        ok = not re.search(_MISS, m.group(0))
        parts.append({"copies b": int(b_copy) == b, "sum right": int(value) == true,
                      "difference right": int(c_copy) == c and value_copy == value and int(difference) == c - int(value),
                      "verdict follows": ok == (int(value) == c)})
    return parts


_TOOL_CHECK = re.compile(rf"<tool>calculator\((-?\d+) - \((\d+) \* (\d+) ([-+]) (\d+)\)\)</tool><result>([^<]*)</result> ?"
                         rf"({WORD['ok']}|{_MISS})")


def checks_right(response: str, example: Example) -> list[tuple[bool, bool]]:
    """(uses the calculator, right) for each check line of an arithmetic response. A line is right when every number
    it writes is true for the prompt and the estimate it checks, and its verdict follows: in the head, the product,
    the sum and the difference (solutions.py); with the calculator, the call is c - (a * x op b) for the prompt's
    a, b, c, and the verdict follows the sign of its result (tool_traces.py)."""
    a, _, b, c, _ = example.meta["parts"]
    lines = []
    for m in _CHECK_LINE.finditer(response):
        a_copy, x, product, product_copy, sign, b_copy, value, c_copy, value_copy, difference = m.groups()
        true = OPS[sign](int(product), int(b_copy))
        numbers = (int(a_copy) == a and int(product) == a * int(x) and product_copy == product and int(b_copy) == b
                   and int(value) == true and int(c_copy) == c and value_copy == value and int(difference) == c - true)
        lines.append((False, numbers and (not re.search(_MISS, m.group(0))) == (true == c)))
    for m in _TOOL_CHECK.finditer(response):
        c_copy, a_copy, x, sign, b_copy, result, verdict = m.groups()
        difference = c - OPS[sign](a * int(x), b)
        follows = {"ok": difference == 0, "small": difference > 0, "big": difference < 0}
        said = "ok" if not re.search(_MISS, verdict) else "small" if re.search(WORD["too small"], verdict) else "big"
        numbers = (int(c_copy), int(a_copy), int(b_copy)) == (c, a, b) and result.strip() == str(difference)
        lines.append((True, numbers and follows[said]))
    return lines


def census(model_dir: str, n: int = 200, temperature: float = 1.0, k: int = 4, seed: int = 0,
           task: str = "tinyworld") -> dict[str, dict]:
    """k samples of each of n test problems of `task` at `temperature`: {kind/style: {share, accuracy, length,
    samples}} (arithmetic styles also: `first_right`, the first estimate was right; `fixed`, it was wrong and
    the answer right), and under "checks" each check_parts part's rate over every check line."""
    from r1lab.models.io import load_model, trained_system

    model, tokenizer = load_model(model_dir, device="cpu", dtype="fp32")
    return census_of(model, tokenizer, trained_system(model_dir), n, temperature, k, seed, task)


def census_of(model, tokenizer, system: str | None, n: int = 200, temperature: float = 1.0, k: int = 4, seed: int = 0,
              task: str = "tinyworld") -> dict[str, dict]:
    """`census` of a model in memory (`system`: the system text it was trained with)."""
    from r1lab.config import SamplingConfig
    from r1lab.data.format import extract_answer, render_prompt, response_prefix
    from r1lab.engines import make_engine
    from r1lab.tinyworld.problems import TinyWorldTask, score

    engine = make_engine("torch", model, tokenizer, seed=seed)
    examples = TinyWorldTask(task, test_size=n, seed=seed).examples("test")
    prompts = [render_prompt(e, "r1-zero", tokenizer, system) for e in examples]
    sampling = SamplingConfig(temperature=temperature, top_p=1.0 if temperature == 1.0 else 0.95, max_new_tokens=140)
    rows: dict[str, list[tuple[float, int, bool | None]]] = {}
    checks: dict[str, list[bool]] = {}
    for start in range(0, len(examples), 64):
        rollout = engine.generate(prompts[start : start + 64], sampling, n=k)
        for r, text in enumerate(rollout.texts):
            ex = examples[start + r // k]
            response = response_prefix(prompts[start + r // k]) + text
            right = score(extract_answer(response), ex)
            first = first_estimate_right(response, ex) if ex.meta["kind"] == "arithmetic" else None
            if ex.meta["kind"] == "arithmetic":
                for line in check_parts(response, ex):
                    for part, holds in line.items():  # not `right`: that is this sample's score
                        checks.setdefault(part, []).append(holds)
            rows.setdefault(f"{ex.meta['kind']}/{style_of(response, ex)}", []).append((right, int(rollout.lengths[r]), first))
    engine.close()
    per_kind = {kind: sum(len(v) for key, v in rows.items() if key.startswith(kind)) for kind in ("arithmetic", "countdown")}
    table = {}
    for key, v in sorted(rows.items()):
        table[key] = {"share": len(v) / per_kind[key.split("/")[0]], "accuracy": sum(a for a, _, _ in v) / len(v),
                      "length": sum(n for _, n, _ in v) / len(v), "samples": len(v)}
        if key.startswith("arithmetic/"):
            wrong_first = [a for a, _, first in v if first is False]
            table[key]["first_right"] = sum(first is True for _, _, first in v) / len(v)
            table[key]["fixed"] = sum(wrong_first) / len(v)  # share of all samples: a wrong estimate, ended right
    table["checks"] = {part: {"rate": sum(v) / len(v), "lines": len(v)} for part, v in checks.items()}
    return table


# A base's checks are honest when its verdicts follow what it wrote and checking pays at its own competence:
# only then has R1-Zero's RL something to amplify (docs/AHA.md). Below these, the demo says so.
HONEST_VERDICTS = 0.85


def check_honesty(model, tokenizer, system: str | None = None, n: int = 200, seed: int = 0) -> dict:
    """Whether a tiny-world base checks honestly, from k=4 samples at T=1 of n held-out equations:
    {verdict_follows, sum_right, check_accuracy, guess_accuracy, check_lines, check_samples, honest}."""
    table = census_of(model, tokenizer, system, n, 1.0, 4, seed, task="tinyworld/arithmetic")
    lines = table["checks"]
    check, guess = table.get("arithmetic/check", {}), table.get("arithmetic/guess", {})
    result = {"verdict_follows": lines.get("verdict follows", {}).get("rate", 0.0),
              "sum_right": lines.get("sum right", {}).get("rate", 0.0),
              "check_accuracy": check.get("accuracy", 0.0), "guess_accuracy": guess.get("accuracy", 0.0),
              "check_lines": lines.get("verdict follows", {}).get("lines", 0), "check_samples": check.get("samples", 0),
              "problems": n}
    result = {key: round(v, 3) if isinstance(v, float) else v for key, v in result.items()}
    result["honest"] = result["verdict_follows"] >= HONEST_VERDICTS and result["check_accuracy"] > result["guess_accuracy"]
    return result


def describe(honesty: dict) -> str:
    """One line on a base's checks, for logs and reports."""
    verdict = "honest" if honesty["honest"] else "DECORATIVE"
    return (f"{verdict} checks: verdicts follow the written value {honesty['verdict_follows']:.2f} of the time "
            f"(honest from {HONEST_VERDICTS}), sums right {honesty['sum_right']:.2f}, the check style right "
            f"{honesty['check_accuracy']:.2f} vs the guess's {honesty['guess_accuracy']:.2f}, "
            f"on {honesty['problems']} held-out equations x 4 at T=1")


if __name__ == "__main__":
    args = sys.argv[1:]
    table = census(args[0], *(int(args[1]),) if len(args) > 1 else (), *(float(args[2]),) if len(args) > 2 else ())
    print(f"{'kind/style':22} {'share':>6} {'accuracy':>9} {'length':>7} {'samples':>8} {'1st right':>9} {'fixed':>6}")
    checks = table.pop("checks")
    for key, row in table.items():
        extra = f" {row['first_right']:9.2f} {row['fixed']:6.2f}" if "fixed" in row else ""
        print(f"{key:22} {row['share']:6.2f} {row['accuracy']:9.2f} {row['length']:7.1f} {row['samples']:8d}{extra}")
    for part, row in checks.items():
        print(f"check lines: {part:16} {row['rate']:.2f} of {row['lines']}")
