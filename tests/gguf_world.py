"""A tiny-world model worth exporting, for the GGUF round trip (tests/test_gguf.py, bench/gguf_export.py): the
tiny world's tokenizer, a Llama trained briefly on its corpus (so greedy choices are not near-ties), saved as r1lab
saves models and exported to f16 and q8_0, with texts and prompts it was not trained on."""

from __future__ import annotations

import random

import torch

from r1lab.config import PretrainConfig
from r1lab.data.format import TAGS, apply_template
from r1lab.export.gguf import export_gguf
from r1lab.models.io import load_model, save_model
from r1lab.tinyworld.build import EOS, build_model, corpus, pack, train_lm, train_tokenizer
from r1lab.tinyworld.problems import TinyWorldTask
from r1lab.tinyworld.solutions import worked_solution

WORLD = PretrainConfig(corpus_docs=400, vocab_size=320, hidden_size=32, intermediate_size=64, layers=2, heads=4, max_len=256)


def trained_tiny_world(out, cfg: PretrainConfig = WORLD, steps: int = 80, batch_size: int = 16, arch: str = "llama") -> dict:
    """arch "qwen2": a Qwen2 (q/k/v biases, grouped KV heads) with a Qwen2-style tokenizer, trained the same way."""
    task = TinyWorldTask("tinyworld", train_size=400, test_size=200, seed=cfg.seed)
    docs = corpus(cfg, task)
    tokenizer = train_tokenizer(docs, cfg.vocab_size) if arch == "llama" else qwen2_tokenizer(docs, cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, len(tokenizer)) if arch == "llama" else qwen2_model(cfg, len(tokenizer))
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


def qwen2_tokenizer(docs: list[str], vocab_size: int):
    """A byte-level BPE split as Qwen2's tokenizer splits (its regex, NFC), trained here on the tiny world's corpus."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from r1lab.export.vocab import QWEN2_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN2_REGEX), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((d.replace(EOS, "") for d in docs), trainer=trainer)
    tok.add_tokens(list(TAGS))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS, clean_up_tokenization_spaces=False)


def qwen2_model(cfg: PretrainConfig, vocab_size: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab_size, hidden_size=cfg.hidden_size,
                                        intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.layers,
                                        num_attention_heads=cfg.heads,
                                        num_key_value_heads=cfg.heads // 2, max_position_embeddings=cfg.max_len,
                                        tie_word_embeddings=True, bos_token_id=None, eos_token_id=0, pad_token_id=0))
