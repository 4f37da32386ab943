"""How r1lab's GRPO step time grows with model size, completion length and group size.

    python bench/scaling.py [--trl] [--threads N] [--md out.md]

Random-init tiny-world Llamas (bench/_common.py SIZES), 16 prompts, fp32; one warm-up step and --steps
timed steps per point, each in a child process (bench/grpo_vs_trl.py does the work). A random-init
model rarely emits EOS, so completions run to max_new_tokens: lengths are what the table says. Its rewards
are all 0, so r1lab would skip the whole training pass (zero advantages, zero gradient): these runs train
every row anyway (`--train-all-rows`), to time a full step.
Prints a markdown table (and writes it to --md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402
import grpo_vs_trl as bench  # noqa: E402

AXES = [  # (axis, size, max_new, group)
    ("model size", "1M", 64, 8), ("model size", "10M", 64, 8), ("model size", "50M", 64, 8),
    ("completion length", "2M", 32, 8), ("completion length", "2M", 64, 8), ("completion length", "2M", 128, 8),
    ("group size", "2M", 64, 4), ("group size", "2M", 64, 8), ("group size", "2M", 64, 16),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--trl", action="store_true", help="also time TRL at every point")
    ap.add_argument("--only", default=None, help="comma-separated axes to run (model,length,group)")
    ap.add_argument("--md", default=None)
    args = ap.parse_args()
    frameworks = ["r1lab", "trl"] if args.trl else ["r1lab"]
    work = Path(tempfile.mkdtemp(prefix="r1lab-scaling-"))
    peak = _common.matmul_peak()
    print(f"fp32 matmul peak {peak:.1f} GFLOP/s")
    lines = ["| axis | model | params | new tokens | group | " + " | ".join(
        f"{fw} s/step | {fw} rollout tok/s | {fw} % of peak" for fw in frameworks) + (" | TRL / r1lab s/step |" if args.trl else " |"),
        "|" + "---|" * (5 + 3 * len(frameworks) + (1 if args.trl else 0))]
    for axis, size, max_new, group in AXES:
        if args.only and not any(axis.startswith(a) for a in args.only.split(",")):
            continue
        run = argparse.Namespace(steps=args.steps, warmup=1, prompts=16, group=group, max_new=max_new, temperature=1.0,
                                 mu=1, beta=0.0, lr=1e-4, micro=64, seed=0, threads=args.threads, tta_every=5, tta_eval_n=50,
                                 tta_steps=0, train_all_rows=True)
        model_dir = _common.make_model_dir(size, work / f"model-{size}")
        res = {fw: bench.summarise(bench.run_child(fw, "throughput", model_dir, run, work), run, 1, peak) for fw in frameworks}
        cells = [f"{res[fw]['s_per_step']:.2f} | {res[fw]['rollout_tok_s']:,.0f} | {res[fw]['peak_fraction']:.0%}" for fw in frameworks]
        line = f"| {axis} | {size} | {res['r1lab']['params'] / 1e6:.1f}M | {max_new} | {group} | " + " | ".join(cells)
        if args.trl:
            line += f" | {res['trl']['s_per_step'] / res['r1lab']['s_per_step']:.2f}x"
        lines.append(line + " |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(f"\n{table}\n\nmatmul peak {peak:.1f} GFLOP/s; {time.strftime('%Y-%m-%d %H:%M')}")
    if args.md:
        Path(args.md).write_text(table + "\n")


if __name__ == "__main__":
    main()
