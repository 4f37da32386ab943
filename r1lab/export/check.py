"""An exported GGUF file checked against the HF model it came from, through llama.cpp (llama-cpp-python): the
same tokens for the same texts, the same greedy completions, the logits' largest difference. The round-trip
tests and bench/gguf_export.py both measure with these."""

from __future__ import annotations

import numpy as np
import torch

from r1lab.errors import ConfigError


def load_llama(gguf_path, n_ctx: int, vocab_only: bool = False, kv_cache: str = "f32"):
    """The GGUF file in llama.cpp: one thread (deterministic and fair on a shared machine), every position's logits.
    kv_cache "f32" measures the file itself; llama.cpp's (and ollama's) default "f16" cache rounds every key and value
    to float16, which on the tiny base moves logits by about as much as the file's f16 weights do."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ConfigError("checking a GGUF file needs llama.cpp's Python binding: pip install llama-cpp-python") from e
    cache = {"f32": llama_cpp.GGML_TYPE_F32, "f16": llama_cpp.GGML_TYPE_F16}[kv_cache]
    return llama_cpp.Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_threads=1, n_threads_batch=1, n_batch=n_ctx,
                           logits_all=True, vocab_only=vocab_only, type_k=cache, type_v=cache, verbose=False)


def llama_tokens(llm, text: str) -> list[int]:
    """llama.cpp's tokens for `text`, special and added tokens matched whole (as HF's tokenizer matches them)."""
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)


def tokenisation_mismatches(llm, tokenizer, texts: list[str]) -> list[tuple[str, list[int], list[int]]]:
    """(text, HF's ids, llama.cpp's ids) for every text they tokenise differently."""
    found = []
    for text in texts:
        hf = tokenizer(text, add_special_tokens=False)["input_ids"]
        ours = llama_tokens(llm, text)
        if hf != ours:
            found.append((text, hf, ours))
    return found


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    """float32 logits at every position of `ids`, from a fresh context."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


@torch.no_grad()
def hf_logits(model, ids: list[int]) -> np.ndarray:
    return model(torch.tensor([ids])).logits[0].float().numpy()


def llama_greedy(llm, ids: list[int], max_new: int, eos: int | None) -> list[int]:
    """Greedy completion (argmax every step) in llama.cpp, stopping at `eos` (kept) or after `max_new` tokens."""
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(max_new):
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(token)
        if token == eos:
            break
        llm.eval([token])
    return out


@torch.no_grad()
def hf_greedy(model, ids: list[int], max_new: int, eos: int | None) -> list[int]:
    """The same greedy completion in transformers (full forward each step: the tiny models make that cheap)."""
    seq, out = list(ids), []
    for _ in range(max_new):
        token = int(model(torch.tensor([seq])).logits[0, -1].argmax())
        out.append(token)
        if token == eos:
            break
        seq.append(token)
    return out


def f16_rounded(model):
    """A copy of `model` whose matrices hold what an f16 GGUF stores (rounded to float16, computed in float32): the
    exporter's own error apart from f16's. Norms stay float32, as the exporter keeps them."""
    import copy

    rounded = copy.deepcopy(model).float()
    with torch.no_grad():
        for p in rounded.parameters():
            if p.dim() > 1:
                p.copy_(p.half().float())
    return rounded


def greedy_agreement(llm, model, prompts_ids: list[list[int]], max_new: int, eos: int | None) -> dict:
    """How many prompts get exactly the same greedy completion from llama.cpp and transformers."""
    same, first_diffs = 0, []
    for ids in prompts_ids:
        ours, theirs = llama_greedy(llm, ids, max_new, eos), hf_greedy(model, ids, max_new, eos)
        same += ours == theirs
        if ours != theirs and len(first_diffs) < 3:
            first_diffs.append({"prompt_tokens": len(ids), "llama_cpp": ours, "transformers": theirs})
    return {"prompts": len(prompts_ids), "same": same, "first_differences": first_diffs}


def max_logit_difference(llm, model, prompts_ids: list[list[int]]) -> float:
    """The largest |llama.cpp - transformers| over every position and vocabulary entry of the prompts."""
    return max(float(np.abs(llama_logits(llm, ids) - hf_logits(model, ids)).max()) for ids in prompts_ids)
