import json

import pytest
import torch

from r1lab.config import SamplingConfig, SFTConfig
from r1lab.data.format import apply_template
from r1lab.engines import make_engine
from r1lab.models.io import load_model, load_tokenizer
from r1lab.sft import data as sft_data
from r1lab.sft import train as sft

PAIRS = [  # (question, completion as our data writes it: starting with <think>)
    ("3+4", "<think> 3+4=7 </think> <answer> 7 </answer>"),
    ("9-5", "<think> 9-5=4 </think> <answer> 4 </answer>"),
    ("2*6", "<think> 2*6=12 </think> <answer> 12 </answer>"),
]
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def _cfg(**kw):
    base = dict(epochs=1, lr=1e-2, warmup_steps=0, batch_size=4, micro_batch_size=2, max_len=128, eval_fraction=0.0,
                eval_every=0, checkpoint_every=0)
    base.update(kw)
    return SFTConfig(**base)


def _load(rows, tok=None, template="r1-zero", system=""):
    """load_sft_examples with the run's template and system ("": the tiny model's short prompt)."""
    return sft_data.load_sft_examples(rows, _cfg(), tok, template=template, system=system)


def _rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tok(tiny_model_dir):
    return load_tokenizer(str(tiny_model_dir))


def test_labels_mask_prompt_and_padding_and_keep_eos(tok):
    prompt, completion = "User: 3+4. Assistant: <think>", " 3+4=7 </think> <answer> 7 </answer>"
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    n_completion = len(tok(completion, add_special_tokens=False)["input_ids"])
    assert (n_prompt, n_completion) == (10, 12)  # the tiny tokenizer's counts; the checks below rely on them
    long = sft_data.tokenize_example(tok, {"prompt": prompt, "completion": completion}, max_len=64)
    short = sft_data.tokenize_example(tok, {"prompt": prompt, "completion": " 7"}, max_len=64)
    batch = sft_data.collate([long, short], tok.pad_token_id)
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == (2, n_prompt + n_completion + 1)
    eos = tok.eos_token_id
    assert ids[0, -1] == eos and labels[0, -1] == eos  # the model learns to stop
    assert (labels[0, :n_prompt] == -100).all()
    assert torch.equal(labels[0, n_prompt:], ids[0, n_prompt:])
    n_short = len(short["input_ids"])  # prompt + " 7" + EOS
    assert n_short == n_prompt + 2 and mask[1].sum() == n_short
    assert (labels[1, :n_prompt] == -100).all() and (labels[1, n_short:] == -100).all()  # prompt, then pads (= EOS id)
    assert labels[1, n_short - 1] == eos and labels[1, n_prompt:n_short].ne(-100).all()
    assert sft_data.count_targets([long, short]) == (n_completion + 1) + 2

    cut = sft_data.tokenize_example(tok, {"prompt": prompt, "completion": completion}, max_len=n_prompt + 3)
    assert cut["truncated"] and len(cut["input_ids"]) == n_prompt + 3 and cut["input_ids"][-1] != eos
    rows, truncated, dropped = sft_data.tokenize_examples(tok, [{"prompt": prompt, "completion": completion}] * 2
                                                      + [{"prompt": prompt * 3, "completion": completion}], n_prompt + 3)
    assert (len(rows), truncated, dropped) == (2, 2, 1)


def test_r1_zero_prompt_keeps_one_think_tag(tmp_path, tok):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"prompt": q, "completion": c}) + "\n" for q, c in PAIRS))
    examples = _load(path)
    assert examples[0]["prompt"] == "User: 3+4. Assistant: <think>"
    assert examples[0]["completion"] == " 3+4=7 </think> <answer> 7 </answer>"
    ids = sft_data.tokenize_example(tok, examples[0], 64)["input_ids"]
    assert tok.convert_ids_to_tokens(ids).count("<think>") == 1
    import datasets

    datasets.Dataset.from_list([{"prompt": q, "completion": c} for q, c in PAIRS]).save_to_disk(str(tmp_path / "saved"))
    assert _load(tmp_path / "saved") == examples
    plain = _load([{"prompt": "3+4", "completion": PAIRS[0][1]}], template="none")
    assert plain[0] == {"prompt": "3+4", "completion": PAIRS[0][1]}  # no <think> in the prompt: keep the completion's


