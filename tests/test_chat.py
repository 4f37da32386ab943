import copy
import io
import json
import threading

import pytest
import torch
from hub_cache import TOOLS_CHAT_TEMPLATE
from rich.console import Console

from r1lab.api.terminal_chat import CHAT_SAMPLING, chat
from r1lab.config import SamplingConfig
from r1lab.data.format import apply_template
from r1lab.engines.base import Rollout
from r1lab.engines.streaming import stream_text
from r1lab.models.io import load_tokenizer, trained_system
from r1lab.serve.reasoning import thinking_and_answer
from r1lab.tools.calls import PLAIN

EOS = "<|endoftext|>"


def _console(file=None):
    return Console(file=file or io.StringIO(), record=True, width=80, color_system=None)


def _feeder(lines):
    prompts = []

    def input_fn(prompt=""):
        prompts.append(prompt)
        if not lines:
            raise EOFError
        return lines.pop(0)

    return input_fn, prompts


def _turns(console) -> str:
    """What chat printed after its banner."""
    out = console.export_text()
    return out[out.index("Ctrl-D to leave"):]


class ScriptedEngine:
    """Streams given responses, one per question: each a list of text chunks, where an exception class is
    raised at its place (Ctrl-C arriving while the model writes). Counts the streams closed early."""

    def __init__(self, tokenizer, *responses):
        self.tokenizer, self.responses = tokenizer, list(responses)
        self.prompts, self.samplings, self.closed_early = [], [], 0

    def stream(self, prompt, sampling):
        self.prompts.append(prompt)
        self.samplings.append(sampling)
        try:
            for chunk in self.responses.pop(0):
                if isinstance(chunk, type):
                    raise chunk
                yield chunk
        except GeneratorExit:
            self.closed_early += 1
            raise


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


@pytest.mark.parametrize("temperature", [0.8, 0.0])
def test_chat_end_to_end(tiny_model_dir, temperature):
    torch.manual_seed(1)
    console = _console()
    input_fn, prompts = _feeder(["what is 2 + 3?", "", "and 7 + 1?"])
    # system="": the paper's long system text would overflow this model's 256 positions
    chat(str(tiny_model_dir), system="", sampling=SamplingConfig(temperature=temperature, top_p=0.95, max_new_tokens=24),
         device="cpu", input_fn=input_fn, console=console)
    out = console.export_text()
    assert len(prompts) == 4  # two questions, one blank line (skipped), then EOF
    assert out.count("thinking") >= 2  # r1-zero pre-fills <think>: every turn opens with thinking
    assert out.count("tokens/s") == 2
    assert "greedy" in out if temperature == 0 else "temperature 0.8" in out
    assert out.rstrip().endswith("bye")
    assert EOS not in out


def test_chat_samples_as_asked_with_the_trained_system_text(tokenizer, tmp_path):
    (tmp_path / "r1lab.json").write_text('{"template": "r1-zero", "system": "Be brief."}')
    engine = ScriptedEngine(tokenizer, ["a </think> <answer> 1 </answer>"], ["2"])
    input_fn, _ = _feeder(["q1"])
    chat(str(tmp_path), sampling=CHAT_SAMPLING.model_copy(update={"temperature": 0, "max_new_tokens": 9}), input_fn=input_fn, console=_console(), engine=engine)
    assert engine.prompts == [apply_template("q1", "r1-zero", system="Be brief.")]
    assert engine.samplings == [SamplingConfig(temperature=0, top_p=0.95, top_k=0, max_new_tokens=9, stop=["</answer>"])]
    input_fn, _ = _feeder(["q2"])
    chat(str(tmp_path), template="none", system="", input_fn=input_fn, console=_console(), engine=engine)
    assert engine.prompts[-1] == "q2" and engine.samplings[-1].stop == [] and engine.samplings[-1].temperature == 0.6


def test_chat_exit_words_and_ctrl_c_at_the_prompt(tokenizer, tmp_path):
    for first in ("exit", " QUIT "):
        console, engine = _console(), ScriptedEngine(tokenizer)
        input_fn, prompts = _feeder([first, "never asked"])
        chat(str(tmp_path), input_fn=input_fn, console=console, engine=engine)
        assert len(prompts) == 1 and "bye" in console.export_text() and engine.prompts == []

    def ctrl_c(prompt=""):
        raise KeyboardInterrupt

    console = _console()
    chat(str(tmp_path), input_fn=ctrl_c, console=console, engine=ScriptedEngine(tokenizer))
    assert "bye" in console.export_text()


