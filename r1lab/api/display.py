"""How a response is shown in the terminal: its <think> part dimmed, the answer plain, as the text arrives, and
each tool call with its result on a line of its own between them.

Shared by `r1lab chat` (a local model) and `r1lab chat --api` (any OpenAI-compatible server), and kept
free of torch so that the API client starts fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich.console import Console
from rich.text import Text

from r1lab.data.format import END_THINK, THINK
from r1lab.serve.reasoning import thinking_and_answer


def hold_back(text: str) -> str:
    """text without a trailing partial tag ('</thi'), which the next chunk may complete."""
    for tag in (END_THINK, THINK):
        for i in range(len(tag) - 1, 0, -1):
            if text.endswith(tag[:i]):
                return text[:-i]
    return text


@dataclass
class ToolShown:
    """A call and its result, shown between the text before and after it (a chunk of show_response)."""

    call: str  # as call_text writes it: calculator(7 * 6 + 23)
    result: str

    def line(self) -> Text:
        return Text.assemble(("tool: ", "bold cyan"), (self.call, "cyan"), (" -> ", "dim"),
                             (self.result, "red" if self.result.startswith("error:") else "cyan"))


def call_text(call, written: str) -> str:
    """How a call (a tools/calls.py ToolCall) is shown: name(arguments), a lone text argument bare
    (calculator(7 * 6 + 23)), others as JSON; a call that could not be read, as it was written."""
    if call.error is not None:
        return written.strip()
    values = list(call.arguments.values())
    shown = values[0] if len(values) == 1 and isinstance(values[0], str) else json.dumps(call.arguments, ensure_ascii=False)
    return f"{call.name}({shown})"


def label(console: Console, name: str) -> None:
    """A rule naming the section that follows ('thinking' dimmed, anything else bold)."""
    console.rule(Text(name, style="dim" if name == "thinking" else "bold green"), style="dim", align="left")


def show_response(chunks, console: Console, prefix: str) -> str:
    """Prints a response as its text arrives, thinking and answer apart; returns the text the model wrote.

    `prefix` is what the prompt already wrote of the response ('<think>' for the r1-zero template).
    Each chunk re-splits the whole text and prints only what is new, so tags split across chunks are fine.
    A chunk may be a ToolShown: its line goes between the text before and after it (which are one text, the
    call counted as a space: a call inside the thinking leaves the thinking open).
    """
    text, shown = prefix, {"think": None, "answer": None, "fresh_line": False}  # None: section not started

    def put(new: str, style: str = "") -> None:
        if shown["fresh_line"]:  # just after a tool's line: no leading blanks
            new = new.lstrip()
            shown["fresh_line"] = not new
        # soft_wrap: a chunk starts mid-line, so let the terminal wrap rather than rich
        console.print(Text(new, style=style), end="", soft_wrap=True)

    def update(t: str, a: str | None) -> None:
        if shown["answer"] is None and t.startswith(shown["think"] or "") and t != (shown["think"] or ""):
            if shown["think"] is None:
                label(console, "thinking")
            put(t[len(shown["think"] or ""):], "dim italic")
            shown["think"] = t
        if a is not None and a.startswith(shown["answer"] or ""):
            if shown["answer"] is None:
                if shown["think"] is not None and not shown["fresh_line"]:
                    console.print()
                label(console, "answer")
                shown["fresh_line"] = False
            put(a[len(shown["answer"] or ""):])
            shown["answer"] = a

    if THINK in prefix:  # the template opened the thinking: say so before the first token
        label(console, "thinking")
        shown["think"] = ""
    for chunk in chunks:
        if isinstance(chunk, ToolShown):
            if not shown["fresh_line"] and (shown["think"] or shown["answer"]):
                console.print()
            console.print(chunk.line(), soft_wrap=True)
            text, shown["fresh_line"] = text + " ", True
            continue
        text += chunk
        update(*thinking_and_answer(hold_back(text)))
    final = thinking_and_answer(text)
    update(*final)
    console.print()
    if final != (shown["think"] or "", shown["answer"]):
        # A late '</think>' with no opening tag turned text already shown as answer into thinking.
        console.print(Text("(re-split after the closing tag)", style="dim"))
        for name, part in zip(("thinking", "answer"), final):
            if part is not None:
                label(console, name)
                console.print(Text(part, style="dim italic" if name == "thinking" else ""))
    if final[1] is None:
        console.print(Text("(no answer: the model never closed </think>)", style="yellow"))
    return text[len(prefix):]
