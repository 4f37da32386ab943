"""Build the tiny world's base model: corpus -> tokenizer -> Llama model -> pretraining -> save_pretrained.

The result is an ordinary HF model directory; every later stage treats it like Qwen2.5.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import torch

from r1lab.data.format import TAGS, THINK, apply_template
from r1lab.models.io import save_model
from r1lab.tinyworld.problems import WORLD_VERSION, TinyWorldTask
from r1lab.tinyworld.solutions import arithmetic_practice, worked_solution
from r1lab.train.optim import lr_lambda

EOS = "<|endoftext|>"
# The tiny model learns the R1-Zero template without the paper's long system text: it would be
# most of every sequence and most of the compute, and teaches a 2M-parameter model nothing.
SYSTEM = ""


def cache_root() -> Path:
    return Path(os.environ.get("R1LAB_CACHE", Path.home() / ".cache" / "r1lab"))


GENERAL_SHARE = 0.08  # of documents: simple questions answered at once (what a base model "knows")
PRACTICE_SHARE = 0.15  # plain arithmetic lines, added beside the corpus_docs documents


def corpus(cfg, task: TinyWorldTask) -> list[str]:
    """Pretraining documents: template + a worked solution in a random style, then the practice lines, shuffled.
    Test prompts never appear, nor do test equations."""
    rng = random.Random(f"corpus-{cfg.seed}")
    train = task.examples("train")
    general = TinyWorldTask("tinyworld/general", seed=cfg.seed).examples("train")
    docs = []
    for i in range(cfg.corpus_docs):
        ex = general[i % len(general)] if rng.random() < GENERAL_SHARE else train[i % len(train)]
        prompt = apply_template(ex.prompt, "r1-zero", system=SYSTEM)
        response = worked_solution(rng, ex, cfg.careful_styles)
        assert response.startswith(THINK)
        docs.append(prompt + response[len(THINK):] + EOS)
    # Plain arithmetic lines (PRACTICE_SHARE more documents, from train equations only): the sums and
    # differences a check computes, practised outside any solution, so the base's checks compute right
    # more often without the corpus checking more often.
    rng = random.Random(f"drill-{cfg.seed}")
    equations = [e for e in train if e.meta["kind"] == "arithmetic"]
    docs += [arithmetic_practice(rng, rng.choice(equations).meta["parts"]) + EOS for _ in range(int(len(docs) * PRACTICE_SHARE))]
    rng.shuffle(docs)
    return docs


def train_tokenizer(docs: list[str], vocab_size: int):
    """Byte-level BPE with one token per digit (so the model sees place value) and the tags as single tokens.

    A space before a number stays on its first digit (" 37" -> " 3", "7"): one token less per number.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r" ?\d"), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator((d.replace(EOS, "") for d in docs), trainer=trainer)
    tok.add_tokens(list(TAGS))  # plain added tokens: matched whole, and kept when decoding
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, clean_up_tokenization_spaces=False)


