"""Lookup questions: deep research in miniature. A small knowledge base of made-up facts (the river Zor is 37 km
long) that no pretraining document contains, questions that need one or two of them and maybe a subtraction, and
`search`, the tool that finds them. Without the tool a model can only guess a length (chance: about 1 in 90).

  lookup  "How long is the Zor?"                     -> 37         search("Zor") -> "Zor: 37 km"
          "How much longer is the Zor than the Pel?"  -> 25 (37 - 12)
"""

from __future__ import annotations

import random

RIVERS_IN_KB = 240
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("l", "n", "r", "s", "k", "m")


def _knowledge_base() -> dict[str, int]:
    """River name -> length in km, the same on every machine (a fixed random stream of its own)."""
    rng, rivers = random.Random("tinyworld-facts"), {}
    while len(rivers) < RIVERS_IN_KB:
        name = (rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)).capitalize()
        rivers.setdefault(name, rng.randint(10, 99))
    return rivers


RIVERS = _knowledge_base()


def fact(name: str) -> str:
    return f"{name}: {RIVERS[name]} km"  # terse: a result's tokens come out of the episode's budget


def lookup_problem(rng: random.Random) -> tuple[str, str, list[str]]:
    """(question, answer, the rivers it needs): one fact half the time, otherwise a difference of two."""
    names = sorted(RIVERS)
    first = rng.choice(names)
    if rng.random() < 0.5:
        return f"How long is the {first}?", str(RIVERS[first]), [first]
    second = rng.choice([n for n in names if RIVERS[n] < RIVERS[first]] or [first])
    if second == first:
        return f"How long is the {first}?", str(RIVERS[first]), [first]
    return (f"How much longer is the {first} than the {second}?", str(RIVERS[first] - RIVERS[second]),
            [first, second])


def search(query: str) -> str:
    """Searches the knowledge base for facts about a river.

    Args:
        query: the river's name, e.g. "Zor".
    """
    words = {w.strip(".,?!'\"").capitalize() for w in query.split()}
    found = [fact(name) for name in sorted(words & RIVERS.keys())][:3]
    return "; ".join(found) if found else f"no entry for {query.strip()[:40]!r}"
