"""The benchmark family: GRPO workloads that differ in what decides how fast a step can be.

A workload fixes a model (width, vocabulary), a task (prompt and completion lengths, how wide the spread of
completion lengths is) and the share of groups whose rewards are all equal (their advantage is 0: r1lab
skips them). Two tasks:

  tinyworld  the tiny world's problems and its 438-token BPE tokenizer: completions of 5-64 tokens
             (a wide spread), about half the groups with equal rewards.
  digits     multi-digit addition written out column by column, one token per character (the vocabulary
             is 18 tokens, padded with unused ones to `vocab`): prompts of 8-10 tokens, completions of
             31-41 tokens (a narrow spread), few groups with equal rewards (the answer earns partial credit
             per digit). This is the shape of the
             workload an outside measurement found r1lab's lead thinnest on (issue 16).

`ungraded`: a share of the prompts whose answers always score 0, so that their groups have zero spread:
the same model, prompts and lengths with more or fewer groups for r1lab to skip.

Every model is pretrained here (plain next-token loss on worked solutions, minutes) and cached in
~/.cache/r1lab/bench-<name>-<key>, so completions end with EOS and rewards differ within groups.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import _common  # noqa: F401  (puts the repo root on sys.path)

from r1lab.data.example import Example, Task
from r1lab.data.format import END_ANSWER, END_THINK, THINK

ANSWER = "<answer>"
EOS = "<eos>"
CHARS = list("0123456789+=,")


@dataclass(frozen=True)
class Workload:
    task: str  # "tinyworld" or "digits"
    hidden: int = 192
    ffn: int = 512
    layers: int = 4
    heads: int = 4
    vocab: int = 50  # digits: padded to this many tokens (tinyworld: its own 438)
    ungraded: float = 0.0  # share of prompts that always score 0
    max_new: int = 48  # new tokens at most (digits completions are 31-41 tokens)
    size: str = "2M"  # tinyworld: _common.SIZES / PRETRAIN key
    pretrain_steps: int = 800
    lr: float = 5e-3
    grown_from: str = ""  # digits: made from this workload's model by widening it (see _grow), not pretrained


WORKLOADS = {
    # the shape: narrow model, tiny vocabulary, completions of nearly one length
    "digits": Workload("digits"),
    "digits-v1k": Workload("digits", vocab=1024, grown_from="digits"),
    "digits-v32k": Workload("digits", vocab=32000, grown_from="digits"),
    "digits-h128": Workload("digits", hidden=128, ffn=384),
    "digits-h512": Workload("digits", hidden=512, ffn=1376, grown_from="digits"),
    "digits-ungraded50": Workload("digits", ungraded=0.5),
    # the tiny world: wide spread of lengths, many zero-spread groups (the original benchmark's 2M model)
    "tinyworld-base": Workload("tinyworld", size="1M", max_new=64),  # the demo's base: time-to-accuracy
    "tinyworld-2M": Workload("tinyworld", size="2M", max_new=64),
    "tinyworld-10M": Workload("tinyworld", size="10M", max_new=64),
}


# The default family of bench/grpo_vs_trl.py: each varies one thing against "digits" (tinyworld-base: the
# length spread, the vocabulary and the share of equal groups at once). tinyworld-2M/10M are the models of
# the first benchmark (pretrained on first use: 5 and 10 minutes).
FAMILY = ["digits", "digits-v1k", "digits-v32k", "digits-h128", "digits-h512", "digits-ungraded50", "tinyworld-base"]


# ---------------------------------------------------------------------------------------------
# The digits task


def _problem(rng: random.Random) -> tuple[int, int]:
    return rng.randint(100, 1999), rng.randint(100, 999)


def worked(a: int, b: int) -> str:
    """Column addition from the right: '7+5+0=12,' per column (carry in), then the answer."""
    da, db = str(a)[::-1], str(b)[::-1]
    carry, steps = 0, []
    for i in range(max(len(da), len(db))):
        x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s},")
        carry = s // 10
    return THINK + "".join(steps) + END_THINK + ANSWER + str(a + b) + END_ANSWER


def _operands(example: Example) -> tuple[int, int]:
    a, b = example.prompt.removesuffix("=" + THINK).split("+")
    return int(a), int(b)


class DigitsTask(Task):
    name = "digits"

    def __init__(self, ungraded: float = 0.0, n_train: int = 20000, n_test: int = 200, seed: int = 0):
        rng = random.Random(f"digits-{seed}")
        seen, rows = set(), []
        while len(rows) < n_train + n_test:
            a, b = _problem(rng)
            if (a, b) not in seen:
                seen.add((a, b))
                rows.append((a, b))
        self.ungraded = ungraded
        self._splits = {"train": [self._example(i, a, b) for i, (a, b) in enumerate(rows[:n_train])],
                        "test": [self._example(i, a, b) for i, (a, b) in enumerate(rows[n_train:])]}

    def _example(self, i: int, a: int, b: int) -> Example:
        graded = (i * 0.6180339887) % 1.0 >= self.ungraded  # spread evenly over the prompt stream
        return Example(f"digits-{i}", f"{a}+{b}={THINK}", str(a + b), meta={"graded": graded})

    def examples(self, split: str) -> list[Example]:
        return self._splits[split]

    def score(self, answer: str, example: Example) -> float:
        """Partial credit: the share of the answer's digits that are right (aligned from the units), 1.0 only
        for the whole sum. The pretrained models get about one sum in X right, but most of the digits."""
        if not example.meta["graded"]:
            return 0.0
        answer, gold = answer.strip()[::-1], example.answer[::-1]
        return sum(a == g for a, g in zip(answer, gold)) / max(len(answer), len(gold))


def digits_tokenizer(vocab: int):
    """One token per character, the tags whole, padded with unused tokens to `vocab` entries."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [EOS, THINK, END_THINK, ANSWER, END_ANSWER]
    names = specials + CHARS
    names += [f"<unused{i}>" for i in range(vocab - len(names))]
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(names)}, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([EOS])
    tok.add_tokens(specials[1:])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, clean_up_tokenization_spaces=False)


