import io
import random

import pytest
import torch
from rich.console import Console

from r1lab.config import SamplingConfig
from r1lab.ui.chat import CHAT_SAMPLING, _hold_back, _stream, _trained_system, chat, split_response

TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
EOS = "<|endoftext|>"


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A random 2-layer Llama with a small BPE tokenizer, saved like an r1lab model directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny")
    rng = random.Random(0)
    words = "the cat sat on a mat two plus three is five so answer wait let me check again".split()
    lines = [f"User: {rng.randint(0, 99)} + {rng.randint(0, 99)}? Assistant: <think> "
             + " ".join(rng.choices(words, k=12)) + f" </think> <answer> {rng.randint(0, 200)} </answer>" for _ in range(300)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=300, special_tokens=[EOS], show_progress=False,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.add_tokens(TAGS)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=EOS)
    tok.save_pretrained(d)
    (d / "r1lab.json").write_text("")  # marker: load with the generic fast tokenizer class
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, vocab_size=len(tok), max_position_embeddings=256,
                         bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(d)
    return d


def _console():
    return Console(file=io.StringIO(), record=True, width=80, color_system=None)


def _feeder(lines):
    prompts = []

    def input_fn(prompt=""):
        prompts.append(prompt)
        if not lines:
            raise EOFError
        return lines.pop(0)

    return input_fn, prompts


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


def test_chat_exit_words_and_ctrl_c(tiny_model_dir):
    for first in ("exit", " QUIT "):
        console = _console()
        input_fn, prompts = _feeder([first, "never asked"])
        chat(str(tiny_model_dir), device="cpu", input_fn=input_fn, console=console)
        assert len(prompts) == 1 and "bye" in console.export_text()

    def ctrl_c(prompt=""):
        raise KeyboardInterrupt

    console = _console()
    chat(str(tiny_model_dir), device="cpu", input_fn=ctrl_c, console=console)
    assert "bye" in console.export_text()


def test_ctrl_c_while_generating_stops_that_answer_only(tiny_model_dir, monkeypatch):
    import r1lab.ui.chat

    def interrupted(chunks, console, prefix, junk=()):
        next(iter(chunks))
        raise KeyboardInterrupt

    monkeypatch.setattr(r1lab.ui.chat, "_stream", interrupted)
    console = _console()
    input_fn, prompts = _feeder(["first", "second"])
    chat(str(tiny_model_dir), system="", sampling=CHAT_SAMPLING.model_copy(update={"max_new_tokens": 200}), device="cpu",
         input_fn=input_fn, console=console)
    out = console.export_text()
    assert out.count("(interrupted)") == 2 and len(prompts) == 3 and "bye" in out


def test_chat_bad_args(tiny_model_dir):
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)
    with pytest.raises(FileNotFoundError, match="no/such/model"):
        chat("./no/such/model", input_fn=lambda p="": "x", console=_console())


def test_trained_system(tmp_path):
    (tmp_path / "r1lab.json").write_text('{"template": "r1-zero", "system": ""}')
    assert _trained_system(str(tmp_path), "r1-zero") == ""
    assert _trained_system(str(tmp_path), "chat") is None  # trained with another template: its text doesn't apply
    (tmp_path / "r1lab.json").write_text("")  # the bare marker file
    assert _trained_system(str(tmp_path), "r1-zero") is None
    assert _trained_system("Qwen/Qwen2.5-0.5B", "r1-zero") is None


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
def test_split_response(text, expected):
    assert split_response(text) == expected


def test_hold_back():
    assert _hold_back("<think> a </thi") == "<think> a "
    assert _hold_back("a <") == "a "
    assert _hold_back("a <thin") == "a "
    assert _hold_back("a </think>") == "a </think>"
    assert _hold_back("a b") == "a b"


def test_stream_tags_split_across_chunks():
    console = _console()
    chunks = [" let", " me ", "check", " </", "th", "ink", "> <answer> 4", " </answer>", EOS]
    assert _stream(iter(chunks), console, "<think>", junk=(EOS,)) == ("let me check", "<answer> 4 </answer>")
    out = console.export_text()
    assert "let me check" in out and "<answer> 4 </answer>" in out
    assert "</th" not in out and EOS not in out and "re-split" not in out
    assert out.index("thinking") < out.index("let me") < out.index("answer") < out.index("<answer>")


def test_stream_unclosed_and_late_close():
    console = _console()
    assert _stream(iter(["<think> a", " b"]), console, "") == ("a b", None)
    assert "never closed" in console.export_text()
    console = _console()  # no prefix, no opening tag: shown as answer until '</think>' re-splits it
    assert _stream(iter(["a b", " </think> c"]), console, "") == ("a b", "c")
    assert "re-split" in console.export_text()
