"""r1lab's GRPO and TRL's GRPOTrainer, side by side, on the same model, task, prompts and settings.

    pip install -e ".[bench]"                      # TRL: only the benchmark needs it
    python bench/grpo_vs_trl.py --quick --json q.json    # the ~2M model, a few steps, < 5 minutes
    python bench/grpo_vs_trl.py --json full.json         # ~2M and ~10M models, plus time-to-accuracy

The models are tiny-world Llamas pretrained by r1lab's own pretraining (built once, minutes, and cached;
--init random for random init), so completions end with EOS at different lengths and rewards differ
within groups, as in real runs. Every (framework, model) run is a child process of its own, so peak RSS
is per framework and one run's memory or threads do not leak into the next. Both start from the same
weights (a saved HF directory), see the same prompts in the same order (r1lab's PromptStream order; TRL
without shuffling), and use the same group size, prompts per step, max new tokens, temperature, mu, beta,
lr, AdamW betas, grad clip and loss (GRPO: group-normalised advantages, per-completion token mean, clip
0.2). TRL's reward function wraps r1lab's rewards. fp32, no gradient checkpointing, constant lr.

Measured per step (one batch of rollouts and its mu passes):
  s/step          wall time of the step: sampling, rewards, forward/backward, optimizer (r1lab: its logged
                  step_time; TRL: on_step_begin -> on_step_end of a callback, which covers the same work)
  rollout tok/s   generated tokens / time in the sampler (r1lab: the engine's generate; TRL: its generate)
  train tok/s     (prompt + completion tokens) * mu / (step time - sampler time)
  peak RSS        the child's peak resident memory at its end (Linux: VmHWM; _common.peak_rss_mb)
  peak fraction   matmul FLOPs the step ran / s/step / matmul peak. TRL: 2 N T + 6 N T mu (+ 2 N T for the
                  reference pass if beta > 0), T = prompt + completion tokens of every row (the decoding
                  of finished rows' padding is not counted). r1lab: 2 N (completion tokens + each prompt
                  once) + 6 N mu (tokens of the rows it trained, their prompts once per micro-batch:
                  the step's `tokens_trained`).
                  The peak is a plain 1024^3 fp32 torch.mm measured in this run with the same threads, at
                  the start and after every throughput run; the highest is used.
  useful work     the same with TRL's count for both: work done or made unnecessary, per second; r1lab's
                  can pass 100% (it skips rows whose gradient is 0 and runs each prompt once per group)
  time-to-accuracy  steps and seconds of training (sum of s/step) until held-out pass@1 (r1lab's evaluator,
                  same seed for both, k=4 at T=0.6) reaches the threshold; starts from the pretrained
                  tiny-world base (cached by `r1lab run`), so it is skipped when that is not built.

Prints a table (each figure and the r1lab / TRL ratio) and writes --json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _common  # noqa: E402  (puts the repo root on sys.path)
import workloads  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Children: one framework, one model, one process


def _common_setup(args):
    """The child's task, template and system text (its workload's)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    w = workloads.WORKLOADS[args.workload]
    return (workloads.make_task(w), *workloads.template(w))


def _prompt_order(task, seed: int, count: int):
    """The examples r1lab's PromptStream hands out, in its order (so TRL can get the same ones)."""
    from r1lab.rl.rollouts import PromptStream

    return PromptStream(task.examples("train"), seed).next(count)


def _evaluator(args, task, tokenizer, template, system):
    """pass@1 on held-out problems with r1lab's evaluator: same seed, same problems for both frameworks."""
    from r1lab.config import EvalConfig
    from r1lab.engines import make_engine
    from r1lab.evaluation.evaluate import evaluate

    cfg = EvalConfig(k=4, n=args.tta_eval_n, sampling={"max_new_tokens": args.max_new}, batch_size=256)  # T=0.6, top-p 0.95

    def run(model) -> float:
        t0 = time.perf_counter()
        result = evaluate(make_engine("torch", model, tokenizer, seed=1234), task, cfg, template=template, system=system)
        print(f"  eval pass@1 {result['pass@1']:.3f} ({time.perf_counter() - t0:.1f}s)", flush=True)
        return result["pass@1"]

    return run


