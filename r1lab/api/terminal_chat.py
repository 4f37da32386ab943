"""Talk to a model in the terminal and watch it think: the <think> part dimmed, the answer plain; a model that
calls tools has each call run (engines/episodes.py, as in training) and shown with its result."""

from __future__ import annotations

import functools
import re
import time
from contextlib import closing

from rich.console import Console
from rich.text import Text

from r1lab.api.chat_input import clean, context_of, robust_stdin, too_long
from r1lab.api.display import ToolShown, call_text, show_response
from r1lab.config import EVAL_SAMPLING, SamplingConfig
from r1lab.data.format import END_ANSWER, apply_template, conversation_prompt, response_prefix
from r1lab.engines import make_engine
from r1lab.engines.episodes import Turns, run_episodes
from r1lab.models.io import load_model, trained_system, trained_tools
from r1lab.tools.box import ToolBox, load_tools
from r1lab.tools.calls import parse_call

# Sampled as models are evaluated (the paper's protocol), with room for a longer answer than a test's.
CHAT_SAMPLING = SamplingConfig(**EVAL_SAMPLING, max_new_tokens=512)
DEFAULT_TOOL_TURNS = 4  # generations per answer when tools are given to a model that records none


def chat(model_dir: str, *, template: str = "r1-zero", system: str | None = None, sampling: SamplingConfig = CHAT_SAMPLING,
         device: str = "auto", input_fn=input, console: Console | None = None, engine=None, tools: list[str] | None = None,
         max_turns: int | None = None) -> None:
    """Interactive loop: read a question, sample a response, show its thinking dimmed and its answer plain.

    Each turn is independent: R1-Zero models are trained single-turn (one prompt, one response), so
    earlier turns are not fed back. Temperature 0 means greedy decoding. Ends on EOF (Ctrl-D), 'exit',
    'quit' or Ctrl-C at the prompt; Ctrl-C while the model writes stops that response only.
    The system text defaults to the one model_dir's model was trained with (its r1lab.json), if any.

    Tools: those the model was trained to call (its r1lab.json) and `tools` (import paths, module:function);
    with any, each answer is an episode of up to `max_turns` generations (default: the model's, else 4) whose
    calls are run between them, and each call is shown with its result (`tool_episodes`).

    engine: what writes the responses, an object with `.tokenizer` and `.stream(prompt, sampling)`: an
    iterator over the response's text that stops generating when closed (and `.generate_ids`, as the
    engines have it, for tools). None: model_dir's model, loaded on `device`.
    """
    if template == "r1-zero":  # the format ends there; a base model would otherwise ramble on as "User: ..."
        sampling = sampling.model_copy(update={"stop": [*sampling.stop, END_ANSWER]})
    console = console or Console()
    episodes = tool_episodes(model_dir, template, tools, max_turns)
    if engine is None:
        console.print(Text(f"loading {model_dir} ...", style="dim"))
        model, tokenizer = load_model(model_dir, device=device)
        engine = make_engine("torch", model, tokenizer)
    system = trained_system(model_dir, template) if system is None else system
    temperature, max_new_tokens = sampling.temperature, sampling.max_new_tokens
    mode = f"temperature {temperature}, top_p {sampling.top_p}" if temperature > 0 else "greedy"
    using = "" if episodes is None else f" · tools {', '.join(episodes.toolbox.tools)}, up to {episodes.max_turns} turns"
    console.print(Text(f"{model_dir} · template {template} · {mode} · up to {max_new_tokens} new tokens{using}\n"
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
        prompt = question_prompt(question, template, engine.tokenizer, system, episodes)
        if (problem := too_long(prompt, engine, max_new_tokens)) is not None:
            console.print(Text(problem, style="yellow"))
            continue
        t0 = time.time()
        try:
            n, _ = answer(engine, prompt, sampling, console, episodes)
        except KeyboardInterrupt:
            console.print(Text("\n(interrupted)", style="yellow"))
            continue
        except (ValueError, RuntimeError) as err:  # one bad line must not end the session
            console.print(Text(f"\n(could not answer that: {err})", style="yellow"))
            continue
        console.print(Text(f"{n} tokens · {n / max(time.time() - t0, 1e-9):.1f} tokens/s", style="dim"))
    console.print(Text("bye", style="dim"))


def tool_episodes(model_dir: str, template: str, tools: list[str] | None, max_turns: int | None) -> Turns | None:
    """How chat runs a model's tool calls: the tools its r1lab.json records and `tools`, in the format the
    template calls for (the plain <tool>...</tool> with r1-zero and none, Qwen's <tool_call> with a chat
    template), up to `max_turns` generations (default: the model's); None when there are no tools."""
    trained, trained_turns = trained_tools(model_dir)
    names = list(dict.fromkeys([*trained, *(tools or [])]))
    if not names:
        return None
    return Turns.of(ToolBox(load_tools(names)), max_turns or (trained_turns if trained else DEFAULT_TOOL_TURNS), template)


def question_prompt(question: str, template: str, tokenizer, system: str | None, episodes: Turns | None) -> str:
    """The prompt for one question; a chat template is shown the tools' schemas (a tiny-world model learned
    its tools without them)."""
    if episodes is not None and template == "chat":
        schemas = episodes.schemas
        return conversation_prompt([{"role": "user", "content": question}], template, tokenizer, system, tools=schemas)
    return apply_template(question, template, tokenizer, system)


def answer(engine, prompt: str, sampling: SamplingConfig, console: Console, episodes: Turns | None) -> tuple[int, str]:
    """Writes and shows the response to `prompt`; returns how many tokens the model wrote and the text. Without tools it is
    shown as it is sampled; with tools the episode runs whole (its turns as in training), then is shown."""
    if episodes is None:
        with closing(engine.stream(prompt, sampling)) as chunks:  # closing it stops the generation
            text = show_response(chunks, console, response_prefix(prompt))
        return len(engine.tokenizer(text, add_special_tokens=False)["input_ids"]), text  # re-tokenized: near enough
    ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    limit = context_of(engine)
    budget = sampling.max_new_tokens if limit is None else min(sampling.max_new_tokens, limit - len(ids))
    markers = episodes.markers_for(engine.tokenizer)  # a chat template's results are its own tool turns, as in training
    rollout = run_episodes(engine, [ids], sampling, 1, episodes.toolbox, max_turns=episodes.max_turns, budget=budget,
                           markers=markers, style=episodes.style)
    special = [t for t in engine.tokenizer.all_special_tokens if t]
    visible = tuple(functools.reduce(lambda m, t: m.replace(t, ""), special, m) for m in markers)  # as texts hold them
    show_response(episode_chunks(rollout.texts[0], episodes, visible), console, response_prefix(prompt))
    return int(rollout.loss_mask.sum()), rollout.texts[0]  # the model's tokens, not the results'


def episode_chunks(text: str, episodes: Turns, markers: tuple[str, str, str, str] | None = None):
    """An episode's text as show_response's chunks: the text between calls, and each call with its result. A
    call is what follows the last opening marker before its close, as run_episodes reads it. `markers`: as the
    text holds them (special tokens removed); None: the episodes' own."""
    call, end, result, result_end = (re.escape(marker) for marker in markers or episodes.markers)
    end_of_text = 0
    for match in re.finditer(f"{call}((?:(?!{call}).)*?){end}\\s*{result}(.*?){result_end}", text, re.S):
        yield text[end_of_text:match.start()]
        written = match.group(1)
        yield ToolShown(call_text(parse_call(written.strip(), episodes.toolbox.parameters, episodes.style), written),
                        match.group(2).strip())
        end_of_text = match.end()
    yield text[end_of_text:]