# ---------------------------------------------------------------------------------------------
# Tasks, templates, models


def make_task(w: Workload):
    if w.task == "digits":
        return DigitsTask(w.ungraded)
    from r1lab.tinyworld.problems import TinyWorldTask

    assert w.ungraded == 0.0, "ungraded is for the digits task"
    return TinyWorldTask("tinyworld")


def template(w: Workload) -> tuple[str, str]:
    """(template, system): a digits prompt is '123+45=<think>' as it stands; the tiny world uses r1-zero without
    the paper's system text."""
    return ("none", "") if w.task == "digits" else ("r1-zero", "")


def model_dir(name: str) -> Path:
    """The workload's pretrained model, built and cached on first use."""
    w = WORKLOADS[name]
    if w.task == "tinyworld":
        return _common.pretrained_model_dir(w.size)
    from r1lab.tinyworld.build import cache_root

    model_keys = {k: v for k, v in asdict(w).items() if k not in ("ungraded", "size", "max_new")}
    key = hashlib.sha256(json.dumps(model_keys, sort_keys=True).encode()).hexdigest()[:12]
    out = cache_root() / f"bench-digits-{key}"
    if not (out / "r1lab.json").exists():
        _grow(w, model_dir(w.grown_from), out) if w.grown_from else _pretrain_digits(w, out)
    return out


