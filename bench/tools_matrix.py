"""Issue 25's targets over several pretraining seeds: does a tool pay on every base, not only a lucky one?

For each seed, the comparison runs exactly as the README runs it, with `pretrain.seed=N` added:

    r1lab compare tools-vs-no-tools --out OUT/seedN pretrain.seed=N [EXTRA...]

and each row reads its two variants (tools, no-tools): held-out pass@1 overall and by kind (arithmetic, lookup)
from summary.json; the training episodes' tool-call rate, first 20 steps against the last 20 (metrics.jsonl); the
recipe's wall time; and, sampling each final model again on the held-out equations (k=4, the evaluation's
sampling, the variant's tools), the share of check lines that are right (census.checks_right: with the
calculator, and in the head).

    python bench/tools_matrix.py --out runs/tools [--seeds 0,1,2] [--cache DIR] [-- EXTRA...]

Runs one after another; a finished comparison (its compare.json) is read, not redone. Prints the table and writes
OUT/matrix.json. Chance on lookup questions: a guess of a length (10-99 km) or of a difference is right about
1 time in 90.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from r1lab.store.logs import read_jsonl

TARGETS = {"pass@1 gain": 0.15, "calculator lines right": 0.95, "lookup with tools": 0.8}


def run_seed(seed: int, out: Path, extra: list[str]) -> float | None:
    """Runs the comparison for `seed` unless it is finished; its wall seconds (None when read from disk)."""
    if (out / "compare.json").exists():
        return None
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with open(out / "log.txt", "a") as f:
        done = subprocess.run([sys.executable, "-m", "r1lab", "compare", "tools-vs-no-tools", "--out", str(out),
                               f"pretrain.seed={seed}", *extra], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"seed {seed} failed (exit {done.returncode}); its output is in {out / 'log.txt'}")
    return time.time() - t0


def check_lines(model_dir: Path, run_dir: Path, n: int = 200, k: int = 4) -> dict:
    """Check lines of the final model's samples on n held-out equations: {calculator: (right, lines), head: ...}."""
    from r1lab.data.format import render_prompt, response_prefix
    from r1lab.engines import make_engine
    from r1lab.models.io import load_model, trained_system
    from r1lab.recipes.load import load_config
    from r1lab.recipes.run import turns_for
    from r1lab.tinyworld.census import checks_right
    from r1lab.tinyworld.problems import TinyWorldTask

    cfg = load_config(str(run_dir / "config.yaml"))
    turns = turns_for(cfg)  # the run's own (None without tools)
    model, tokenizer = load_model(str(model_dir), device="cpu", dtype=cfg.dtype)
    engine = make_engine("torch", model, tokenizer, seed=cfg.seed)
    examples = TinyWorldTask("tinyworld/arithmetic", test_size=n, seed=cfg.seed).examples("test")
    prompts = [render_prompt(e, cfg.template, tokenizer, trained_system(model_dir)) for e in examples]
    counts = {"calculator": [0, 0], "head": [0, 0]}
    for start in range(0, n, 32):
        chunk = prompts[start : start + 32]
        rollout = turns.rollout(engine, chunk, cfg.eval.sampling, k) if turns else engine.generate(chunk, cfg.eval.sampling, n=k)
        for r, text in enumerate(rollout.texts):
            for calculator, right in checks_right(response_prefix(chunk[r // k]) + text, examples[start + r // k]):
                counts["calculator" if calculator else "head"][0] += right
                counts["calculator" if calculator else "head"][1] += 1
    return {key: {"right": right / lines if lines else None, "lines": lines} for key, (right, lines) in counts.items()}


def variant_row(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    after = summary["stages"][-1]["eval_after"]
    rates = [r["tool_call_rate"] for r in read_jsonl(run_dir / "metrics.jsonl") if "tool_call_rate" in r]
    by_kind = after.get("pass@1_by_kind", {})
    return {"pass@1": after["pass@1"], "arithmetic": by_kind.get("arithmetic"), "lookup": by_kind.get("lookup"),
            "call rate first 20": sum(rates[:20]) / 20 if rates else None,
            "call rate last 20": sum(rates[-20:]) / 20 if rates else None,
            "tool errors": after.get("tool_error_frac"), "wall seconds": summary["wall_seconds"],
            "checks": check_lines(run_dir / "final", run_dir)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--cache", type=Path, help="R1LAB_CACHE for the runs (default: the usual cache)")
    p.add_argument("extra", nargs="*", help="field=value settings added to every run")
    a = p.parse_args()
    if a.cache:
        os.environ["R1LAB_CACHE"] = str(a.cache)
    rows = []
    for seed in map(int, a.seeds.split(",")):
        out = a.out / f"seed{seed}"
        run_seed(seed, out, a.extra)
        tools, plain = variant_row(out / "tools"), variant_row(out / "no-tools")
        rows.append({"seed": seed, "tools": tools, "no-tools": plain, "gain": tools["pass@1"] - plain["pass@1"]})
        print_row(rows[-1])
        (a.out / "matrix.json").write_text(json.dumps({"targets": TARGETS, "rows": rows}, indent=2))


def print_row(row: dict) -> None:
    t, n = row["tools"], row["no-tools"]
    calc, head = t["checks"]["calculator"], n["checks"]["head"]
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"seed {row['seed']}: pass@1 {fmt(n['pass@1'])} -> {fmt(t['pass@1'])} ({100 * row['gain']:+.1f}); "
          f"arithmetic {fmt(n['arithmetic'])} -> {fmt(t['arithmetic'])}; lookup {fmt(n['lookup'])} -> {fmt(t['lookup'])}; "
          f"check lines right: calculator {fmt(calc['right'])} of {calc['lines']}, head (no tools) {fmt(head['right'])} "
          f"of {head['lines']}; call rate {fmt(t['call rate first 20'])} -> {fmt(t['call rate last 20'])}; "
          f"tools recipe {t['wall seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
