"""A tiny-world model worth exporting, for the GGUF round trip (tests/test_gguf.py, bench/gguf_export.py): the
tiny world's tokenizer, a Llama trained briefly on its corpus (so greedy choices are not near-ties), saved as r1lab
saves models and exported to f16 and q8_0, with texts and prompts it was not trained on."""

from __future__ import annotations

import random

import torch

from r1lab.config import PretrainConfig
from r1lab.data.format import apply_template
from r1lab.export.gguf import export_gguf
from r1lab.models.io import load_model, save_model
from r1lab.tinyworld.build import build_model, corpus, pack, train_lm, train_tokenizer
from r1lab.tinyworld.problems import TinyWorldTask
from r1lab.tinyworld.solutions import worked_solution

WORLD = PretrainConfig(corpus_docs=400, vocab_size=320, hidden_size=32, intermediate_size=64, layers=2, heads=4, max_len=256)


def trained_tiny_world(out, cfg: PretrainConfig = WORLD, steps: int = 80, batch_size: int = 16) -> dict:
    task = TinyWorldTask("tinyworld", train_size=400, test_size=200, seed=cfg.seed)
    docs = corpus(cfg, task)
    tokenizer = train_tokenizer(docs, cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, len(tokenizer))
    blocks, labels = pack(tokenizer(docs)["input_ids"], tokenizer.convert_tokens_to_ids("<think>"), cfg.max_len)
    train_lm(model, blocks, labels, steps=steps, lr=cfg.lr, batch_size=batch_size, warmup=max(1, steps // 20), seed=cfg.seed)
    save_model(model, tokenizer, out / "model", {"template": "r1-zero", "system": ""})
    model, tokenizer = load_model(str(out / "model"), device="cpu", dtype="fp32")
    prompts = [apply_template(ex.prompt, "r1-zero", system="") for ex in task.examples("test")]
    rng = random.Random(0)  # half the texts with a whole response: tags, numbers, Chinese words
    texts = prompts[:100] + [p + worked_solution(rng, ex, True)[len("<think>"):] + "<|endoftext|>"
                             for p, ex in zip(prompts[100:], task.examples("test")[100:])]
    exported = {quant: export_gguf(out / "model", out / f"{quant}.gguf", quant=quant)["gguf"] for quant in ("f16", "q8_0")}
    return {"model": model, "tokenizer": tokenizer, "texts": texts, "dir": out / "model", **exported,
            "prompt_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]}
