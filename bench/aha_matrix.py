"""The R1-Zero demo on several pretraining seeds: does the aha hold on every base, not only a lucky one?

For each seed the demo runs exactly as the README's first command runs it, with `pretrain.seed=N` added (a
new corpus, tokenizer, initialisation and batch order, so a new base, built from an empty cache entry):

    r1lab run r1-zero --out OUT/seedN pretrain.seed=N [EXTRA...]

and each row reads the run's summary.json and metrics.jsonl: pass@1, held-out length and reflection before
and after, the training samples' length (first 20 steps against the last 20), the base's check honesty as
measured when it was built (census), and the wall time, pretraining included. With --r1 SEEDS, the R1
recipe and distill-vs-rl also run on those seeds' bases:

    r1lab run r1 --out OUT/r1-seedN pretrain.seed=N
    r1lab run distill-vs-rl --out OUT/dvr-seedN teacher=OUT/r1-seedN/final pretrain.seed=N

    python bench/aha_matrix.py --out runs/aha-matrix [--seeds 0,1,2,3,4] [--r1 0,1] [--cache DIR] [-- EXTRA...]

Runs one after another (two at once on 2 cores would distort the times). A finished run (its summary.json) is read, not redone,
so the script can be stopped and started again. Prints the table and writes OUT/matrix.json.
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

# Issue 23's targets for every seed.
TARGETS = {"pass@1 gain": 0.20, "length ratio": 1.3, "reflection ratio": 2.0, "reflection after": 0.15,
           "verdict_follows": 0.85}


def run(args: list[str], log: Path) -> float:
    """Runs `r1lab ARGS` with its output in `log`; returns the wall seconds. A failure stops the matrix."""
    t0 = time.time()
    with open(log, "a") as f:
        done = subprocess.run([sys.executable, "-m", "r1lab", *args], stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"r1lab {' '.join(args)} failed (exit {done.returncode}); its output is in {log}")
    return time.time() - t0


def demo_row(seed: int, run_dir: Path, wall: float | None) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    stage = summary["stages"][0]
    before, after = stage["eval_before"], stage["eval_after"]
    lengths = [r["completion_len_mean"] for r in read_jsonl(run_dir / "metrics.jsonl") if "completion_len_mean" in r]
    checks = summary.get("base_checks") or {}
    row = {"seed": seed, "pass@1 before": before["pass@1"], "pass@1 after": after["pass@1"],
           "length before": before["mean_length"], "length after": after["mean_length"],
           "reflection before": before["reflection_rate"], "reflection after": after["reflection_rate"],
           "train length ratio": sum(lengths[-20:]) / sum(lengths[:20]),
           "verdict_follows": checks.get("verdict_follows"), "sum_right": checks.get("sum_right"),
           "check_accuracy": checks.get("check_accuracy"), "guess_accuracy": checks.get("guess_accuracy"),
           "wall minutes": None if wall is None else wall / 60}
    row["pass@1 gain"] = row["pass@1 after"] - row["pass@1 before"]
    row["length ratio"] = row["length after"] / row["length before"]
    row["reflection ratio"] = row["reflection after"] / max(row["reflection before"], 1e-9)
    row["met"] = (row["pass@1 gain"] >= TARGETS["pass@1 gain"] and row["length ratio"] >= TARGETS["length ratio"]
                  and row["reflection ratio"] >= TARGETS["reflection ratio"] and row["reflection after"] >= TARGETS["reflection after"]
                  and (row["verdict_follows"] or 0) >= TARGETS["verdict_follows"]
                  and (row["check_accuracy"] or 0) > (row["guess_accuracy"] or 0))
    return row


def r1_row(seed: int, r1_dir: Path, dvr_dir: Path) -> dict:
    rows = {r["model"]: r for r in json.loads((r1_dir / "summary.json").read_text())["table"]}
    dvr = {r["model"]: r for r in json.loads((dvr_dir / "summary.json").read_text())["table"]}
    return {"seed": seed, "r1-zero": rows["r1-zero"]["pass@1"], "r1": rows["all-scenario-rl"]["pass@1"],
            "language r1-zero": rows["r1-zero"]["language_consistency"],
            "language r1": rows["all-scenario-rl"]["language_consistency"],
            "student": dvr["student"]["pass@1"], "distilled": dvr["distilled"]["pass@1"], "rl student": dvr["rl-only"]["pass@1"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seeds", default="0,1,2,3,4", help="pretraining seeds, comma-separated")
    p.add_argument("--r1", default="", help="seeds whose bases also run the R1 recipe and distill-vs-rl")
    p.add_argument("--cache", type=Path, help="R1LAB_CACHE for the runs (default: the usual cache)")
    p.add_argument("extra", nargs="*", help="more overrides for every demo run (after --)")
    a = p.parse_args()
    if a.cache:
        os.environ["R1LAB_CACHE"] = str(a.cache)
    a.out.mkdir(parents=True, exist_ok=True)
    result_path = a.out / "matrix.json"
    result = json.loads(result_path.read_text()) if result_path.exists() else {"demo": {}, "r1": {}}
    for seed in [int(s) for s in a.seeds.split(",") if s]:
        run_dir = a.out / f"seed{seed}"
        if str(seed) not in result["demo"]:
            wall = None if (run_dir / "summary.json").exists() else run(
                ["run", "r1-zero", "--out", str(run_dir), f"pretrain.seed={seed}", *a.extra], a.out / f"seed{seed}.log")
            result["demo"][str(seed)] = demo_row(seed, run_dir, wall)
            result_path.write_text(json.dumps(result, indent=2))
        print(json.dumps(result["demo"][str(seed)]), flush=True)
    for seed in [int(s) for s in a.r1.split(",") if s]:
        r1_dir, dvr_dir = a.out / f"r1-seed{seed}", a.out / f"dvr-seed{seed}"
        if str(seed) not in result["r1"]:
            if not (r1_dir / "summary.json").exists():
                run(["run", "r1", "--out", str(r1_dir), f"pretrain.seed={seed}"], a.out / f"r1-seed{seed}.log")
            if not (dvr_dir / "summary.json").exists():
                run(["run", "distill-vs-rl", "--out", str(dvr_dir), f"teacher={r1_dir / 'final'}", f"pretrain.seed={seed}"],
                    a.out / f"dvr-seed{seed}.log")
            result["r1"][str(seed)] = r1_row(seed, r1_dir, dvr_dir)
            result_path.write_text(json.dumps(result, indent=2))
        print(json.dumps(result["r1"][str(seed)]), flush=True)
    print_tables(result)


def print_tables(result: dict) -> None:
    demo = list(result["demo"].values())
    if demo:
        print("\n| seed | pass@1 | held-out length | reflection | train length | verdicts | sums | check / guess right | minutes | targets |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in demo:
            minutes = f"{r['wall minutes']:.1f}" if r["wall minutes"] is not None else "–"
            print(f"| {r['seed']} | {r['pass@1 before']:.3f} -> {r['pass@1 after']:.3f} ({100 * r['pass@1 gain']:+.1f}) "
                  f"| {r['length before']:.1f} -> {r['length after']:.1f} ({r['length ratio']:.2f}x) "
                  f"| {r['reflection before']:.3f} -> {r['reflection after']:.3f} | {r['train length ratio']:.2f}x "
                  f"| {r['verdict_follows']} | {r['sum_right']} | {r['check_accuracy']} / {r['guess_accuracy']} | {minutes} "
                  f"| {'met' if r['met'] else 'MISSED'} |")
        for key in ("pass@1 gain", "length ratio", "reflection after", "verdict_follows"):
            values = [r[key] for r in demo if r[key] is not None]
            print(f"{key}: {min(values):.3f} .. {max(values):.3f}")
    for r in result["r1"].values():
        print(f"seed {r['seed']}: R1-Zero {r['r1-zero']:.3f}, R1 {r['r1']:.3f}, language {r['language r1-zero']:.3f} -> "
              f"{r['language r1']:.3f}; student {r['student']:.3f}, distilled {r['distilled']:.3f}, RL {r['rl student']:.3f}")


if __name__ == "__main__":
    main()
