"""Language mixing: the Chinese words some of the tiny world's worked solutions (solutions.py) are written in."""

from __future__ import annotations

import random
import re

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
WORD = {w: re.escape(w) + "|" + re.escape(CHINESE[w]) for w in CHINESE}  # a regex matching each word in either language
_WORDS = re.compile(r"\b(" + "|".join(sorted(map(re.escape, CHINESE), key=len, reverse=True)) + r")\b")


def mix_language(rng: random.Random, thinking: str) -> str:
    """The first word always turns Chinese (the document's choice shows at once); later ones mostly do."""
    first = True

    def swap(m: re.Match) -> str:
        nonlocal first
        chinese, first = first or rng.random() < MIXED_WORD_SHARE, False
        return CHINESE[m.group(1)] if chinese else m.group(1)

    return _WORDS.sub(swap, thinking)
