"""Talk to a model in the terminal and watch it think: the <think> part dimmed, the answer plain."""

from __future__ import annotations

import time
from contextlib import closing

from rich.console import Console
from rich.text import Text

from r1lab.config import EVAL_SAMPLING, SamplingConfig
from r1lab.data.format import END_ANSWER, END_THINK, THINK, apply_template, response_prefix, split_response
from r1lab.engines import make_engine
from r1lab.models import load_model, trained_system

# Sampled as models are evaluated (the paper's protocol), with room for a longer answer than a test's.
CHAT_SAMPLING = SamplingConfig(**EVAL_SAMPLING, max_new_tokens=512)


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


def _hold_back(text: str) -> str:
    """text without a trailing partial tag ('</thi'), which the next chunk may complete."""
    for tag in (END_THINK, THINK):
        for i in range(len(tag) - 1, 0, -1):
            if text.endswith(tag[:i]):
                return text[:-i]
    return text


def _label(console: Console, name: str) -> None:
    console.rule(Text(name, style="dim" if name == "thinking" else "bold green"), style="dim", align="left")


def _show_response(chunks, console: Console, prefix: str) -> str:
    """Prints a response as its text arrives, thinking and answer apart; returns the text the model wrote.

    Each chunk re-splits the whole text and prints only what is new, so tags split across chunks are fine.
    """
    text, shown = prefix, {"think": None, "answer": None}  # None: section not started

    def update(t: str, a: str | None) -> None:
        if shown["answer"] is None and t.startswith(shown["think"] or "") and t != (shown["think"] or ""):
            if shown["think"] is None:
                _label(console, "thinking")
            # soft_wrap: a chunk starts mid-line, so let the terminal wrap rather than rich
            console.print(Text(t[len(shown["think"] or ""):], style="dim italic"), end="", soft_wrap=True)
            shown["think"] = t
        if a is not None and a.startswith(shown["answer"] or ""):
            if shown["answer"] is None:
                if shown["think"] is not None:
                    console.print()
                _label(console, "answer")
            console.print(Text(a[len(shown["answer"] or ""):]), end="", soft_wrap=True)
            shown["answer"] = a

    if THINK in prefix:  # the template opened the thinking: say so before the first token
        _label(console, "thinking")
        shown["think"] = ""
    for chunk in chunks:
        text += chunk
        update(*thinking_and_answer(_hold_back(text)))
    final = thinking_and_answer(text)
    update(*final)
    console.print()
    if final != (shown["think"] or "", shown["answer"]):
        # A late '</think>' with no opening tag turned text already shown as answer into thinking.
        console.print(Text("(re-split after the closing tag)", style="dim"))
        for name, part in zip(("thinking", "answer"), final):
            if part is not None:
                _label(console, name)
                console.print(Text(part, style="dim italic" if name == "thinking" else ""))
    if final[1] is None:
        console.print(Text("(no answer: the model never closed </think>)", style="yellow"))
    return text[len(prefix):]


def chat(model_dir: str, *, template: str = "r1-zero", system: str | None = None, sampling: SamplingConfig = CHAT_SAMPLING,
         device: str = "auto", input_fn=input, console: Console | None = None, engine=None) -> None:
    """Interactive loop: read a question, sample a response, show its thinking dimmed and its answer plain.

    Each turn is independent: R1-Zero models are trained single-turn (one prompt, one response), so
    earlier turns are not fed back. Temperature 0 means greedy decoding. Ends on EOF (Ctrl-D), 'exit',
    'quit' or Ctrl-C at the prompt; Ctrl-C while the model writes stops that response only.
    The system text defaults to the one model_dir's model was trained with (its r1lab.json), if any.

    engine: what writes the responses, an object with `.tokenizer` and `.stream(prompt, sampling)`: an
    iterator over the response's text that stops generating when closed. None: model_dir's model,
    loaded on `device`.
    """
    if template == "r1-zero":  # the format ends there; a base model would otherwise ramble on as "User: ..."
        sampling = sampling.model_copy(update={"stop": [*sampling.stop, END_ANSWER]})
    console = console or Console()
    if engine is None:
        console.print(Text(f"loading {model_dir} ...", style="dim"))
        model, tokenizer = load_model(model_dir, device=device)
        engine = make_engine("torch", model, tokenizer)
    system = trained_system(model_dir, template) if system is None else system
    temperature, max_new_tokens = sampling.temperature, sampling.max_new_tokens
    mode = f"temperature {temperature}, top_p {sampling.top_p}" if temperature > 0 else "greedy"
    console.print(Text(f"{model_dir} · template {template} · {mode} · up to {max_new_tokens} new tokens\n"
                       "each question is answered on its own (no memory of earlier turns); exit, quit or Ctrl-D to leave",
                       style="dim"))
    while True:
        try:
            question = input_fn("\nyou> ").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if question.lower() in ("exit", "quit"):
            break
        if not question:
            continue
        prompt = apply_template(question, template, engine.tokenizer, system)
        t0 = time.time()
        try:
            with closing(engine.stream(prompt, sampling)) as chunks:  # closing it stops the generation
                text = _show_response(chunks, console, response_prefix(prompt))
        except KeyboardInterrupt:
            console.print(Text("\n(interrupted)", style="yellow"))
            continue
        n = len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])  # the text re-tokenized: near enough
        console.print(Text(f"{n} tokens · {n / max(time.time() - t0, 1e-9):.1f} tokens/s", style="dim"))
    console.print(Text("bye", style="dim"))
