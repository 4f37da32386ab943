"""What tool episodes cost the torch engine: a rollout of episodes with calls against one turn of as many tokens.

    python bench/tool_episodes.py [--new 64] [--calls 3] [--result 4] [--repeats 5] [--size 1M]

A random-init tiny-world Llama (bench/_common.py SIZES), the call and result markers added as tokens, 16 prompts
x 8 samples, fp32. Its head is shifted so that every row runs to the budget (EOS never) and writes `</tool>`
about one token in eight, so nearly every episode makes all --calls calls (max_turns = calls + 1) well before
the budget: the calls are random text, so each comes back as a tool error cut to --result tokens
(`<result>` + result + `</result>`). Three rollouts, the same number of completion tokens per row (--new):

- one turn: `generate_ids`, --new tokens sampled;
- live: `run_episodes` on the fast path, results prefilled into the live KV cache (engines/live_episodes.py);
- re-prefill: `run_episodes` turn by turn over `generate_ids` (what every engine without the live loop does:
  each turn prefills prompt + episode so far again).

They run round-robin, --repeats times after a warm-up; medians and their ratios are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402


def setup(size: str, call_rate: float):
    from r1lab.config import PretrainConfig
    from r1lab.engines.torch_engine import TorchEngine
    from r1lab.models.io import load_tokenizer
    from r1lab.models.vocab import add_tokens
    from r1lab.tinyworld.build import build_model
    from r1lab.tools.calls import PLAIN

    tokenizer = load_tokenizer(str(_common.tokenizer_dir()))
    model = build_model(PretrainConfig(max_len=256, **_common.SIZES[size]), len(tokenizer)).eval()
    add_tokens(model, tokenizer, list(PLAIN), seed=0)
    V, close, eos = len(tokenizer), tokenizer.convert_tokens_to_ids(PLAIN[1]), tokenizer.eos_token_id
    shift = torch.zeros(V)  # random logits are near 0: exp(shift) / (V - 1 + exp(shift)) = call_rate
    shift[close], shift[eos] = torch.tensor(call_rate * (V - 1) / (1 - call_rate)).log(), -1e4
    model.lm_head.register_forward_hook(lambda m, i, out: out + shift.to(out.dtype))
    return TorchEngine(model, tokenizer, seed=0), tokenizer


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1M", choices=list(_common.SIZES))
    ap.add_argument("--new", type=int, default=64, help="completion tokens per row (generated + results)")
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--result", type=int, default=4, help="tokens of a result's text (plus its 2 markers)")
    ap.add_argument("--call-rate", type=float, default=1 / 8)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from r1lab.config import SamplingConfig
    from r1lab.engines.episodes import run_episodes
    from r1lab.tinyworld.problems import TinyWorldTask
    from r1lab.tools import calculator
    from r1lab.tools.box import Tool, ToolBox

    engine, tokenizer = setup(args.size, args.call_rate)
    prompts = [e.prompt for e in TinyWorldTask("tinyworld").examples("train")[: args.prompts]]
    prompt_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=args.new)
    box = ToolBox([Tool.of(calculator)])
    turn_by_turn = SimpleNamespace(tokenizer=tokenizer, generate_ids=engine.generate_ids)  # no run_episodes: re-prefill

    def episodes(eng):
        return run_episodes(eng, prompt_ids, sampling, args.group, box, max_turns=args.calls + 1, budget=args.new,
                            max_result_tokens=args.result)

    modes = {"one turn": lambda: engine.generate_ids(prompt_ids, sampling, n=args.group),
             "live": lambda: episodes(engine), "re-prefill": lambda: episodes(turn_by_turn)}
    times, shapes = {m: [] for m in modes}, {}
    for repeat in range(args.repeats + 1):  # the first round warms up
        for mode, run in modes.items():
            t0 = time.perf_counter()
            rollout = run()
            if repeat:
                times[mode].append(time.perf_counter() - t0)
            read = rollout.completion_mask - (rollout.loss_mask if rollout.loss_mask is not None else rollout.completion_mask)
            shapes[mode] = (rollout.lengths.float().mean().item(), read.sum(1).float().mean().item(),
                            sum(rollout.tool_calls) / len(rollout.texts) if rollout.tool_calls else 0.0)
    median = {m: statistics.median(t) for m, t in times.items()}
    print(f"{args.size} random-init, {args.prompts} prompts x {args.group}, {torch.get_num_threads()} threads, "
          f"{args.repeats} repeats (median s per rollout)")
    for mode in modes:
        length, read, calls = shapes[mode]
        print(f"  {mode:>10}: {median[mode]:.3f} s  ({length:.1f} tokens per row, {read:.1f} of them results, "
              f"{calls:.2f} calls)  [{', '.join(f'{t:.3f}' for t in times[mode])}]")
    print(f"live / one turn {median['live'] / median['one turn']:.2f}x, re-prefill / one turn "
          f"{median['re-prefill'] / median['one turn']:.2f}x, re-prefill / live {median['re-prefill'] / median['live']:.2f}x")


if __name__ == "__main__":
    main()