def test_ctrl_c_while_generating_stops_that_answer_only(tokenizer, tmp_path):
    engine = ScriptedEngine(tokenizer, ["<think> a", KeyboardInterrupt], [" b", KeyboardInterrupt], ["c </think> 5"])
    console = _console()
    input_fn, prompts = _feeder(["first", "second", "third"])
    chat(str(tmp_path), input_fn=input_fn, console=console, engine=engine)
    out = _turns(console)
    assert out.count("(interrupted)") == 2 and len(prompts) == 4 and out.count("tokens/s") == 1 and "bye" in out


def test_ctrl_c_while_printing_closes_the_stream(tokenizer, tmp_path):
    """Ctrl-C can land in chat's own code while the model is still writing: the stream is closed (which
    stops the generation) and the next question is asked."""

    class CtrlCOnFirstAnswer(io.StringIO):
        fired = False

        def write(self, s):
            if "FOUR" in s and not self.fired:
                self.fired = True
                raise KeyboardInterrupt
            return super().write(s)

    engine = ScriptedEngine(tokenizer, ["a </think>", " FOUR", " more"], ["b </think> 5"])
    file = CtrlCOnFirstAnswer()
    input_fn, prompts = _feeder(["first", "second"])
    chat(str(tmp_path), input_fn=input_fn, console=_console(file), engine=engine)
    assert engine.closed_early == 1 and len(prompts) == 3
    assert "(interrupted)" in file.getvalue() and "bye" in file.getvalue()


def test_tags_split_across_chunks_are_shown_whole(tokenizer, tmp_path):
    chunks = [" let", " me ", "check", " </", "th", "ink", "> <answer> 4", " </answer>"]
    console = _console()
    chat(str(tmp_path), input_fn=_feeder(["q"])[0], console=console, engine=ScriptedEngine(tokenizer, chunks))
    out = _turns(console)
    assert "let me check" in out and "<answer> 4 </answer>" in out
    assert "</th" not in out and "re-split" not in out and "never closed" not in out
    assert out.index("thinking") < out.index("let me") < out.index("answer") < out.index("<answer>")


def test_unclosed_thinking_and_a_late_close(tokenizer, tmp_path):
    console = _console()
    chat(str(tmp_path), template="none", system="", input_fn=_feeder(["q"])[0], console=console,
         engine=ScriptedEngine(tokenizer, ["<think> a", " b"]))
    assert "never closed" in _turns(console)
    console = _console()  # no prefix, no opening tag: shown as answer until '</think>' re-splits it
    chat(str(tmp_path), template="none", system="", input_fn=_feeder(["q"])[0], console=console,
         engine=ScriptedEngine(tokenizer, ["a b", " </think> c"]))
    out = _turns(console)
    assert "re-split" in out and out.index("thinking") < out.rindex("a b") < out.rindex("c")


def test_chat_bad_args(tiny_model_dir):
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)
    with pytest.raises(FileNotFoundError, match="no/such/model"):
        chat("./no/such/model", input_fn=lambda p="": "x", console=_console())


def test_trained_system(tmp_path):
    (tmp_path / "r1lab.json").write_text('{"template": "r1-zero", "system": ""}')
    assert trained_system(str(tmp_path), "r1-zero") == "" and trained_system(str(tmp_path)) == ""
    assert trained_system(str(tmp_path), "chat") is None  # trained with another template: its text doesn't apply
    (tmp_path / "r1lab.json").write_text("")  # the bare marker file
    assert trained_system(str(tmp_path), "r1-zero") is None
    assert trained_system("Qwen/Qwen2.5-0.5B", "r1-zero") is None


@pytest.mark.parametrize("text, expected", [
    ("<think> a </think> <answer> 4 </answer>", ("a", "<answer> 4 </answer>")),
    ("<think> still going", ("still going", None)),  # never closed: all thinking
    ("<think>", ("", None)),
    ("<think></think>", ("", "")),
    ("reasoning </think> 42", ("reasoning", "42")),  # opening tag pre-filled by the template
    ("just an answer", ("", "just an answer")),
    ("", ("", "")),
    ("  \n<think>\n x \n</think>\n\n y \n", ("x", "y")),
    ("<think> a </think> b </think> c", ("a", "b </think> c")),  # only the first close counts
    ("<think> a <think> b </think> c", ("a <think> b", "c")),
    ("<think> 1 < 2 and </thin", ("1 < 2 and </thin", None)),  # a partial tag is just text
    ("<answer> 5 </answer>", ("", "<answer> 5 </answer>")),
])
def test_thinking_and_answer(text, expected):
    assert thinking_and_answer(text) == expected


def _live_streams() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "r1lab-stream"]


