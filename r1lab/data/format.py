"""The text format of reasoning: prompt templates and parsing of `<think>…</think> <answer>…</answer>` responses."""

from __future__ import annotations

R1_ZERO_SYSTEM = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> "
    "tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here </answer>."
)
TEMPLATES = ("r1-zero", "chat", "none")
THINK, END_THINK, ANSWER, END_ANSWER = "<think>", "</think>", "<answer>", "</answer>"
TAGS = (THINK, END_THINK, ANSWER, END_ANSWER)


def apply_template(prompt: str, template: str, tokenizer=None, system: str | None = None) -> str:
    """Wraps a task prompt for generation.

    r1-zero: the paper's plain template, ending in "Assistant: <think>" so the model starts thinking.
    chat:    the tokenizer's chat template with a generation prompt.
    none:    the prompt text as is.
    """
    if template == "r1-zero":
        system = R1_ZERO_SYSTEM if system is None else system
        return f"{system} User: {prompt}. Assistant: <think>".lstrip()
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat_template; use template=r1-zero or template=none")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if template == "none":
        return prompt
    raise ValueError(f"unknown template '{template}' (choose one of {', '.join(TEMPLATES)})")


def response_prefix(prompt_text: str) -> str:
    """The part of the response the template already wrote (r1-zero pre-fills '<think>')."""
    return THINK if prompt_text.rstrip().endswith(THINK) else ""


def split_response(text: str) -> tuple[str, str | None]:
    """(thinking, rest): the text before the first </think>, from just after a <think> in it (a response
    may lack that tag: the r1-zero template pre-fills it in the prompt), and the text after that
    </think>, None while the thinking is unclosed. Neither part is stripped.

    "<think> a </think> b" -> (" a ", " b");  "a </think> b" -> ("a ", " b");  "<think> a" -> (" a", None)
    """
    head, closed, rest = text.partition(END_THINK)
    if THINK in head:
        head = head.split(THINK, 1)[1]
    return head, rest if closed else None


def thinking_part(text: str) -> str:
    """The chain of thought with any tags left in it blanked out, for counting its words.

    Without a closing </think> the whole text counts as thinking: a truncated response is all thought,
    and an answer block in it is thought too.
    """
    head, _ = split_response(text)
    for tag in TAGS:
        head = head.replace(tag, " ")
    return head


def extract_answer(response: str) -> str | None:
    """Stripped text of the last complete <answer>…</answer> block, or None if there is none.

    Built from str.find/rfind only, so it is linear-time on any input (no regex backtracking).
      - repeated blocks: the last one wins ("<answer>1</answer><answer>2</answer>" -> "2")
      - nested blocks: the innermost of the last one ("<answer><answer>5</answer></answer>" -> "5")
      - an unclosed trailing "<answer>" is ignored; the last closed block before it still counts
      - a "</answer>" with no "<answer>" before it -> None
      - an empty block -> "" (callers treat that as no answer)
    """
    close = response.rfind("</answer>")
    if close < 0:
        return None
    open_ = response.rfind("<answer>", 0, close)
    if open_ < 0:
        return None
    start = open_ + len("<answer>")
    return response[start : response.find("</answer>", start)].strip()


def reflects(text: str, phrases: list[str]) -> bool:
    """Whether a response re-examines its work: one of `phrases` ("wait", "recheck", ...) in it, any case."""
    low = text.lower()
    return any(p.lower() in low for p in phrases)
