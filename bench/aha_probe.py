"""When does a tiny-world base learn to check? Pretraining with a probe of its check lines every N steps.

Builds the base exactly as `r1lab pretrain` does (same corpus, tokenizer, packing and training loop) and,
every --every steps, feeds 300 held-out equations a check of an estimate (right half the time, else one
off) with every written number correct, and reads the model's greedy predictions, teacher-forced:

    product    "7 * 6 =" -> 42
    sum        "42 + 23 =" -> 65
    difference "72 - 65 =" -> 7
    verdict    after the difference: " ok" exactly when it is 0 (balanced accuracy over hits and misses)

At the end it saves the base to --out and judges it as `r1lab pretrain` does (census.check_honesty, k=4
samples at T=1). docs/AHA.md reads these curves: a verdict at chance until a late, seed-dependent jump was
why a world-v8 base could come out decorative on one machine and honest on another.

    python bench/aha_probe.py --out /tmp/base-s1 [--seed 1] [--steps 1600] [--every 200] [--json curve.json]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from r1lab.config import PretrainConfig
from r1lab.data.format import THINK, apply_template
from r1lab.models.io import save_model
from r1lab.tinyworld import build
from r1lab.tinyworld.census import check_honesty, describe
from r1lab.tinyworld.problems import OPS, TinyWorldTask


def probe_items(tokenizer, n: int = 300) -> list[tuple[list[int], dict[str, tuple[int, int]], bool]]:
    """(token ids, {part: (first, end) token positions}, whether the check holds) for n held-out equations."""
    rng = random.Random(1)
    examples = TinyWorldTask("tinyworld/arithmetic", test_size=n).examples("test")
    items = []
    for ex in examples:
        a, op, b, c, x = ex.meta["parts"]
        estimate = x if rng.random() < 0.5 else min(max(x + rng.choice([-1, 1]), 1), 9)
        product, value = a * estimate, OPS[op](a * estimate, b)
        pieces = [(None, apply_template(ex.prompt, "r1-zero", system=build.SYSTEM) + f" x is about {estimate}. check {a} * {estimate} ="),
                  ("product", f" {product}"), (None, f", {product} {op} {b} ="), ("sum", f" {value}"),
                  (None, f", {c} - {value} ="), ("difference", f" {c - value}"), ("verdict", " ok." if value == c else ", too")]
        text, spans = "", {}
        for part, piece in pieces:
            start = len(tokenizer(text)["input_ids"])
            text += piece
            if part:
                spans[part] = (start, len(tokenizer(text)["input_ids"]))
        items.append((tokenizer(text)["input_ids"], spans, value == c))
    return items


@torch.no_grad()
def probe(model, items) -> dict[str, float]:
    model.eval()
    ids = torch.zeros(len(items), max(len(i) for i, _, _ in items), dtype=torch.long)
    for r, (i, _, _) in enumerate(items):
        ids[r, : len(i)] = torch.tensor(i)
    predicted = model(input_ids=ids).logits.argmax(-1)  # predicted[:, t] is the guess for token t + 1
    model.train()
    right = {part: 0 for part in ("product", "sum", "difference")}
    verdicts = {True: [], False: []}
    for r, (i, spans, holds) in enumerate(items):
        for part in right:
            first, end = spans[part]
            right[part] += all(predicted[r, t - 1] == i[t] for t in range(first, end))
        first, _ = spans["verdict"]
        verdicts[holds].append(bool(predicted[r, first - 1] == i[first]))
    out = {part: n / len(items) for part, n in right.items()}
    out["verdict"] = 0.5 * sum(sum(v) / max(1, len(v)) for v in verdicts.values())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="where the base is saved")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=PretrainConfig().steps)
    p.add_argument("--every", type=int, default=200)
    p.add_argument("--json", help="write the curve and the census here")
    a = p.parse_args()
    cfg = PretrainConfig(seed=a.seed, steps=a.steps)
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    docs = build.corpus(cfg, TinyWorldTask("tinyworld", seed=cfg.seed))
    tokenizer = build.train_tokenizer(docs, cfg.vocab_size)
    model = build.build_model(cfg, len(tokenizer))
    blocks, labels = build.pack(tokenizer(docs)["input_ids"], tokenizer.convert_tokens_to_ids(THINK), cfg.max_len)
    items = probe_items(tokenizer)
    curve = []

    def on_step(step: int, loss: float) -> None:
        if (step + 1) % a.every == 0:
            curve.append({"step": step + 1, "loss": round(loss, 4), **{k: round(v, 3) for k, v in probe(model, items).items()},
                          "seconds": round(time.time() - t0)})
            print(json.dumps(curve[-1]), flush=True)

    loss = build.train_lm(model, blocks, labels, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
                          warmup=max(1, cfg.steps // 20), seed=cfg.seed, on_step=on_step)
    checks = check_honesty(model, tokenizer, build.SYSTEM, n=cfg.census, seed=cfg.seed)
    print(f"seed {a.seed}: {describe(checks)}", flush=True)
    save_model(model, tokenizer, a.out, {"built_by": "bench/aha_probe.py", "world_version": build.WORLD_VERSION,
                                         "config": cfg.model_dump(), "final_loss": round(loss, 4), "template": "r1-zero",
                                         "system": build.SYSTEM, "checks": checks})
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"seed": a.seed, "curve": curve, "checks": checks}, f, indent=2)


if __name__ == "__main__":
    main()