def _pretrain_digits(w: Workload, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from r1lab.models.io import save_model

    t0 = time.time()
    tok = digits_tokenizer(w.vocab)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=w.hidden, intermediate_size=w.ffn, num_hidden_layers=w.layers,
                         num_attention_heads=w.heads, num_key_value_heads=w.heads, max_position_embeddings=128,
                         tie_word_embeddings=True, bos_token_id=None, eos_token_id=0, pad_token_id=0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    print(f"pretraining the digits model (hidden {w.hidden}, vocabulary {len(tok)}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {w.pretrain_steps} steps; cached in {out})", flush=True)
    loss = _train(model, tok, w.pretrain_steps, w.lr)
    save_model(model, tok, out, {"built_by": "bench/workloads.py", "workload": asdict(w), "template": "none", "system": "",
                                 "seconds": round(time.time() - t0, 1), "final_loss": round(loss, 4)})


def _train(model, tok, steps: int, lr: float, warmup: int = 20) -> float:
    """Next-token loss on the digits corpus's worked solutions (the prompt's tokens are not predicted), with
    the tiny world's pretraining loop."""
    from r1lab.tinyworld.build import pack, train_lm

    docs = [ex.prompt + worked(*_operands(ex))[len(THINK):] + EOS for ex in DigitsTask().examples("train")]
    blocks, labels = pack(tok(docs)["input_ids"], tok.convert_tokens_to_ids(THINK), 128)
    t0 = time.time()

    def report(step: int, loss: float) -> None:
        if step % 100 == 0 or step == steps - 1:
            print(f"  step {step}: loss {loss:.3f} ({time.time() - t0:.0f}s)", flush=True)

    return train_lm(model, blocks, labels, steps=steps, lr=lr, batch_size=32, warmup=warmup, on_step=report)


TUNE_STEPS = 60  # a grown vocabulary: steps of the digits corpus that push the new tokens down (see _grow)


def _grow(w: Workload, source: Path, out: Path) -> None:
    """A wider model computing what `source`'s does: the pretrained digits model (hidden 192, vocabulary 50)
    grown to w.hidden, w.ffn and w.vocab, so the workload differs in shape only (pretraining a 12M model
    here would take half an hour).

    Hidden and FFN grow with zeros: the residual stream's new dimensions stay 0 (embeddings, o and down write
    nothing there), RMSNorm's weights shrink by sqrt(old / new) to undo the longer mean, the new FFN units
    output silu(0) * 0 = 0. Attention keeps its 4 heads of 48 (head_dim is set in the config), reading and
    writing the wider stream. New vocabulary rows start at 0 (logit 0), which is not low enough: 32,000 of
    them took half the probability, so the grown model then trains TUNE_STEPS steps on the digits corpus at
    a low lr, which pushes the unused tokens down as pretraining did (bench/README.md: the grown models'
    accuracy, lengths and format against the source's).
    Training moves the zeros like any weight; the matmuls cost what the wider shapes cost."""
    import math

    import torch
    from transformers import AutoConfig, LlamaForCausalLM

    from r1lab.models.io import load_model, save_model

    small, _ = load_model(str(source), device="cpu", dtype="fp32")
    cfg = AutoConfig.from_pretrained(source)
    old_hidden, old_vocab = cfg.hidden_size, cfg.vocab_size
    cfg.head_dim = cfg.hidden_size // cfg.num_attention_heads
    cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size = w.hidden, w.ffn, w.vocab
    big = LlamaForCausalLM(cfg)
    tok = digits_tokenizer(w.vocab)
    scale = math.sqrt(old_hidden / w.hidden)
    with torch.no_grad():
        for name, p in big.named_parameters():
            p.zero_()
            src = small.get_parameter(name)
            p[tuple(slice(0, n) for n in src.shape)] = src * (scale if "norm" in name else 1.0)
    big.tie_weights()
    if w.vocab > old_vocab:
        print(f"growing the digits model's vocabulary to {w.vocab}: {TUNE_STEPS} steps of training", flush=True)
        _train(big, tok, TUNE_STEPS, 1e-3, warmup=5)
    save_model(big, tok, out, {"built_by": "bench/workloads.py", "workload": asdict(w), "grown_from": str(source),
                               "template": "none", "system": ""})
