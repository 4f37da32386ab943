"""GGUF export, measured: `r1lab export` wall time on a model of the tiny base's size (the command as a user runs
it, imports included), and the round trip through llama.cpp (llama-cpp-python) at f16, q8_0 and q4_k_m: greedy
agreement with transformers on 50 tiny-world prompts, the largest logit difference on 10, tokenisation of 200
texts; each with llama.cpp's KV cache in f32 (the file alone) and f16 (its default, and ollama's). The tests assert
the f16 round trip on a smaller model; this reports every number.

    nice -n 15 env OMP_NUM_THREADS=1 python bench/gguf_export.py [--steps 150] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from gguf_world import trained_tiny_world  # noqa: E402  (tests/gguf_world.py: the round trip's model)

from r1lab.config import PretrainConfig  # noqa: E402
from r1lab.export.check import (  # noqa: E402
    f16_rounded,
    greedy_agreement,
    hf_logits,
    load_llama,
    max_logit_difference,
    tokenisation_mismatches,
)


def export_seconds(model_dir: Path, out: Path, quant: str) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "r1lab", "export", str(model_dir), "--gguf", str(out), "--quant", quant],
                   check=True, capture_output=True)
    return round(time.time() - t0, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="pretraining steps of the measured model (sharper logits)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    # The tiny base's architecture (PretrainConfig's defaults: 128 wide, 4 layers, 448 tokens); a smaller corpus
    # than the demo's, which changes the tokenizer's merges, not the model's size.
    cfg = PretrainConfig(corpus_docs=4000, max_len=160)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = trained_tiny_world(tmp, cfg, steps=args.steps, batch_size=16)
        result = {"model": {k: getattr(cfg, k) for k in ("hidden_size", "intermediate_size", "layers", "heads", "vocab_size")},
                  "parameters": sum(p.numel() for p in world["model"].parameters()), "pretrain_steps": args.steps}
        result["export_seconds"] = {q: export_seconds(world["dir"], tmp / "timed" / f"{q}.gguf", q) for q in ("f16", "q8_0")}
        quants = {"f16": world["f16"], "q8_0": world["q8_0"]}
        try:
            result["export_seconds"]["q4_k_m"] = export_seconds(world["dir"], tmp / "q4.gguf", "q4_k_m")
            quants["q4_k_m"] = tmp / "q4.gguf"
        except subprocess.CalledProcessError as e:
            result["q4_k_m"] = e.stderr.decode()[-300:]
        vocab = load_llama(world["f16"], n_ctx=cfg.max_len, vocab_only=True)
        result["tokenisation"] = {"texts": len(world["texts"]),
                                  "different": len(tokenisation_mismatches(vocab, world["tokenizer"], world["texts"]))}
        vocab.close()
        rounded = f16_rounded(world["model"])
        scale = max(float(abs(hf_logits(world["model"], i)).max()) for i in world["prompt_ids"][:10])
        result["max_abs_logit_10_prompts"] = round(scale, 3)
        ids = world["prompt_ids"]
        for quant, path in quants.items():
            result[quant] = {"bytes": Path(path).stat().st_size}
            for cache in ("f32", "f16"):  # the file alone; as llama.cpp and ollama run it by default
                llm = load_llama(path, n_ctx=cfg.max_len, kv_cache=cache)
                result[quant][f"kv_cache_{cache}"] = {
                    "greedy_same_of_50": greedy_agreement(llm, world["model"], ids[:50], 24, eos=0)["same"],
                    "max_logit_diff_vs_fp32_10_prompts": round(max_logit_difference(llm, world["model"], ids[:10]), 5),
                    "max_logit_diff_vs_f16_rounded_10_prompts": round(max_logit_difference(llm, rounded, ids[:10]), 5)}
                llm.close()
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
