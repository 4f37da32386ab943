"""Where r1lab's GRPO step spends its time: rollout, training batch, update (and optionally a torch.profiler table).

    python bench/profile_step.py --workload digits --steps 3 [--profiler] [--root DIR]
    python bench/profile_step.py --workload digits --decode     # one decode step: matmuls, attention, the rest
    python bench/profile_step.py --size 2M [--model DIR]     # a random-init tiny-world model of --size, or DIR

--root runs another checkout's r1lab (e.g. the code before a change) on the same model and prompts.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)
import torch
from _common import make_model_dir, n_params


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default=None, help="a workload of bench/workloads.py (its model, task and max new tokens)")
    ap.add_argument("--size", default="2M")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=None, help="default: the workload's, else 64")
    ap.add_argument("--profiler", action="store_true")
    ap.add_argument("--model", default=None, help="a model directory instead of a random-init --size model (whose "
                    "rewards are all 0, so no row is trained: pass a pretrained one to profile the update)")
    ap.add_argument("--root", default=None, help="import r1lab from this folder instead of this checkout")
    ap.add_argument("--rows", type=int, default=25, help="rows of the profiler table")
    ap.add_argument("--decode", action="store_true", help="time one full-batch decode step and its parts instead")
    args = ap.parse_args()
    if args.root:
        import sys

        sys.path.insert(0, args.root)

    import workloads

    import r1lab
    from r1lab.config import RLConfig, SamplingConfig
    from r1lab.data.format import apply_template
    from r1lab.engines import make_engine
    from r1lab.models.io import load_model
    from r1lab.rewards.registry import Rewards
    from r1lab.rl.algorithms import ALGORITHMS
    from r1lab.rl.batch import Batch
    from r1lab.rl.rollouts import PromptStream, sample_step
    from r1lab.rl.step import score, update

    print("r1lab from", r1lab.__file__)

    w = workloads.WORKLOADS[args.workload or "tinyworld-2M"]
    if args.workload:
        d = workloads.model_dir(args.workload)
    else:
        d = Path(args.model) if args.model else make_model_dir(args.size, Path(tempfile.gettempdir()) / f"r1lab-bench-{args.size}")
    args.max_new = args.max_new or (w.max_new if args.workload else 64)
    model, tok = load_model(str(d), device="cpu", dtype="fp32")
    N = n_params(model)
    if args.decode:
        return decode_parts(model, args.prompts, args.group, args.max_new)
    task = workloads.make_task(w)
    template, system = workloads.template(w)
    cfg = RLConfig(prompts_per_step=args.prompts, group_size=args.group, sampling=SamplingConfig(max_new_tokens=args.max_new))
    rewards_fn = Rewards(cfg.rewards, task, cfg.general_rewards)
    stream = PromptStream(task.examples("train"), 0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    engine = make_engine("torch", model, tok, seed=0)
    algorithm = ALGORITHMS[cfg.algorithm]
    model.train()

    def prompt_of(e):
        return apply_template(e.prompt, template, tok, system)

    for step in range(args.steps + 1):
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if args.profiler and step == args.steps else None
        if prof:
            prof.__enter__()
        t0 = time.perf_counter()
        seen, train, _ = sample_step(engine, stream, rewards_fn, prompt_of, cfg)
        t1 = time.perf_counter()
        batch, _ = score(Batch.from_rollout(train.rollout, train.rewards, engine.pad_id), algorithm, cfg)
        t2 = time.perf_counter()
        stats = update(model, opt, batch, algorithm, cfg)
        t3 = time.perf_counter()
        if prof:
            prof.__exit__(None, None, None)
        gen_tokens = int(train.rollout.lengths.sum())
        P = sum(len(p) for p in train.rollout.prompt_ids) / len(train.rollout.prompt_ids)
        trained = batch.advantages != 0  # the rows the update ran (the others have gradient 0 and are skipped)
        train_tokens = int(batch.completion_mask[trained].sum()) + P * int(trained.sum())
        if step == 0:
            continue  # warm-up
        print(f"step {step}: total {t3 - t0:.3f}s  rollout {t1 - t0:.3f}s ({gen_tokens / (t1 - t0):.0f} tok/s, "
              f"{2 * N * gen_tokens / (t1 - t0) / 1e9:.1f} GFLOP/s)  batch {t2 - t1:.3f}s  update {t3 - t2:.3f}s "
              f"({6 * N * train_tokens / (t3 - t2) / 1e9:.1f} GFLOP/s, {stats['trained_frac']:.0%} of rows trained)  gen tokens {gen_tokens}")
    if args.profiler:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


@torch.no_grad()
def decode_parts(model, prompts: int, group: int, max_new: int, prompt_len: int = 10, repeats: int = 3):
    """ms per decode step of the fast decoder at batch prompts x group with a cache of prompt_len + max_new
    columns, against its linear layers alone at the same shapes and its attention alone, reading each
    layer's own cache (as the step does) or one layer's cache four times (the same ops on bytes that stay
    in the CPU's caches: the difference is memory traffic)."""
    from r1lab.engines.fast_decoder import FastDecoder, KVCache

    model.eval()
    dec = FastDecoder.of(model)
    B = prompts * group
    valid = torch.ones(prompts, prompt_len, dtype=torch.bool)
    cache = KVCache(dec, valid, group, max_new)
    dec.prefill(torch.randint(0, 10, (prompts, prompt_len)), torch.arange(prompt_len).repeat(prompts, 1), valid, cache)
    cache.rebuild(None, max_new)
    t = max_new // 2
    for i in range(t + 1):
        cache.open(i)
    tokens, positions = torch.randint(0, 10, (B,)), torch.full((B,), prompt_len + t)
    x = torch.randn(B, model.config.hidden_size)
    ffn = dec.layers[0]["down"].pairs[0][0].size(1)

    def linears():
        for layer in dec.layers:
            layer["qkv"](x)
            layer["o"](x, residual=x)
            layer["down"](layer["gate_up"](x)[:, :ffn], residual=x)
        model.lm_head(x)

    q = torch.randn(B * dec.kv_heads, dec.heads // dec.kv_heads, dec.head_dim)

    def attention(caches):
        for k, v in caches:
            k, v = k.view(q.size(0), -1, dec.head_dim), v.view(q.size(0), -1, dec.head_dim)
            torch.bmm(torch.baddbmm(cache.bias, q, k.transpose(1, 2)).softmax(-1), v)

    parts = {"step": lambda: dec.step(tokens, positions, t, cache), "linear layers": linears,
             "attention, each layer's cache": lambda: attention(zip(cache.k, cache.v)),
             "attention, one cache x layers": lambda: attention([(cache.k[0], cache.v[0])] * len(cache.k))}
    kv_mb = 2 * sum(k.numel() * k.element_size() for k in cache.k) / 2**20
    print(f"decode step at batch {B}, {cache.k[0].size(2)} key columns, {len(cache.k)} layers: the keys and values "
          f"read per step are {kv_mb:.1f} MB")
    for name, fn in parts.items():
        for _ in range(10):
            fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(100):
                fn()
            times.append((time.perf_counter() - t0) * 10)  # ms per call
        print(f"  {name:32s} " + "  ".join(f"{ms:.2f}" for ms in times) + " ms")


if __name__ == "__main__":
    main()
