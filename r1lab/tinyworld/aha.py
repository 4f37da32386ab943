"""R1-Zero's "aha moment", found in a run's own samples: a completion that re-checks, finds its own mistake,
puts it right and ends right. It reads the tiny world's check lines ("47 + 38 = 75", "x is about 6"), so it
lives with the world; evaluation/report.py shows what it finds."""

from __future__ import annotations

import math
import re

from r1lab.config import REFLECTION_PHRASES
from r1lab.data.format import extract_answer

_EQUATION = re.compile(r"(\d+) ([-+*]) (\d+) = (-?\d+)")


_CANDIDATE = re.compile(r"(?:about|大约是|try|试) (-?\d+)")


def _true_value(a: str, op: str, b: str) -> int:
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]


def corrects_itself(response: str, phrases=REFLECTION_PHRASES) -> bool:
    """Whether a response finds its own mistake by re-checking and puts it right. Either of:
    - it writes a wrong equation ("47 + 38 = 75"), then a reflection phrase, then the same equation right;
    - its first candidate answer ("x is about 6") is not its final answer, a reflection phrase comes
      between, and every equation it wrote is right: the check that rejected the candidate was honest.
    A check that only confirms ("check ... ok") finds nothing and does not count."""
    low = response.lower()

    def phrase_after(pos: int) -> int | None:
        seen = [i for i in (low.find(p.lower(), pos) for p in phrases) if i >= 0]
        return min(seen) if seen else None

    equations = list(_EQUATION.finditer(response))
    for wrong in equations:
        a, op, b, got = wrong.groups()
        true = _true_value(a, op, b)
        if int(got) == true or (start := phrase_after(wrong.end())) is None:
            continue
        if any(m.groups()[:3] == (a, op, b) and int(m.group(4)) == true for m in _EQUATION.finditer(response, start)):
            return True
    first, final = _CANDIDATE.search(response), extract_answer(response)
    return (first is not None and final is not None and first.group(1) != final.strip()
            and phrase_after(first.end()) is not None
            and all(int(m.group(4)) == _true_value(*m.groups()[:3]) for m in equations))


def is_aha(sample: dict, phrases=REFLECTION_PHRASES) -> bool:
    """Whether a logged sample (a samples.jsonl row) corrects itself and ends right."""
    return sample.get("correct") is True and corrects_itself(str(sample.get("response", "")), phrases)


def _logged_step(sample: dict):
    """The row's step where it is a finite number (not a bool, NaN or None), else 0: a sort key that never fails."""
    step = sample.get("step")
    return step if isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step) else 0


def aha_sample(samples: list[dict], phrases=REFLECTION_PHRASES) -> dict | None:
    """The first logged completion (by stage order, then step) that corrects itself and is right: R1-Zero's
    "aha moment", found in the run's own samples. None if no sample does."""
    stages = list(dict.fromkeys(str(r.get("stage", "run")) for r in samples))
    ordered = sorted(samples, key=lambda r: (stages.index(str(r.get("stage", "run"))), _logged_step(r)))
    return next((r for r in ordered if is_aha(r, phrases)), None)
