"""Talk to a model in the terminal and watch it think: the <think> part dimmed, the answer plain."""

from __future__ import annotations

import time
from contextlib import closing

from rich.console import Console
from rich.text import Text

from r1lab.config import EVAL_SAMPLING, SamplingConfig
from r1lab.data.format import END_ANSWER, apply_template, response_prefix
from r1lab.engines import make_engine
from r1lab.models.io import load_model, trained_system
from r1lab.ui.chat_input import clean, robust_stdin, too_long
from r1lab.ui.display import show_response

# Sampled as models are evaluated (the paper's protocol), with room for a longer answer than a test's.
CHAT_SAMPLING = SamplingConfig(**EVAL_SAMPLING, max_new_tokens=512)


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
    if input_fn is input:
        robust_stdin()
    while True:
        try:
            question = clean(input_fn("\nyou> ")).strip()
        except (EOFError, KeyboardInterrupt):
            break
        except UnicodeDecodeError:  # an input_fn of its own reading bytes: skip the line, keep chatting
            console.print(Text("(that line was not valid text; try again)", style="yellow"))
            continue
        if question.lower() in ("exit", "quit"):
            break
        if not question:
            continue
        prompt = apply_template(question, template, engine.tokenizer, system)
        if (problem := too_long(prompt, engine, max_new_tokens)) is not None:
            console.print(Text(problem, style="yellow"))
            continue
        t0 = time.time()
        try:
            with closing(engine.stream(prompt, sampling)) as chunks:  # closing it stops the generation
                text = show_response(chunks, console, response_prefix(prompt))
        except KeyboardInterrupt:
            console.print(Text("\n(interrupted)", style="yellow"))
            continue
        except (ValueError, RuntimeError) as err:  # one bad line must not end the session
            console.print(Text(f"\n(could not answer that: {err})", style="yellow"))
            continue
        n = len(engine.tokenizer(text, add_special_tokens=False)["input_ids"])  # the text re-tokenized: near enough
        console.print(Text(f"{n} tokens · {n / max(time.time() - t0, 1e-9):.1f} tokens/s", style="dim"))
    console.print(Text("bye", style="dim"))
