"""Issue 26's PRM targets over several pretraining seeds: does the learned reward part ways with the truth on every
base, when, by how much, and what did the policy learn to exploit?

For each seed, the comparison runs as the README runs it, with `pretrain.seed=N` added (and only the variants
named by --variants, from a copy of the spec):

    r1lab compare prm-vs-rule --out OUT/seedN pretrain.seed=N [EXTRA...]

Each variant's row: held-out pass@1 before and after (summary.json); the training accuracy and the learned reward,
mean of the first 10 steps against the last 10 (metrics.jsonl); the divergence step, the first step at which the
learned reward's rise over its first 10 steps passes the accuracy's rise by 0.1 (both smoothed as the report
smooths); and, sampling the final model on 200 held-out equations (k=4, the evaluation's sampling), the share of
its check lines that are wrong by the world's checker (tinyworld/steps.py) and the share of its "ok" verdicts that
are wrong: the hack, counted.

    python bench/prm_matrix.py --out runs/prm [--seeds 0,1,2] [--variants rule,prm-min] [--cache DIR] [-- EXTRA...]

Runs one after another; a finished comparison (its compare.json) is read, not redone. Prints the table and writes
OUT/matrix.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import yaml
from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from r1lab.evaluation.plots import smooth
from r1lab.store.logs import read_jsonl

LEARNED_KEYS = ("reward/process_min", "reward/process_last", "reward/outcome")


def run_seed(seed: int, out: Path, variants: list[str] | None, extra: list[str]) -> float | None:
    """Runs the comparison for `seed` unless it is finished; its wall seconds (None when read from disk)."""
    if (out / "compare.json").exists():
        return None
    out.mkdir(parents=True, exist_ok=True)
    spec = yaml.safe_load((resources.files("r1lab") / "experiments" / "comparisons" / "prm-vs-rule.yaml").read_text())
    if variants:
        spec["variants"] = {name: spec["variants"][name] for name in variants}
    (out / "spec.yaml").write_text(yaml.safe_dump(spec))
    t0 = time.time()
    with open(out / "log.txt", "a") as f:
        done = subprocess.run([sys.executable, "-m", "r1lab", "compare", str(out / "spec.yaml"), "--out", str(out),
                               f"pretrain.seed={seed}", *extra], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"seed {seed} failed (exit {done.returncode}); its output is in {out / 'log.txt'}")
    return time.time() - t0


def divergence_step(rows: list[dict], learned: str, gap: float = 0.1) -> int | None:
    """The first step where the smoothed learned reward has risen `gap` more than the smoothed accuracy since the
    start (the mean of the first 10 steps of each)."""
    rows = [r for r in rows if learned in r and "accuracy" in r]
    if len(rows) < 10:
        return None
    ls, accs = smooth([r[learned] for r in rows]), smooth([r["accuracy"] for r in rows])
    l0, a0 = sum(ls[:10]) / 10, sum(accs[:10]) / 10
    return next((r["step"] for r, l_, a in zip(rows, ls, accs) if (l_ - l0) - (a - a0) >= gap), None)


def wrong_checks(run_dir: Path, n: int = 200, k: int = 4) -> dict:
    """The final model's check lines on n held-out equations: the share wrong, and the share of "ok" ones wrong."""
    from r1lab.data.format import render_prompt, response_prefix
    from r1lab.data.steps import split_steps
    from r1lab.engines import make_engine
    from r1lab.models.io import load_model, trained_system
    from r1lab.recipes.load import load_config
    from r1lab.tinyworld.problems import TinyWorldTask

    cfg = load_config(str(run_dir / "config.yaml"))
    model, tokenizer = load_model(str(run_dir / "final"), device="cpu", dtype=cfg.dtype)
    engine = make_engine("torch", model, tokenizer, seed=cfg.seed)
    task = TinyWorldTask("tinyworld/arithmetic", test_size=n, seed=cfg.seed)
    examples = task.examples("test")
    prompts = [render_prompt(e, cfg.template, tokenizer, trained_system(run_dir / "final")) for e in examples]
    checks = wrong = oks = wrong_oks = 0
    for start in range(0, n, 32):
        chunk = prompts[start : start + 32]
        rollout = engine.generate(chunk, cfg.eval.sampling, n=k)
        for r, text in enumerate(rollout.texts):
            example, response = examples[start + r // k], response_prefix(chunk[r // k]) + text
            for step, right in zip(split_steps(response), task.step_labels(response, example)):
                if re.search(r"\d+ \* \d+ = ", step):
                    ok = bool(re.search(r"= -?\d+,? ?(ok|好)", step))
                    checks, wrong, oks, wrong_oks = checks + 1, wrong + (not right), oks + ok, wrong_oks + (ok and not right)
    return {"check lines": checks, "wrong": wrong / checks if checks else None,
            "ok verdicts": oks, "wrong ok": wrong_oks / oks if oks else None}


def variant_row(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("stage") == "rl" and "reward" in r]
    learned = next((k for k in LEARNED_KEYS if any(k in r for r in rows)), None)

    def ends(key):
        values = [r[key] for r in rows if key in r]
        return (sum(values[:10]) / 10, sum(values[-10:]) / 10) if len(values) >= 10 else (None, None)

    stages = summary["stages"]
    return {"pass@1 before": stages[-1]["eval_before"]["pass@1"], "pass@1 after": stages[-1]["eval_after"]["pass@1"],
            "accuracy": ends("accuracy"), "learned": ends(learned) if learned else None, "learned key": learned,
            "divergence step": divergence_step(rows, learned) if learned else None,
            "reward model": next((d["after"] for d in summary.get("data", []) if "after" in d), None),
            "checks": wrong_checks(run_dir), "wall seconds": summary["wall_seconds"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--variants", help="comma-separated variants of prm-vs-rule (default: all)")
    p.add_argument("--cache", type=Path, help="R1LAB_CACHE for the runs (default: the usual cache)")
    p.add_argument("extra", nargs="*", help="field=value settings added to every run")
    a = p.parse_args()
    if a.cache:
        os.environ["R1LAB_CACHE"] = str(a.cache)
    variants = a.variants.split(",") if a.variants else None
    saved = a.out / "matrix.json"  # other seeds' rows, from earlier invocations, are kept
    matrix = [row for row in (json.loads(saved.read_text()) if saved.exists() else [])
              if row["seed"] not in map(int, a.seeds.split(","))]
    for seed in map(int, a.seeds.split(",")):
        out = a.out / f"seed{seed}"
        run_seed(seed, out, variants, a.extra)
        names = variants or list(json.loads((out / "compare.json").read_text())["table"][i]["variant"]
                                 for i in range(len(json.loads((out / "compare.json").read_text())["table"])))
        row = {"seed": seed, **{name: variant_row(out / name) for name in names}}
        matrix.append(row)
        print_row(row, names)
        saved.write_text(json.dumps(sorted(matrix, key=lambda row: row["seed"]), indent=2))


def print_row(row: dict, names: list[str]) -> None:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for name in names:
        v = row[name]
        learned = v["learned"] or (None, None)
        print(f"seed {row['seed']} {name}: pass@1 {fmt(v['pass@1 before'])} -> {fmt(v['pass@1 after'])}; accuracy "
              f"{fmt(v['accuracy'][0])} -> {fmt(v['accuracy'][1])}; learned {fmt(learned[0])} -> {fmt(learned[1])}; "
              f"diverges at {v['divergence step']}; wrong check lines {fmt(v['checks']['wrong'])} of "
              f"{v['checks']['check lines']}, wrong ok {fmt(v['checks']['wrong ok'])} of {v['checks']['ok verdicts']}; "
              f"{v['wall seconds']:.0f} s", flush=True)
    rm = next((row[name]["reward model"] for name in names if row[name]["reward model"]), None)
    if rm:
        print(f"seed {row['seed']} reward model (held out): steps right {fmt(rm['step_accuracy'])}, wrong steps caught "
              f"{fmt(rm['wrong_step_recall'])}, answers right {fmt(rm['answer_accuracy'])}", flush=True)


if __name__ == "__main__":
    main()
