"""Talk to a model in the terminal and watch it think: the <think> part dimmed, the answer plain."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.text import Text
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from r1lab.config import EVAL_SAMPLING, SamplingConfig
from r1lab.data.format import apply_template, response_prefix
from r1lab.models import load_model

THINK, END_THINK = "<think>", "</think>"
# Sampled as models are evaluated (the paper's protocol), with room for a longer answer than a test's.
CHAT_SAMPLING = SamplingConfig(**EVAL_SAMPLING, max_new_tokens=512)


def split_response(text: str) -> tuple[str, str | None]:
    """(thinking, answer) of a response; answer is None while the thinking is still open.

    "<think> a </think> b" -> ("a", "b");  "<think> a" (never closed) -> ("a", None): all thinking;
    "a </think> b" (opening tag pre-filled by the template) -> ("a", "b");  no tags -> ("", text).
    """
    head, closed, tail = text.partition(END_THINK)
    opened = THINK in head
    thinking = head.replace(THINK, "", 1).strip()
    if closed:
        return thinking, tail.strip()
    return (thinking, None) if opened else ("", text.strip())


def _hold_back(text: str) -> str:
    """text without a trailing partial tag ('</thi'), which the next token may complete."""
    for tag in (END_THINK, THINK):
        for i in range(len(tag) - 1, 0, -1):
            if text.endswith(tag[:i]):
                return text[:-i]
    return text


def _label(console: Console, name: str) -> None:
    console.rule(Text(name, style="dim" if name == "thinking" else "bold green"), style="dim", align="left")


def _stream(chunks, console: Console, prefix: str, junk: tuple[str, ...] = ()) -> tuple[str, str | None]:
    """Prints a response as its text arrives and returns its final (thinking, answer).

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
        for j in junk:
            text = text.replace(j, "")
        update(*split_response(_hold_back(text)))
    final = split_response(text)
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
    return final


class _StopFlag(StoppingCriteria):
    """Ends generation at the next token once the event is set (Ctrl-C in the main thread)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _trained_system(model_dir: str, template: str) -> str | None:
    """The system text an r1lab model was trained with (its r1lab.json), so it sees the prompt it knows."""
    try:
        meta = json.loads((Path(model_dir).expanduser() / "r1lab.json").read_text())
    except (OSError, ValueError):  # a hub name, or an empty marker file
        return None
    if isinstance(meta, dict) and meta.get("template", template) == template and isinstance(meta.get("system"), str):
        return meta["system"]
    return None


def chat(model_dir: str, *, template: str = "r1-zero", system: str | None = None, sampling: SamplingConfig = CHAT_SAMPLING,
         device: str = "auto", input_fn=input, console: Console | None = None) -> None:
    """Interactive loop: read a question, sample a response, show its thinking dimmed and its answer plain.

    Each turn is independent: R1-Zero models are trained single-turn (one prompt, one response), so
    earlier turns are not fed back. Temperature 0 means greedy decoding. Ends on EOF (Ctrl-D), 'exit',
    'quit' or Ctrl-C at the prompt; Ctrl-C while the model writes stops that response only.
    """
    temperature, max_new_tokens = sampling.temperature, sampling.max_new_tokens
    console = console or Console()
    console.print(Text(f"loading {model_dir} ...", style="dim"))
    model, tok = load_model(model_dir, device=device)
    system = _trained_system(model_dir, template) if system is None else system
    # Explicit sampling: generate() would otherwise add the model's defaults (top_k=50, ...) unasked.
    options = (dict(do_sample=True, temperature=temperature, top_p=sampling.top_p, top_k=sampling.top_k) if temperature > 0
               else dict(do_sample=False, temperature=None, top_p=None, top_k=None))
    # r1-zero's format ends at </answer>; a base model would otherwise ramble on as "User: ..."
    stop = [*sampling.stop, *(["</answer>"] if template == "r1-zero" else [])]
    if stop:
        options.update(stop_strings=stop, tokenizer=tok)
    junk = tuple({t for t in (tok.eos_token, tok.pad_token) if t})  # decoded with the text, never part of it
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
        prompt = apply_template(question, template, tok, system)
        # a chat template already wrote its special tokens into the text
        inputs = tok(prompt, return_tensors="pt", add_special_tokens=template != "chat").to(model.device)
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=False)
        interrupt, result = threading.Event(), {}

        def generate():
            try:
                result["ids"] = model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                               streamer=streamer, max_new_tokens=max_new_tokens,
                                               pad_token_id=tok.pad_token_id,
                                               stopping_criteria=StoppingCriteriaList([_StopFlag(interrupt)]), **options)
            except BaseException as e:  # re-raised below; end the stream so the main thread doesn't wait forever
                result["error"] = e
                streamer.end()

        thread = threading.Thread(target=generate, daemon=True)
        t0 = time.time()
        thread.start()
        try:
            _stream(streamer, console, response_prefix(prompt), junk)
        except KeyboardInterrupt:
            interrupt.set()
            thread.join()
            console.print(Text("\n(interrupted)", style="yellow"))
            continue
        thread.join()
        if "error" in result:
            raise result["error"]
        n = result["ids"].shape[1] - inputs["input_ids"].shape[1]
        console.print(Text(f"{n} tokens · {n / max(time.time() - t0, 1e-9):.1f} tokens/s", style="dim"))
    console.print(Text("bye", style="dim"))