def test_chat_rows_use_the_chat_template(tok):
    tok.chat_template = CHAT_TEMPLATE
    rows = [{"messages": [{"role": "user", "content": "3+4"}, {"role": "assistant", "content": "7"}]}]
    ex = _load(rows, tok, template="chat", system="be brief")
    assert ex == [{"prompt": "<system>be brief\n<user>3+4\n<assistant>", "completion": "7"}]


@pytest.mark.parametrize("rows, cfg, match", [
    ([{"prompt": "a", "completion": "b"}, {"prompt": "a"}], {}, r"rows: row 1 has no 'completion' field"),
    ([{"prompt": "a", "completion": "  "}], {}, r"row 0 has an empty or non-text 'completion'"),
    ([{"question": "a", "completion": "b"}], {}, r"row 0 has no 'prompt' field .*\['completion', 'question'\]"),
    ([{"messages": [{"role": "user", "content": "hi"}]}], {"template": "chat"}, r"row 0 'messages' has no assistant"),
    ([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}], {},
     r"row 0 'messages' is a chat; chat rows need template='chat'"),
])
def test_bad_rows_name_the_field_and_row(tok, rows, cfg, match):
    tok.chat_template = CHAT_TEMPLATE
    with pytest.raises(ValueError, match=match):
        _load(rows, tok, **cfg)


