"""GRPO steps on a busy machine: r1lab and TRL, each alone and beside a competing 2-thread PyTorch job.

    python bench/contention.py [--workload digits] [--steps 12] [--json busy.json]     # ~6 min

The competitor is another training job: a 2-thread PyTorch MLP (hidden 1024, batch 256) stepping AdamW in a
loop, started before each busy run and stopped after it. For each framework the same workload runs quiet,
then busy: median, 90th percentile and worst s/step, and the slowdown (busy median / quiet median). r1lab
runs twice: with its threads fitted to the free cores (the default, r1lab/train/threads.py) and with them
fixed (R1LAB_THREADS=fixed, as before the fitting existed); `--frameworks r1lab-passive` adds 2 fixed threads
with OMP_WAIT_POLICY=PASSIVE. The competitor's own speed (its steps/s, alone
and beside each run) shows whether a framework's gain is taken from the other job.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import grpo_vs_trl  # noqa: E402
import workloads  # noqa: E402

COMPETITOR = """
import sys, time, torch
torch.set_num_threads(2)
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 1024))
opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
x = torch.randn(256, 1024)
count, out = 0, sys.argv[1]
while True:
    loss = net(x).square().mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    count += 1
    if count % 5 == 0:
        with open(out, "w") as f:
            f.write(f"{count} {time.time()}")
"""


# r1lab variants: environment of the child
VARIANTS = {"r1lab-fixed": {"R1LAB_THREADS": "fixed"},  # 2 threads, as before the fitting
            "r1lab-passive": {"R1LAB_THREADS": "fixed", "OMP_WAIT_POLICY": "PASSIVE"}}  # 2 threads that sleep at once


class Competitor:
    """The competing job, in a process of its own; `rate()` is its steps/s since start (or the last call)."""

    def __enter__(self):
        self.file = tempfile.NamedTemporaryFile(suffix=".count", delete=False).name
        self.proc = subprocess.Popen([sys.executable, "-c", COMPETITOR, self.file], env={**os.environ, "OMP_NUM_THREADS": "2"})
        time.sleep(3)  # past its start-up
        self.mark = self._read()
        return self

    def _read(self) -> tuple[int, float]:
        try:
            count, t = open(self.file).read().split()
            return int(count), float(t)
        except (OSError, ValueError):
            return 0, time.time()

    def rate(self) -> float:
        now = self._read()
        rate = (now[0] - self.mark[0]) / max(now[1] - self.mark[1], 1e-9)
        self.mark = now
        return rate

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        os.unlink(self.file)


def timings(result: dict, warmup: int) -> dict:
    steps = [r["step_s"] for r in result["steps"][warmup:]]
    q = statistics.quantiles(steps, n=10)
    return {"median": statistics.median(steps), "p90": q[-1], "max": max(steps), "steps": steps}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workload", default="digits", choices=list(workloads.WORKLOADS))
    ap.add_argument("--steps", type=int, default=12, help="timed steps per run")
    ap.add_argument("--frameworks", default="r1lab,r1lab-fixed,trl")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    w = workloads.WORKLOADS[args.workload]
    model_dir = workloads.model_dir(args.workload)
    child_args = argparse.Namespace(workload=args.workload, steps=args.steps, warmup=1, prompts=16, group=8, max_new=w.max_new,
                                    temperature=1.0, mu=1, beta=0.0, lr=1e-4, micro=64, seed=0, threads=None, tta_every=5,
                                    tta_eval_n=100, train_all_rows=False)
    work = Path(tempfile.mkdtemp(prefix="r1lab-contention-"))
    report = {"workload": args.workload, "load_average_start": os.getloadavg()[0], "runs": {}}
    with Competitor() as c:
        time.sleep(5)
        report["competitor_alone_steps_per_s"] = c.rate()
    for name in args.frameworks.split(","):
        framework = "trl" if name == "trl" else "r1lab"
        fixed = VARIANTS.get(name, {})
        before = {k: os.environ.get(k) for k in fixed}
        os.environ.update(fixed)
        for phase in ("quiet", "busy"):
            (work / phase / name).mkdir(parents=True, exist_ok=True)
        try:
            quiet = grpo_vs_trl.run_child(framework, "throughput", model_dir, child_args, work / "quiet" / name)
            with Competitor() as c:
                busy = grpo_vs_trl.run_child(framework, "throughput", model_dir, child_args, work / "busy" / name)
                competitor_rate = c.rate()
        finally:
            for k, v in before.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        q, b = timings(quiet, 1), timings(busy, 1)
        report["runs"][name] = {"quiet": q, "busy": b, "slowdown": b["median"] / q["median"],
                                "competitor_steps_per_s": competitor_rate}
    report["load_average_end"] = os.getloadavg()[0]
    print(f"\n{args.workload}: s/step alone and beside a 2-thread PyTorch training job (competitor alone: "
          f"{report['competitor_alone_steps_per_s']:.2f} steps/s)")
    print(f"  {'':12s} {'quiet median':>13s} {'busy median':>12s} {'busy p90':>9s} {'busy max':>9s} {'slowdown':>9s} {'competitor':>11s}")
    for name, r in report["runs"].items():
        print(f"  {name:12s} {r['quiet']['median']:13.3f} {r['busy']['median']:12.3f} {r['busy']['p90']:9.3f} "
              f"{r['busy']['max']:9.3f} {r['slowdown']:8.2f}x {r['competitor_steps_per_s']:8.2f}/s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
