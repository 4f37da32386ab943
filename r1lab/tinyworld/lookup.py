"""Lookup questions: deep research in miniature. A small knowledge base of made-up facts (river 412 is 37 km long)
that no pretraining document contains, questions that need one or two of them and a subtraction, and
`search`, the tool that finds them. Without the tool a model can only guess a length (chance: about 1 in 90).

  lookup  "How much longer is river 412 than 20 km?"      -> 17 (37 - 20)    search(412) -> "river 412: 37 km"
          "How much longer is river 412 than river 108?"  -> 25 (37 - 12)

Rivers are numbered, not named: a search must copy the river out of the question, and the tiny world's base
copies numbers (its checks copy the equation's) but never learned to copy letters. With three-letter names
("the Zor") the SFT'd model searched for made-up names of its own, whatever the question asked: lookup pass@1
0.003 after 4 epochs on 3,800 lookup traces (docs/TOOLS.md).
"""

from __future__ import annotations

import random

RIVERS_IN_KB = 240


def _knowledge_base() -> dict[str, int]:
    """River number (three digits, unlike any length) -> length in km, the same on every machine (a fixed random
    stream of its own)."""
    rng = random.Random("tinyworld-facts")
    return {str(number): rng.randint(10, 99) for number in rng.sample(range(100, 1000), RIVERS_IN_KB)}


RIVERS = _knowledge_base()


def fact(name: str) -> str:
    return f"river {name}: {RIVERS[name]} km"  # terse: a result's tokens come out of the episode's budget


def lookup_problem(rng: random.Random) -> tuple[str, str, list[str], int | None]:
    """(question, answer, the rivers it needs, the length it compares with: None when it compares two rivers). Every
    question needs a fact and a subtraction; half of them a second fact. (A plain "How long is river 412?" has
    only 240 forms: the test split, drawn first, took most of them, and training saw a handful.)"""
    names = sorted(RIVERS)
    first = rng.choice([n for n in names if RIVERS[n] > 10])
    if rng.random() < 0.5:
        km = rng.randint(10, RIVERS[first] - 1)
        return f"How much longer is river {first} than {km} km?", str(RIVERS[first] - km), [first], km
    second = rng.choice([n for n in names if RIVERS[n] < RIVERS[first]])
    return (f"How much longer is river {first} than river {second}?", str(RIVERS[first] - RIVERS[second]),
            [first, second], None)


def search(query: str) -> str:
    """Searches the knowledge base for facts about a river.

    Args:
        query: the river's number, e.g. "412".
    """
    words = {w.strip(".,?!:;'\"()") for w in query.split()}
    found = [fact(name) for name in sorted(words & RIVERS.keys())][:3]
    return "; ".join(found) if found else f"no entry for {query.strip()[:40]!r}"