def test_bad_paths_and_configs(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        _load(tmp_path / "nope.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type '.txt'"):
        _load(tmp_path / "d.txt")
    with pytest.raises(ValueError, match=r"micro_batch_size \(3\) must divide batch_size \(4\)"):
        _cfg(micro_batch_size=3)


def test_gradient_accumulation_is_exact(tiny, tok):
    model, _ = tiny
    examples = _load([{"prompt": q, "completion": c * (i + 1)} for i, (q, c) in enumerate(PAIRS + PAIRS[:1])])
    rows, _, _ = sft_data.tokenize_examples(tok, examples, 128)
    assert len({len(r["input_ids"]) for r in rows}) > 1  # micro-batches pad differently

    def loss_and_grads(micro):
        model.zero_grad(set_to_none=True)
        loss, tokens = sft.accumulate_gradients(model, rows, micro, tok.pad_token_id)
        return loss, tokens, [p.grad.clone() for p in model.parameters()]

    loss2, tokens2, grads2 = loss_and_grads(2)
    loss4, tokens4, grads4 = loss_and_grads(4)
    assert tokens2 == tokens4 == sft_data.count_targets(rows)
    assert loss2 == pytest.approx(loss4, rel=1e-5)
    assert loss4 == pytest.approx(sft.evaluate_loss(model, rows, 1, tok.pad_token_id), rel=1e-5)
    for g2, g4 in zip(grads2, grads4):
        torch.testing.assert_close(g2, g4, atol=1e-6, rtol=1e-4)


def test_sft_learns_completions_and_to_stop(tiny, tmp_path):
    model, tok = tiny
    rows = [{"prompt": q, "completion": c} for q, c in PAIRS[:2]] * 16
    # An untrained model first predicts the token it reads (tied embeddings): it needs ~80 steps to memorise.
    cfg = _cfg(epochs=20, lr=3e-2, warmup_steps=2, batch_size=8, micro_batch_size=4, eval_fraction=0.0, eval_every=20)
    examples = _load(rows)
    result = sft.train_sft(model, tok, examples, cfg, tmp_path)
    assert result["steps"] == 20 * 4 and result["examples"] == 32 and result["truncated"] == 0
    metrics = _rows(tmp_path)
    assert [r["step"] for r in metrics] == list(range(1, 81))
    assert metrics[-1]["loss"] < 0.02 * metrics[0]["loss"], (metrics[0]["loss"], metrics[-1]["loss"])
    assert metrics[0]["lr"] == pytest.approx(3e-2 / 3) and metrics[-1]["lr"] == pytest.approx(3e-3)
    assert all(r["tokens"] > 0 and r["stage"] == "sft" and "step_time" in r for r in metrics)

    trained, trained_tok = load_model(str(tmp_path / "final"), device="cpu", dtype="fp32")
    engine = make_engine("torch", trained, trained_tok)
    prompts = [apply_template(q, "r1-zero", system="") for q, _ in PAIRS[:2]]
    out = engine.generate(prompts, SamplingConfig(temperature=0, max_new_tokens=30))
    assert out.texts == [c.removeprefix("<think>") for _, c in PAIRS[:2]]
    assert out.truncated == [False, False]  # each stopped by emitting EOS
    assert all(out.completion_ids[i, n - 1] == tok.eos_token_id for i, n in enumerate(out.lengths.tolist()))


def test_kill_and_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    rows = [{"prompt": q, "completion": c} for q, c in PAIRS] * 4
    cfg = _cfg(epochs=2, lr=3e-3, warmup_steps=1, eval_fraction=0.2, eval_every=2, checkpoint_every=2)

    straight = sft.sft_from_config(str(tiny_model_dir), rows, cfg, tmp_path / "straight", system="", device="cpu", dtype="fp32")
    assert straight["steps"] == 4 and straight["eval_loss"] is not None

    model, tok = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    training_forwards = []

    def killed_in_step_3(module, args):
        if torch.is_grad_enabled():  # not the eval loss's passes
            training_forwards.append(1)
            if len(training_forwards) == 5:  # 2 micro-batches a step: step 3's first, after step 2's checkpoint
                raise KeyboardInterrupt

    model.register_forward_pre_hook(killed_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        sft.train_sft(model, tok, sft_data.load_sft_examples(rows, cfg, system=""), cfg, tmp_path / "resumed", system="")
    assert not (tmp_path / "resumed" / "final").exists()
    resumed = sft.sft_from_config(str(tiny_model_dir), rows, cfg, tmp_path / "resumed", system="", device="cpu", dtype="fp32")

    a, b = _rows(tmp_path / "straight"), _rows(tmp_path / "resumed")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-5)
    assert resumed["eval_loss"] == pytest.approx(straight["eval_loss"], rel=1e-5)
    model_a, _ = load_model(str(tmp_path / "straight" / "final"), device="cpu", dtype="fp32")
    model_b, _ = load_model(str(tmp_path / "resumed" / "final"), device="cpu", dtype="fp32")
    for (name, pa), pb in zip(model_a.named_parameters(), model_b.parameters()):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5, msg=name)

    with pytest.raises(ValueError, match="other data or batch settings"):
        sft.sft_from_config(str(tiny_model_dir), rows[:-1], cfg, tmp_path / "resumed", system="", device="cpu", dtype="fp32")


def test_eval_split_holds_out_whole_prompts(tiny):
    _, tok = tiny
    rows = [{"prompt": f"User: q{i % 5}. Assistant: <think>", "completion": f" a{i} </think> <answer> {i} </answer>"}
            for i in range(40)]
    tokenized, _, _ = sft_data.tokenize_examples(tok, rows, 128)
    train, held = sft_data.split_eval(tokenized, 0.2, seed=0)
    prompt = lambda r: tuple(t for t, label in zip(r["input_ids"], r["labels"]) if label == sft_data.IGNORE)  # noqa: E731
    assert len(held) == 8 and len(train) == 32  # one of the five prompts, all eight of its samples
    assert not {prompt(r) for r in held} & {prompt(r) for r in train}


def test_every_metrics_row_goes_to_the_loops_logger(tiny_model_dir, tmp_path):
    model, tok = load_model(str(tiny_model_dir), device="cpu", dtype="fp32", master_weights=True)
    rows = [{"prompt": q, "completion": c} for q, c in PAIRS] * 2
    reported = []
    sft.train_sft(model, tok, sft_data.load_sft_examples(rows, _cfg(), system=""), _cfg(), tmp_path, system="",
                  report=reported.append)  # the run's trackers' log in a run; here a list, with no patching
    assert len(reported) == 2 and reported == _rows(tmp_path)