def model_config(cfg, vocab_size: int):
    """The tiny world's Llama architecture for PretrainConfig `cfg`."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        max_position_embeddings=cfg.max_len,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=0,
        pad_token_id=0,
    )


def build_model(cfg, vocab_size: int):
    from transformers import LlamaForCausalLM

    config = model_config(cfg, vocab_size)
    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(config)


def cache_dir(cfg) -> Path:
    # Bump WORLD_VERSION when building changes. careful_styles is keyed only when off, so the bases built
    # before it existed (with every style) stay cached.
    # `census` only measures the base, so it is not part of the key.
    made_by = {**cfg.model_dump(exclude={"census"} | (set() if not cfg.careful_styles else {"careful_styles"})), "world": WORLD_VERSION}
    key = hashlib.sha256(json.dumps(made_by, sort_keys=True).encode()).hexdigest()[:12]
    return cache_root() / f"tinyworld-{key}"


def pretrain(cfg, out: Path | None = None) -> Path:
    """Builds and pretrains the base model unless a finished one is cached; returns its directory."""
    out = Path(out) if out is not None else cache_dir(cfg)
    if (out / "r1lab.json").exists():
        return out
    from r1lab.progress import progress_bar

    t0 = time.time()
    torch.manual_seed(cfg.seed)
    task = TinyWorldTask("tinyworld", seed=cfg.seed)  # train split: never a reserved test problem
    docs = corpus(cfg, task)
    tokenizer = train_tokenizer(docs, cfg.vocab_size)
    model = build_model(cfg, len(tokenizer))
    blocks, labels = pack(tokenizer(docs)["input_ids"], tokenizer.convert_tokens_to_ids(THINK), cfg.max_len)
    with progress_bar(f"pretraining tiny model ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M params)", cfg.steps) as bar:
        loss = train_lm(model, blocks, labels, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                        warmup=max(1, cfg.steps // 20), seed=cfg.seed, on_step=lambda step, loss: bar(loss=f"{loss:.3f}"))
    checks = measure_checks(model, tokenizer, cfg)
    meta = {"built_by": "r1lab pretrain", "world_version": WORLD_VERSION,
            "config": cfg.model_dump(), "corpus_tokens": int((blocks != 0).sum()),
            "parameters": sum(p.numel() for p in model.parameters()), "seconds": round(time.time() - t0, 1),
            "final_loss": round(loss, 4), "template": "r1-zero", "system": SYSTEM, "checks": checks}
    return save_model(model, tokenizer, out, meta)  # atomic: `out` (with its r1lab.json) is whole or absent


def measure_checks(model, tokenizer, cfg) -> dict | None:
    """The base's check honesty on held-out equations (census.check_honesty), said on the console; None
    for a base without check documents (the aha-ablation's): it has no checks to judge."""
    if not cfg.careful_styles or not cfg.census:
        return None
    from r1lab.progress import console
    from r1lab.tinyworld.census import check_honesty, describe

    t0 = time.time()
    checks = check_honesty(model, tokenizer, SYSTEM, n=cfg.census, seed=cfg.seed)
    console.print(f"tiny base: {describe(checks)} [{time.time() - t0:.0f}s]", highlight=False)
    return checks


def read_checks(model_dir) -> dict | None:
    """The check honesty a tiny-world base was built with (r1lab.json's "checks"), if it has one."""
    try:
        return json.loads((Path(model_dir) / "r1lab.json").read_text()).get("checks")
    except (OSError, ValueError):
        return None


def train_lm(model, blocks: torch.Tensor, labels: torch.Tensor, *, steps: int, lr: float, batch_size: int, warmup: int,
             seed: int = 0, on_step=None) -> float:
    """Next-token training on packed blocks (from `pack`): AdamW (0.9, 0.95, weight decay 0.1), a ramped cosine
    to 10% of `lr`, gradients clipped at 1, `batch_size` random blocks a step. on_step(step, loss) after each
    step. Leaves the model in eval mode; returns the last loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, steps, 0.1, "ramped_cosine"))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        rows = torch.randint(0, len(blocks), (batch_size,), generator=gen)
        loss = _lm_loss(model, blocks[rows], labels[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, loss.item())
    model.eval()
    return loss.item()


def pack(docs: list[list[int]], think_id: int, max_len: int, open_blocks: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole documents packed into blocks of max_len (never cut in two: a solution without its question
    teaches nothing), padded with EOS. Each document goes into the first of the last `open_blocks` blocks it
    fits in (first fit: 7% padding on the tiny world's corpus, against 20% when a block closes at the first
    document that does not fit). Labels are the response tokens (after <think>, EOS included): the prompt's
    numbers are random, so predicting them is noise in the gradient."""
    open_, done = [], []  # each block: [ids, labels]
    for ids in docs:
        if len(ids) > max_len:
            continue
        start = ids.index(think_id) + 1 if think_id in ids else 0
        label = [-100] * start + ids[start:]
        for block in open_:
            if len(block[0]) + len(ids) <= max_len:
                block[0] += ids
                block[1] += label
                break
        else:
            open_.append([list(ids), label])
            if len(open_) > open_blocks:
                done.append(open_.pop(0))
    done += open_
    blocks = torch.tensor([ids + [0] * (max_len - len(ids)) for ids, _ in done])
    labels = torch.tensor([label + [-100] * (max_len - len(label)) for _, label in done])
    return blocks, labels  # (n_blocks, max_len) each


def _lm_loss(model, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=inputs[:, :-1]).logits  # (B, T-1, V)
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)

