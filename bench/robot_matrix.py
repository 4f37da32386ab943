"""`r1lab compare robot` on several seeds of one env, and one table of ranges across them.

    python bench/robot_matrix.py --env Hopper-v5 --seeds 0,1,2 --out runs/robot-hopper

Each seed is an ordinary comparison directory (OUT/seedN: ppo, grpo, grpo-branch; resumable by rerunning, a
finished variant is read back, not rerun). The table gives, per variant, the min..max over seeds of: the training
return over the last 5 iterations (what CleanRL's curves plot), the final evaluation (fresh episodes, sampled
actions), env steps and wall seconds. Run one at a time on a quiet machine: the seconds are only comparable then.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from r1lab.experiments.compare import load_spec, run_compare, write_compare_report  # noqa: E402

COLUMNS = ("train_return_last5", "final_mean_return", "best_eval_return", "env_steps", "wall_seconds", "steps_to_target",
           "seconds_to_target")


def run_seed(env: str, seed: int, out: Path, extra: list[str]) -> dict:
    spec = load_spec("robot", [f"env={env}", f"seed={seed}", *extra])
    done = all((out / name / "summary.json").exists() for name in spec.variants)
    return write_compare_report(spec, out) if done else run_compare(spec, out)


def span(values: list) -> str:
    missed = sum(v is None for v in values)  # a target not reached on that seed
    values = [v for v in values if v is not None]
    if not values:
        return "not reached"
    lo, hi = min(values), max(values)
    if missed:
        return f"{span(values)} ({missed} not reached)"
    fmt = (lambda v: f"{v:,.0f}") if max(abs(lo), abs(hi)) >= 100 else (lambda v: f"{v:.2f}")
    return fmt(lo) if lo == hi else f"{fmt(lo)} .. {fmt(hi)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", default="Hopper-v5")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", required=True)
    ap.add_argument("overrides", nargs="*", help="settings for every variant, e.g. max_env_steps=100000")
    args = ap.parse_args()
    out = Path(args.out)
    results = {seed: run_seed(args.env, seed, out / f"seed{seed}", args.overrides) for seed in map(int, args.seeds.split(","))}
    variants = [row["variant"] for row in next(iter(results.values()))["table"]]
    table = {v: {c: span([next(r for r in res["table"] if r["variant"] == v)[c] for res in results.values()])
                 for c in COLUMNS} for v in variants}
    lines = [f"{args.env}, seeds {args.seeds}", "| variant | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {v} | " + " | ".join(table[v][c] for c in COLUMNS) + " |" for v in variants]
    print("\n".join(lines))
    (out / f"matrix-{args.env}.json").write_text(json.dumps({"env": args.env, "seeds": args.seeds, "table": table,
                                                            "per_seed": {s: r["table"] for s, r in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