def test_stream_text_ends_when_asked_or_closed(tiny):
    model, tok = tiny
    prompt = apply_template("Compute 3 + 4", "r1-zero", system="")
    greedy = SamplingConfig(temperature=0, max_new_tokens=200)
    full = "".join(stream_text(model, tok, prompt, greedy))
    assert len(tok(full, add_special_tokens=False)["input_ids"]) > 150  # the untrained model runs on: no early EOS

    stop = threading.Event()
    chunks = stream_text(model, tok, prompt, greedy, stop)
    first = next(chunks)
    stop.set()
    cut = first + "".join(chunks)
    assert full.startswith(cut) and len(cut) < len(full) and not _live_streams()

    chunks = stream_text(model, tok, prompt, greedy)
    next(chunks)
    chunks.close()  # what chat does on Ctrl-C
    assert not _live_streams()

    with pytest.raises(ValueError, match="no room to generate"):
        next(stream_text(model, tok, "1 " * 300, greedy))


class EpisodeEngine:
    """The engine side of a tool episode (generate_ids, as run_episodes calls it) with written turns: each call
    writes the next of `turns`, tokenised. Records each call's prompt (as text) and stop strings."""

    def __init__(self, tokenizer, *turns):
        self.tokenizer, self.turns, self.prompts, self.stops = tokenizer, list(turns), [], []

    def generate_ids(self, prompt_ids, sampling, n=1):
        self.prompts.append(self.tokenizer.decode(prompt_ids[0]))
        self.stops.append(list(sampling.stop))
        ids = self.tokenizer(self.turns.pop(0), add_special_tokens=False)["input_ids"]
        return Rollout(prompt_ids=[list(p) for p in prompt_ids], completion_ids=torch.tensor([ids]),
                       completion_mask=torch.ones(1, len(ids), dtype=torch.long), logprobs=torch.zeros(1, len(ids)),
                       texts=[""], truncated=[False], n=1)


def test_chat_runs_a_tool_models_calls_and_shows_them_with_their_results(tokenizer, tmp_path):
    """A tiny-world tool model (plain format): its r1lab.json names its tools; each call is run between turns and
    shown apart from the thinking and the answer."""
    tok = copy.deepcopy(tokenizer)
    tok.add_tokens(list(PLAIN))  # as the r1-tools recipe's models have them
    (tmp_path / "r1lab.json").write_text(json.dumps({"template": "r1-zero", "system": "", "tools": ["r1lab.tools:calculator"],
                                                     "max_turns": 3}))
    engine = EpisodeEngine(tok, " 7 * 6 + 23 = <tool>calculator(7 * 6 + 23)</tool>",
                           " so it is 65 </think> <answer> 65 </answer>")
    console = _console()
    chat(str(tmp_path), input_fn=_feeder(["What is 7 * 6 + 23?"])[0], console=console, engine=engine)
    everything = console.export_text()
    out = everything[everything.index("Ctrl-D to leave"):]
    assert "tools calculator, up to 3 turns" in " ".join(everything.split()) and "tool: calculator(7 * 6 + 23) -> 65" in out
    assert out.index("thinking") < out.index("7 * 6 + 23 =") < out.index("tool: calculator") < out.index("so it is 65") \
           < out.index("answer") < out.index("<answer> 65 </answer>")
    assert "<tool>" not in out and "<result>" not in out and "never closed" not in out
    assert engine.prompts[1].endswith("<tool>calculator(7 * 6 + 23)</tool><result>65</result>")  # the result, then on
    assert engine.stops[0] == ["</answer>", "</tool>"]


def test_chat_with_tools_given_to_a_chat_template_model(tokenizer, tmp_path):
    """--tools on a model that records none: Qwen's call format, the schemas in the prompt, an error shown as such."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = TOOLS_CHAT_TEMPLATE
    engine = EpisodeEngine(tok, '<tool_call>\n{"name": "calculator", "arguments": {"expression": "1 / 0"}}\n</tool_call>',
                           "It cannot be computed.")
    console = _console()
    chat(str(tmp_path), template="chat", system="", input_fn=_feeder(["What is 1 / 0?"])[0], console=console, engine=engine,
         tools=["r1lab.tools:calculator"])
    out = _turns(console)
    assert "<tools>" in engine.prompts[0] and '"name": "calculator"' in engine.prompts[0]
    assert "tool: calculator(1 / 0) -> error: calculator: division by zero" in out and "It cannot be computed." in out
    # the result goes on as the template's own tool turn, as in training (episodes.chat_result_markers)
    assert engine.prompts[1].endswith("</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nerror: calculator: "
                                      "division by zero\n</tool_response><|im_end|>\n<|im_start|>assistant\n")
