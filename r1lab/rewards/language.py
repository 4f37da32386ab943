"""Language consistency, DeepSeek-R1's stage-2 reward: the share of the chain of thought in the target language.

R1-Zero's thinking drifts between languages; R1 adds the proportion of target-language words in the
CoT to the reward (and filters mixed-language samples out of its SFT data). What counts as a word:
  - each CJK ideograph (U+4E00-U+9FFF, extension A U+3400-U+4DBF) is one word: Chinese has no spaces
  - each run of Latin letters is one word ("wait", "don't", "café")
  - each run of letters of any other script (Cyrillic, kana, ...) is one word, in neither target
  - digits, operators, punctuation (CJK punctuation included) and the <think>/<answer> tags are neutral
The chain of thought is `thinking_part` of r1lab.data.format.
"""

from __future__ import annotations

import re

from r1lab.data.format import thinking_part

TARGETS = ("en", "zh")

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
_LATIN = "A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f"  # ASCII + accented letters, without × and ÷
_WORD = re.compile(
    rf"(?P<zh>[{_CJK}])"
    rf"|(?P<en>[{_LATIN}]+(?:'[{_LATIN}]+)*)"
    rf"|(?P<other>(?:(?![{_CJK}{_LATIN}])[^\W\d_])+)"  # letters of any other script
)


def count_words(text: str) -> dict[str, int]:
    """{"en": Latin words, "zh": CJK characters, "other": words of other scripts} in `text` (all of it)."""
    counts = {"en": 0, "zh": 0, "other": 0}
    for match in _WORD.finditer(text):
        counts[match.lastgroup] += 1
    return counts


def language_share(text: str, target: str = "en") -> float | None:
    """Share of the thinking's words in `target` ("en": Latin script, "zh": CJK); None if it has no words."""
    if target not in TARGETS:
        raise ValueError(f"language target must be one of {TARGETS}, got {target!r}")
    counts = count_words(thinking_part(text))
    total = sum(counts.values())
    return counts[target] / total if total else None


def language_consistency_reward(response: str, example=None, *, target: str = "en", **_) -> float:
    """The target-language share of the thinking, in [0, 1]; 1.0 when it has no words (nothing to be inconsistent)."""
    share = language_share(response, target)
    return 1.0 if share is None else share


def is_mixed(text: str, threshold: float = 0.95, target: str = "en") -> bool:
    """True if less than `threshold` of the thinking's words are in `target`; a wordless thinking is not mixed."""
    share = language_share(text, target)
    return share is not None and share < threshold
