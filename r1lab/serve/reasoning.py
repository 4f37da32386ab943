"""A response's reasoning apart from its answer: as `r1lab chat` shows it (`thinking_and_answer`) and as
DeepSeek's API returns it (`reasoning_and_content`).

Kept free of torch and of the server's packages: the terminal chat and its API client import it too.
"""

from __future__ import annotations

from r1lab.data.format import ANSWER, END_ANSWER, END_THINK, THINK, split_response


def thinking_and_answer(text: str) -> tuple[str, str | None]:
    """(thinking, answer) as chat shows a response, both stripped; answer is None while the thinking is open.

    "<think> a </think> b" -> ("a", "b");  "<think> a" (never closed) -> ("a", None): all thinking;
    "a </think> b" (opening tag pre-filled by the template) -> ("a", "b");  no tags -> ("", text): a model
    that answers without thinking.
    """
    if THINK not in text and END_THINK not in text:
        return "", text.strip()
    thinking, rest = split_response(text)
    return thinking.strip(), None if rest is None else rest.strip()


def reasoning_and_content(text: str, prefix: str) -> tuple[str | None, str]:
    """A chat response as DeepSeek's API returns it: (reasoning_content, content).

    reasoning_content is the text inside <think>...</think> (`prefix` is the part the template wrote,
    '<think>' for r1-zero), None when the response has no thinking tags at all; content is the answer
    after </think>, with the tiny world's <answer> tags removed so that a client which ignores the
    reasoning gets a plain answer; "" while the thinking never closed (the response ran out of tokens).
    Both are stripped.
    """
    raw = prefix + text
    thinking, answer = thinking_and_answer(raw)
    content = "" if answer is None else answer.replace(ANSWER, "").replace(END_ANSWER, "").strip()
    return (thinking if THINK in raw or END_THINK in raw else None), content