def child_r1lab(args) -> dict:
    from dataclasses import replace

    import torch

    import r1lab.store.checkpoint
    from r1lab.config import RLConfig, SamplingConfig
    from r1lab.engines import make_engine
    from r1lab.models.io import load_model
    from r1lab.rl.algorithms import ALGORITHMS
    from r1lab.rl.loop import train_rl

    task, template, system = _common_setup(args)
    model, tok = load_model(args.model_dir, device="cpu", dtype="fp32")
    steps = args.warmup + args.steps
    cfg = RLConfig(steps=steps, prompts_per_step=args.prompts, group_size=args.group, lr=args.lr, schedule="constant",
                   warmup_steps=0, beta=args.beta, mu=args.mu, minibatch_size=args.prompts * args.group,
                   micro_batch_size=args.micro, sampling=SamplingConfig(temperature=args.temperature, max_new_tokens=args.max_new),
                   checkpoint_every=args.tta_every if args.mode == "tta" else 0, log_samples=0)
    rollouts = []  # per generate call: seconds, generated tokens, prompt + completion tokens, tokens run (prompts once)

    class TimedEngine:
        """The torch engine, timing each generate call (the trainer sees only the Engine protocol)."""

        def __init__(self, engine):
            self.engine, self.tokenizer, self.pad_id = engine, engine.tokenizer, engine.pad_id

        def generate(self, prompts, sampling, n=1):
            t0 = time.perf_counter()
            r = self.engine.generate(prompts, sampling, n)
            seq = sum(len(r.prompt_ids[i // n]) for i in range(len(r.texts))) + int(r.lengths.sum())
            rollouts.append((time.perf_counter() - t0, int(r.lengths.sum()), seq, sum(map(len, r.prompt_ids)) + int(r.lengths.sum()),
                             r.lengths.tolist()))
            return r

        def __getattr__(self, name):  # load_weights, rng_state, set_rng_state, close
            return getattr(self.engine, name)

    if args.train_all_rows:  # ablation: zero advantages become 1e-30, so no row is skipped (the step is the same)
        grpo = ALGORITHMS["grpo"]
        ALGORITHMS["grpo"] = replace(grpo, advantages=lambda rewards, group_size: grpo.advantages(rewards, group_size) + 1e-30)
    engine = TimedEngine(make_engine("torch", model, tok, seed=args.seed))
    curve = []
    if args.mode == "tta":
        evaluate = _evaluator(args, task, tok, template, system)
        curve.append((0, evaluate(model)))
        save = r1lab.store.checkpoint.save

        def save_and_eval(run_dir, step, policy, tokenizer, state, *rest):  # runs after the step's timing
            curve.append((step, evaluate(policy)))
            return save(run_dir, step, policy, tokenizer, state, *rest)

        r1lab.store.checkpoint.save = save_and_eval
    with tempfile.TemporaryDirectory() as run_dir:
        train_rl(model, tok, task, cfg, Path(run_dir), engine=engine, template=template, system=system, seed=args.seed)
        metrics = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    rows = [{"step_s": m["step_time"], "gen_s": g, "gen_tokens": gt, "seq_tokens": st, "reward": m["reward"],
             "accuracy": m.get("accuracy"), "completion_len": m["completion_len_mean"], "gen_run_tokens": gr,
             "train_run_tokens": m.get("tokens_trained", 0), "trained_frac": m.get("trained_frac"), "lengths": lengths,
             "threads": m.get("threads")}
            for m, (g, gt, st, gr, lengths) in zip(metrics, rollouts)]
    return {"steps": rows, "curve": curve, "params": _common.n_params(model), "threads": torch.get_num_threads()}


def child_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from r1lab.data.format import apply_template
    from r1lab.models.io import load_tokenizer
    from r1lab.rewards.registry import Rewards

    task, template, system = _common_setup(args)
    tok = load_tokenizer(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    steps = (args.warmup + args.steps) * args.mu  # TRL counts optimizer steps; a generation serves mu of them
    examples = _prompt_order(task, args.seed, (args.warmup + args.steps) * args.prompts)
    data = Dataset.from_list([{"prompt": apply_template(e.prompt, template, tok, system), "idx": i} for i, e in enumerate(examples)])
    rewards_fn = Rewards({"accuracy": 1.0, "format": 1.0}, task, {"helpfulness": 1.0})
    eos = tok.eos_token_id
    accuracy, equal_groups = [], []

    def reward(prompts, completions, completion_ids, idx, **_):
        responses = ["<think>" + c for c in completions]  # the template pre-fills <think>, as r1lab's response_prefix
        infos = [{"num_tokens": len(ids), "max_tokens": args.max_new, "truncated": eos not in ids} for ids in completion_ids]
        totals, per_fn = rewards_fn(responses, [examples[i] for i in idx], infos)
        accuracy.append(sum(a >= 1.0 for a in per_fn["accuracy"]) / len(totals))
        groups = [totals[j:j + args.group] for j in range(0, len(totals), args.group)]  # TRL keeps a group together
        equal_groups.append(sum(max(g) == min(g) for g in groups) / len(groups))
        return totals

    rollouts = []
    generate = GRPOTrainer._generate_single_turn

    def timed_generate(self, prompt_ids, *a, **kw):
        t0 = time.perf_counter()
        completion_ids, logprobs = generate(self, prompt_ids, *a, **kw)
        gen = sum(map(len, completion_ids))
        rollouts.append((time.perf_counter() - t0, gen, gen + sum(map(len, prompt_ids)), list(map(len, completion_ids))))
        return completion_ids, logprobs

    GRPOTrainer._generate_single_turn = timed_generate
    step_times, curve = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            step_times.append(time.perf_counter() - self.t0)

    callbacks = [Timer()]
    if args.mode == "tta":
        evaluate = _evaluator(args, task, tok, template, system)
        curve.append((0, evaluate(model)))

        class Eval(TrainerCallback):  # after Timer: evaluation is outside the step's time
            def on_step_end(self, a, state, control, model=None, **kw):
                if state.global_step % (args.tta_every * args.mu) == 0 or state.global_step == steps:
                    curve.append((state.global_step // args.mu, evaluate(model)))
                    model.train()

        callbacks.append(Eval())
    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, max_steps=steps, per_device_train_batch_size=args.micro,
            gradient_accumulation_steps=args.prompts * args.group // args.micro, num_generations=args.group,
            max_completion_length=args.max_new, temperature=args.temperature, top_p=1.0, top_k=0,
            beta=args.beta, num_iterations=args.mu, epsilon=0.2, loss_type="grpo", scale_rewards="group",
            learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.99,
            weight_decay=0.0, max_grad_norm=1.0, bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False,
            shuffle_dataset=False, logging_steps=1, report_to="none", save_strategy="no", seed=args.seed,
            disable_tqdm=True, log_completions=False, dataloader_num_workers=0)
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=data, processing_class=tok,
                              callbacks=callbacks)
        trainer.train()
    logs = [h for h in trainer.state.log_history if "reward" in h]
    rows = []
    for i in range(len(rollouts)):  # one generation per mu optimizer steps
        cycle = slice(i * args.mu, (i + 1) * args.mu)
        rows.append({"step_s": sum(step_times[cycle]), "gen_s": rollouts[i][0], "gen_tokens": rollouts[i][1],
                     "seq_tokens": rollouts[i][2], "reward": logs[i * args.mu]["reward"] if i * args.mu < len(logs) else None,
                     "accuracy": accuracy[i], "completion_len": rollouts[i][1] / (args.prompts * args.group),
                     "own_step_time": sum(h.get("step_time", 0.0) for h in logs[cycle]), "lengths": rollouts[i][3],
                     "equal_groups": equal_groups[i]})
    return {"steps": rows, "curve": curve, "params": _common.n_params(model), "threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# The parent: models, children, matmul peak, table, JSON


def run_child(framework: str, mode: str, model_dir: Path, args, log_dir: Path) -> dict:
    out = log_dir / f"{framework}-{mode}-{args.workload}-seed{args.seed}.json"
    cmd = [sys.executable, __file__, "--child", framework, "--mode", mode, "--model-dir", str(model_dir), "--result", str(out)]
    for name in ("workload", "steps", "warmup", "prompts", "group", "max_new", "temperature", "mu", "beta", "lr", "micro", "seed",
                 "threads", "tta_every", "tta_eval_n", "train_all_rows"):
        value = getattr(args, name)
        if isinstance(value, bool):
            cmd += [f"--{name.replace('_', '-')}"] if value else []
            continue
        if mode == "tta" and name == "steps":
            value = args.tta_steps
        if mode == "tta" and name == "warmup":
            value = 0
        if value is not None:
            cmd += [f"--{name.replace('_', '-')}", str(value)]
    log = out.with_suffix(".log")
    t0 = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {framework:5s} {mode:10s} {args.workload} seed {args.seed} ... ", end="", flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        print(f"failed (see {log})")
        sys.exit(f"{framework} {mode} on {model_dir} failed:\n" + "".join(open(log).readlines()[-30:]))
    print(f"{time.perf_counter() - t0:.0f}s")
    return json.loads(out.read_text())


def summarise(result: dict, args, warmup: int, peak_gflops: float) -> dict:
    import statistics

    rows = result["steps"][warmup:]
    lengths = [n for r in rows for n in r["lengths"]]
    n = result["params"]
    step_s = sum(r["step_s"] for r in rows)
    gen_s = sum(r["gen_s"] for r in rows)
    gen_tokens = sum(r["gen_tokens"] for r in rows)
    seq_tokens = sum(r["seq_tokens"] for r in rows)
    flops = seq_tokens * n * (2 + 6 * args.mu + (2 if args.beta > 0 else 0))
    if "train_run_tokens" in rows[0]:  # r1lab: the matmul work it ran (prompts once per group, trained rows only)
        executed = n * sum(2 * r["gen_run_tokens"] + 6 * r["train_run_tokens"] for r in rows)
    else:  # TRL runs every row, prompt included (and keeps decoding finished rows: not counted, in its favour)
        executed = flops
    return {
        "s_per_step": step_s / len(rows),
        "gen_s_per_step": gen_s / len(rows),
        "rollout_tok_s": gen_tokens / gen_s,
        "train_tok_s": seq_tokens * args.mu / max(step_s - gen_s, 1e-9),
        "peak_fraction": executed / step_s / (peak_gflops * 1e9),
        "work_fraction": flops / step_s / (peak_gflops * 1e9),
        "trained_frac": (sum(r["trained_frac"] for r in rows) / len(rows)) if rows[0].get("trained_frac") is not None else 1.0,
        "gen_peak_fraction": 2 * n * sum(r.get("gen_run_tokens", r["seq_tokens"]) for r in rows) / gen_s / (peak_gflops * 1e9),
        "train_peak_fraction": (executed - 2 * n * sum(r.get("gen_run_tokens", r["seq_tokens"]) for r in rows))
                               / max(step_s - gen_s, 1e-9) / (peak_gflops * 1e9),
        "peak_rss_mb": result["peak_rss_mb"],
        "completion_len": sum(r["completion_len"] for r in rows) / len(rows),
        "completion_len_sd": statistics.pstdev(lengths),
        "completion_len_p10_p90": statistics.quantiles(lengths, n=10)[::8],
        # TRL: counted from its rewards; r1lab: the rows it skipped (advantage 0, which is a group of equal rewards)
        "equal_groups": (sum(r["equal_groups"] if "equal_groups" in r else 1 - r["trained_frac"] for r in rows) / len(rows)),
        "rewards": [r["reward"] for r in result["steps"]],
        "accuracy": [r["accuracy"] for r in result["steps"]],
        "params": n,
        "measured_steps": len(rows),
    }


def crossing(curve, step_seconds, threshold):
    """(steps, seconds) at the first evaluation with pass@1 >= threshold, or (None, None)."""
    for step, p in curve:
        if p >= threshold:
            return step, sum(step_seconds[:step])
    return None, None


def reward_agreement(a: list, b: list) -> dict:
    """Mean reward of the two runs and their difference in standard errors (steps as samples)."""
    import statistics

    a, b = [x for x in a if x is not None], [x for x in b if x is not None]
    se = ((statistics.pvariance(a) / len(a)) + (statistics.pvariance(b) / len(b))) ** 0.5 if len(a) > 1 and len(b) > 1 else 0.0
    diff = statistics.mean(a) - statistics.mean(b)
    return {"mean_r1lab": statistics.mean(a), "mean_trl": statistics.mean(b), "diff": diff,
            "z": diff / se if se > 0 else 0.0, "within_noise": abs(diff) <= 2 * se + 1e-9}


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the ~2M model, a few steps, a short time-to-accuracy run (< 5 min)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--workloads", default=None, help="comma-separated from " + ",".join(workloads.WORKLOADS) +
                    " (default: the family, " + ",".join(workloads.FAMILY) + "; quick: digits; all: every one)")
    ap.add_argument("--init", choices=["pretrained", "random"], default=None,
                    help="pretrained (default): tiny-world models pretrained by r1lab, built and cached on first use; "
                         "random: random init, whose completions all run to --max-new with reward 0 (quick: pretrained "
                         "if cached, else random)")
    ap.add_argument("--frameworks", default="r1lab,trl")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per run (default 8; quick: 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first steps")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=None, help="new tokens at most (default: the workload's)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--mu", type=int, default=1)
    ap.add_argument("--beta", type=float, default=0.0)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--micro", type=int, default=64, help="completions per forward/backward (both frameworks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-all-rows", action="store_true",
                    help="ablation: r1lab also runs the rows whose advantage is 0 (their gradient is 0 either way)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--tta-steps", type=int, default=None, help="time-to-accuracy steps (default 30; quick: 10; 0: skip)")
    ap.add_argument("--tta-every", type=int, default=5, help="evaluate every this many steps")
    ap.add_argument("--tta-eval-n", type=int, default=None, help="held-out problems per evaluation (default 100; quick: 50)")
    ap.add_argument("--tta-threshold", type=float, default=None, help="pass@1 to reach (default: the base's + 0.10)")
    ap.add_argument("--tta-seeds", type=int, default=None, help="time-to-accuracy runs per framework, curves averaged (default 3; quick: 1)")
    ap.add_argument("--out", default=None, help="folder for models and child logs (default: a temporary one)")
    ap.add_argument("--child", choices=["r1lab", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="throughput", choices=["throughput", "tta"], help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        result = (child_r1lab if args.child == "r1lab" else child_trl)(args)
        result["peak_rss_mb"] = _common.peak_rss_mb()
        Path(args.result).write_text(json.dumps(result))
        return

    sizes = (args.workloads or ("digits" if args.quick else ",".join(workloads.FAMILY)))
    sizes = list(workloads.WORKLOADS) if sizes == "all" else sizes.split(",")
    unknown = [w for w in sizes if w not in workloads.WORKLOADS]
    if unknown:
        sys.exit(f"--workloads: unknown {', '.join(unknown)} (choose from {', '.join(workloads.WORKLOADS)})")
    args.steps = args.steps or (3 if args.quick else 8)
    args.tta_steps = args.tta_steps if args.tta_steps is not None else (10 if args.quick else 30)
    args.tta_eval_n = args.tta_eval_n or (50 if args.quick else 100)
    args.tta_seeds = args.tta_seeds or (1 if args.quick else 3)
    frameworks = args.frameworks.split(",")
    if "trl" in frameworks:
        try:
            import trl  # noqa: F401
        except ImportError:
            sys.exit("TRL is not installed: pip install -e '.[bench]'  (or --frameworks r1lab)")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="r1lab-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    peak = _common.matmul_peak()
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads); load average {os.getloadavg()[0]:.2f}")
    report = {"settings": {k: getattr(args, k) for k in ("prompts", "group", "temperature", "mu", "beta", "lr",
                                                           "micro", "steps", "warmup", "seed", "threads", "train_all_rows")},
              "matmul_peak_gflops": [peak], "load_average_start": os.getloadavg()[0], "models": {}}

    if args.init is None:
        cached = all(_common.pretrained_model_dir(workloads.WORKLOADS[w].size, build=False) for w in sizes
                     if workloads.WORKLOADS[w].task == "tinyworld")
        args.init = "pretrained" if cached or not args.quick else "random"
        if args.init == "random":
            print("--quick: the pretrained models are not built yet, so random init (run once without --quick to build them)")
    report["settings"]["init"] = args.init
    raw = {}
    if args.init == "random" and any(workloads.WORKLOADS[w].task != "tinyworld" for w in sizes):
        sys.exit("--init random is for the tinyworld workloads (a random digits model never writes an answer)")
    max_new = args.max_new
    for size in sizes:
        w = workloads.WORKLOADS[size]
        if args.init == "pretrained":
            model_dir = workloads.model_dir(size)
        else:
            model_dir = _common.make_model_dir(w.size, work / f"model-{w.size}", seed=args.seed)
        raw[size] = {}
        run_args = argparse.Namespace(**{**vars(args), "workload": size, "max_new": max_new or w.max_new})
        for fw in frameworks:
            raw[size][fw] = run_child(fw, "throughput", model_dir, run_args, work)
            report["matmul_peak_gflops"].append(_common.matmul_peak())  # the load on the machine may change
    # The fractions use the highest peak measured in the run: under a changing load that is the
    # conservative choice (a peak measured in a busy moment would flatter every fraction).
    peak = report["matmul_peak"] = max(report["matmul_peak_gflops"])
    report["models"] = {size: {fw: summarise(res, args, args.warmup, peak) for fw, res in runs.items()} for size, runs in raw.items()}
    report["workloads"] = {size: {**asdict(workloads.WORKLOADS[size]), "max_new": max_new or workloads.WORKLOADS[size].max_new}
                           for size in sizes}

    base = _common.base_model_dir()
    if args.tta_steps and base is None:
        print("time-to-accuracy: skipped, no pretrained tiny-world base in the cache (run `r1lab run r1-zero` once)")
    elif args.tta_steps:
        seeds = [args.seed + i for i in range(args.tta_seeds)]
        tta_args = {**vars(args), "workload": "tinyworld-base", "max_new": max_new or workloads.WORKLOADS["tinyworld-base"].max_new}
        tta = {fw: [run_child(fw, "tta", base, argparse.Namespace(**{**tta_args, "seed": seed}), work) for seed in seeds]
               for fw in frameworks}
        base_p = tta[frameworks[0]][0]["curve"][0][1]  # the same model and evaluator for every run
        threshold = args.tta_threshold if args.tta_threshold is not None else round(base_p + 0.10, 3)
        entry = {"threshold": threshold, "base_pass@1": base_p, "steps": args.tta_steps, "eval_every": args.tta_every,
                 "eval_problems": args.tta_eval_n, "seeds": seeds}
        for fw, runs in tta.items():
            # Mean over seeds of pass@1 at each evaluation and of the time of each step.
            curve = [(step, sum(r["curve"][i][1] for r in runs) / len(runs)) for i, (step, _) in enumerate(runs[0]["curve"])]
            secs = [sum(r["steps"][i]["step_s"] for r in runs) / len(runs) for i in range(len(runs[0]["steps"]))]
            steps, seconds = crossing(curve, secs, threshold)
            entry[fw] = {"curve": curve, "steps_to_threshold": steps, "seconds_to_threshold": seconds,
                         "per_seed": [dict(zip(("steps", "seconds"), crossing(r["curve"], [x["step_s"] for x in r["steps"]], threshold)))
                                      for r in runs],
                         "s_per_step": sum(secs) / len(secs),
                         "rewards": [x["reward"] for r in runs for x in r["steps"]],
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                         "rollout_tok_s": sum(x["gen_tokens"] for r in runs for x in r["steps"]) / sum(x["gen_s"] for r in runs for x in r["steps"])}
        if len(frameworks) == 2:
            entry["reward_agreement"] = reward_agreement(entry["r1lab"]["rewards"], entry["trl"]["rewards"])
        report["time_to_accuracy"] = entry

    report["load_average_end"] = os.getloadavg()[0]
    report["wall_seconds"] = time.perf_counter() - t_start
    _headline(report, sizes, frameworks)
    print_table(report, sizes, frameworks)
    if frameworks == ["r1lab", "trl"]:
        print_family(report, sizes)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")


def _headline(report: dict, sizes: list[str], frameworks: list[str]) -> None:
    """The JSON's top-level keys: the first model's figures (the ~2M one by default)."""
    if frameworks != ["r1lab", "trl"]:
        return
    r, t = report["models"][sizes[0]]["r1lab"], report["models"][sizes[0]]["trl"]
    report.update({
        "model": sizes[0],
        "speedup_step": t["s_per_step"] / r["s_per_step"],
        "speedup_rollout": r["rollout_tok_s"] / t["rollout_tok_s"],
        "speedup_train": r["train_tok_s"] / t["train_tok_s"],
        "peak_fraction_r1lab": r["peak_fraction"],
        "peak_fraction_trl": t["peak_fraction"],
        "work_fraction_r1lab": r["work_fraction"],
        "work_fraction_trl": t["work_fraction"],
        "rows_trained_r1lab": r["trained_frac"],
        "peak_rss_mb_r1lab": r["peak_rss_mb"],
        "peak_rss_mb_trl": t["peak_rss_mb"],
        "per_model": {s: {"speedup_step": report["models"][s]["trl"]["s_per_step"] / report["models"][s]["r1lab"]["s_per_step"],
                          "speedup_rollout": report["models"][s]["r1lab"]["rollout_tok_s"] / report["models"][s]["trl"]["rollout_tok_s"],
                          "peak_fraction_r1lab": report["models"][s]["r1lab"]["peak_fraction"],
                          "peak_fraction_trl": report["models"][s]["trl"]["peak_fraction"],
                          "work_fraction_r1lab": report["models"][s]["r1lab"]["work_fraction"]} for s in sizes},
    })
    ratios = [m["speedup_step"] for m in report["per_model"].values()]
    report["speedup_step_range"] = [min(ratios), max(ratios)]
    tta = report.get("time_to_accuracy")
    if tta:  # the pretrained base: completions that end (EOS) at different lengths, as in real runs
        report["base_speedup_step"] = tta["trl"]["s_per_step"] / tta["r1lab"]["s_per_step"]
        report["base_speedup_rollout"] = tta["r1lab"]["rollout_tok_s"] / tta["trl"]["rollout_tok_s"]
        report["tta_steps_r1lab"], report["tta_steps_trl"] = tta["r1lab"]["steps_to_threshold"], tta["trl"]["steps_to_threshold"]
        report["tta_seconds_r1lab"], report["tta_seconds_trl"] = tta["r1lab"]["seconds_to_threshold"], tta["trl"]["seconds_to_threshold"]


def print_family(report: dict, sizes: list[str]) -> None:
    """One line per workload (bench/README.md's family table): what varies, and r1lab against TRL."""
    print("\n| workload | params | vocabulary | completion length (mean, sd) | equal groups (r1lab) | s/step r1lab / TRL | "
          "speedup | rollout speedup | generation % of peak r1lab / TRL | update % of peak r1lab / TRL |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        r, t, w = report["models"][size]["r1lab"], report["models"][size]["trl"], report["workloads"][size]
        print(f"| {size} | {r['params'] / 1e6:.2f}M | {w['vocab'] if w['task'] == 'digits' else 438} | "
              f"{r['completion_len']:.1f}, {r['completion_len_sd']:.1f} | {r['equal_groups']:.0%} | "
              f"{r['s_per_step']:.3f} / {t['s_per_step']:.3f} | **{t['s_per_step'] / r['s_per_step']:.2f}x** | "
              f"{r['rollout_tok_s'] / t['rollout_tok_s']:.2f}x | {r['gen_peak_fraction']:.0%} / {t['gen_peak_fraction']:.0%} | "
              f"{r['train_peak_fraction']:.0%} / {t['train_peak_fraction']:.0%} |")
    lo, hi = report["speedup_step_range"]
    print(f"\nr1lab's step is {lo:.2f}x to {hi:.2f}x faster than TRL's over these workloads")


def print_table(report: dict, sizes: list[str], frameworks: list[str]) -> None:
    both = frameworks == ["r1lab", "trl"]
    s = report["settings"]
    print(f"\n{s['prompts']} prompts x {s['group']} completions, T={s['temperature']}, "
          f"mu={s['mu']}, beta={s['beta']}, fp32; {s['steps']} timed steps after {s['warmup']} warm-up; matmul peak "
          f"{report['matmul_peak']:.1f} GFLOP/s (highest of {len(report['matmul_peak_gflops'])} measured); load average {report['load_average_start']:.2f} -> {report['load_average_end']:.2f}")
    rows = [("s/step", "s_per_step", ".3f", True), ("  of which sampling (s)", "gen_s_per_step", ".3f", True),
            ("rollout tokens/s", "rollout_tok_s", ",.0f", False), ("training tokens/s", "train_tok_s", ",.0f", False),
            ("peak RSS (MB)", "peak_rss_mb", ",.0f", True), ("fraction of matmul peak", "peak_fraction", ".1%", False),
            ("  sampling phase", "gen_peak_fraction", ".1%", False), ("  training phase", "train_peak_fraction", ".1%", False),
            ("useful work / peak", "work_fraction", ".1%", False), ("rows trained", "trained_frac", ".1%", None),
            ("mean completion length", "completion_len", ".1f", None), ("  its standard deviation", "completion_len_sd", ".1f", None),
            ("groups with equal rewards", "equal_groups", ".1%", None)]
    for size in sizes:
        res = report["models"][size]
        n = res[frameworks[0]]["params"]
        w = report["workloads"][size]
        shape = f"hidden {w['hidden']}, vocabulary {w['vocab']}" if w["task"] == "digits" else f"tiny world {w['size']}"
        print(f"\n{size} ({shape}, {n / 1e6:.2f}M parameters, {s['init']} init, <= {w['max_new']} new tokens)")
        print(f"  {'':26s}" + "".join(f"{fw:>12s}" for fw in frameworks) + ("   r1lab/TRL" if both else ""))
        for label, key, spec, lower_better in rows:
            vals = [res[fw][key] for fw in frameworks]
            line = f"  {label:26s}" + "".join(f"{fmt(v, spec):>12s}" for v in vals)
            if both and vals[1]:
                line += f"   {vals[0] / vals[1]:9.2f}x"
            print(line)
    tta = report.get("time_to_accuracy")
    if tta:
        print(f"\ntime-to-accuracy (pretrained tiny-world base, pass@1 {tta['base_pass@1']:.3f} -> {tta['threshold']:.3f}, "
              f"{tta['eval_problems']} held-out problems x 4, every {tta['eval_every']} steps, at most {tta['steps']} steps, "
              f"mean of {len(tta['seeds'])} seed(s))")
        print(f"  {'':26s}" + "".join(f"{fw:>12s}" for fw in frameworks) + ("   r1lab/TRL" if both else ""))
        for label, key, spec in (("steps", "steps_to_threshold", "d"), ("seconds", "seconds_to_threshold", ".1f"),
                                 ("s/step", "s_per_step", ".3f"), ("rollout tokens/s", "rollout_tok_s", ",.0f")):
            vals = [tta[fw][key] for fw in frameworks]
            line = f"  {label:26s}" + "".join(f"{fmt(v, spec):>12s}" for v in vals)
            if both and None not in vals and vals[1]:
                line += f"   {vals[0] / vals[1]:9.2f}x"
            print(line)
        for fw in frameworks:
            print(f"  {fw} pass@1 by step: " + ", ".join(f"{st}: {p:.3f}" for st, p in tta[fw]["curve"]))
            if len(tta["seeds"]) > 1:
                print(f"  {fw} steps to threshold per seed: " + ", ".join(str(x["steps"]) for x in tta[fw]["per_seed"]))
        if "reward_agreement" in tta:
            a = tta["reward_agreement"]
            print(f"  mean reward per step: r1lab {a['mean_r1lab']:.3f}, TRL {a['mean_trl']:.3f} (difference {a['z']:+.1f} "
                  f"standard errors: {'within' if a['within_noise'] else 'outside'} noise)")


if __name__ == "__main__":
    main()
