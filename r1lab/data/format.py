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


def apply_template(prompt: str, template: str, tokenizer=None, system: str | None = None,
                   tools: list[dict] | None = None) -> str:
    """Wraps a task prompt for generation.

    r1-zero: the paper's plain template, ending in "Assistant: <think>" so the model starts thinking.
    chat:    the tokenizer's chat template with a generation prompt.
    none:    the prompt text as is.
    """
    if template == "r1-zero":
        system = R1_ZERO_SYSTEM if system is None else system
        return f"{system} User: {prompt}. Assistant: <think>".lstrip()
    if template == "chat":
        _need_chat_template(tokenizer)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False, add_generation_prompt=True)
    if tools:
        raise ValueError(f"tool schemas go into a chat template's prompt; template '{template}' has no place for them")
    if template == "none":
        return prompt
    raise ValueError(f"unknown template '{template}' (choose one of {', '.join(TEMPLATES)})")


def render_prompt(example, template: str, tokenizer=None, system: str | None = None, tools: list[dict] | None = None) -> str:
    """An Example's prompt for generation: a conversational one (example.messages) through conversation_prompt,
    a text one through apply_template. `tools`: schemas a chat template shows the model (episodes with tools)."""
    if example.messages is not None:
        return conversation_prompt(list(example.messages), template, tokenizer, system, tools)
    return apply_template(example.prompt, template, tokenizer, system, tools)


def without_reasoning(text: str) -> str:
    """A response as it is fed back in a later turn: the text after its first </think>; all of it when it
    has no tags; nothing when its thinking never closed. R1 models are given earlier answers without
    their reasoning (DeepSeek's advice for multi-turn use)."""
    _, rest = split_response(text)
    if rest is None:
        return "" if THINK in text else text
    return rest


def conversation_prompt(messages: list[dict], template: str, tokenizer=None, system: str | None = None,
                        tools: list[dict] | None = None) -> str:
    """A conversation ({"role", "content"} dicts, ending with the user's turn) as a prompt to continue.

    Earlier assistant turns keep their answer only (`without_reasoning`). A system message in `messages`
    wins over `system`. r1-zero writes the turns one after another in the paper's plain format,
    "{system} User: q1. Assistant: a1 User: q2. Assistant: <think>", so a one-question conversation is
    exactly `apply_template(q, "r1-zero", system=system)`; chat uses the tokenizer's chat template;
    none joins the texts with blank lines.

    Tools are the chat template's: `tools` (OpenAI's function schemas) go to its `tools=`, and the conversation
    may hold assistant turns with `tool_calls` (arguments as dicts) and `tool` turns (results), and end with one.
    """
    turns = [m for m in messages if m["role"] != "system"]
    system = next((m["content"] for m in messages if m["role"] == "system"), system)
    if not turns or turns[-1]["role"] not in ("user", "tool"):
        raise ValueError("a conversation to continue must end with a user message (or a tool's result)")
    if template != "chat" and (tools or any(m["role"] == "tool" or m.get("tool_calls") for m in turns)):
        raise ValueError(f"tools, tool calls and their results need a chat template; template '{template}' has no place for them")
    turns = [{"role": m["role"], "content": without_reasoning(m["content"]) if m["role"] == "assistant" else m["content"],
              **{key: m[key] for key in ("tool_calls", "tool_call_id") if m.get(key)}} for m in turns]
    if template == "r1-zero":  # earlier turns go between the system text and the last question
        history = " ".join(f"User: {m['content']}." if m["role"] == "user" else f"Assistant: {m['content'].strip()}"
                           for m in turns[:-1])
        system = R1_ZERO_SYSTEM if system is None else system
        return apply_template(turns[-1]["content"], "r1-zero", system=" ".join(part for part in (system, history) if part))
    if template == "chat":
        _need_chat_template(tokenizer)
        return tokenizer.apply_chat_template(([{"role": "system", "content": system}] if system else []) + turns,
                                             tools=tools or None, tokenize=False, add_generation_prompt=True)
    if template == "none":
        return "\n\n".join(m["content"] for m in turns)
    raise ValueError(f"unknown template '{template}' (choose one of {', '.join(TEMPLATES)})")


def _need_chat_template(tokenizer) -> None:
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise ValueError("template 'chat' needs a tokenizer with a chat_template; use template=r1-zero or template=none")


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
