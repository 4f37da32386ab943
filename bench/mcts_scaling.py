"""The R1 paper's reason MCTS failed, measured in miniature: the finer the steps, the larger the search space, and a
capped search covers less of it (docs/FAILED.md, "Monte-Carlo tree search").

The tree search of an mcts stage (r1lab/rl/mcts.py) on the tiny-world base, with the policy frozen: for each
workload (what a step is, which problems), --rounds rounds of --problems fresh train problems are searched
with the same cap (max_expansions, branching, c_puct: MCTSConfig's defaults unless given), and the value model
(a fresh copy of the base's transformer + head per workload) is trained on each round's finished paths, as an
mcts stage trains it. The table: expansions used per problem (of the cap), the value model's absolute error on
the last round's nodes (against the mean outcome the search found under each), policy + value-model tokens per
problem, the best path's accuracy over all rounds, the share of problems whose tree holds a correct answer at all,
and the tree's depth along the best path.

    python bench/mcts_scaling.py [--rounds 4] [--problems 16] [--max-expansions 12] [--json out.json]

Workloads measured (WORKLOADS): tinyworld/arithmetic with step_tokens 0 (sentences), 8 and 4; tinyworld/countdown
(longer answers) with sentences and 4 tokens; each on the default base (tinyworld-bfe0147f5384), --rounds 4
--problems 16, max_expansions 12, branching 3, c_puct 1.5, widening 0.5, a 140-token answer budget; 2 min 3 s in
all with OMP_NUM_THREADS=1 on 2 CPU cores shared with another job. The table is in docs/FAILED.md ("The scaling
knob"); in short, best-path accuracy 0.95 / 0.92 / 0.89 on arithmetic (sentences / 8 / 4 tokens), 0.33 / 0.13 on
countdown (sentences / 4 tokens, where no tree reached a finished answer), and a value model never better than a
constant.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import ROOT  # noqa: F401  (puts the repository on sys.path)

from r1lab.config import MCTSConfig, PretrainConfig
from r1lab.data.format import render_prompt, response_prefix
from r1lab.engines import make_engine
from r1lab.models.io import load_model
from r1lab.rewards.rules import make_accuracy_reward
from r1lab.rl.mcts import TreeSearch
from r1lab.rl.mcts_loop import train_values
from r1lab.rl.ppo import ValueModel
from r1lab.rl.tree import best_path
from r1lab.tinyworld.build import cache_dir, pretrain
from r1lab.tinyworld.problems import TinyWorldTask

WORKLOADS = [("tinyworld/arithmetic", 0), ("tinyworld/arithmetic", 8), ("tinyworld/arithmetic", 4),
             ("tinyworld/countdown", 0), ("tinyworld/countdown", 4)]


def measure(model_dir, task_name: str, step_tokens: int, args) -> dict:
    """One workload: rounds of search with the value model trained between them -> the table's row."""
    torch.manual_seed(0)
    policy, tokenizer = load_model(str(model_dir), "cpu", "fp32", True, "model")
    engine = make_engine("torch", policy, tokenizer, seed=0)
    task = TinyWorldTask(task_name, test_size=20)
    cfg = MCTSConfig(step_tokens=step_tokens, max_expansions=args.max_expansions, branching=args.branching,
                     c_puct=args.c_puct, sampling={"max_new_tokens": 140})
    value_model = ValueModel(policy)
    optimizer = torch.optim.AdamW(value_model.parameters(), lr=cfg.value_lr, betas=(0.9, 0.99))
    search = TreeSearch(engine, value_model, cfg, make_accuracy_reward(task), {tokenizer.eos_token_id}, tokenizer.eos_token_id)
    examples = task.examples("train")[: args.rounds * args.problems]
    results, t0 = [], time.time()
    for start in range(0, len(examples), args.problems):
        round_results = []
        for ex in examples[start : start + args.problems]:
            prompt = render_prompt(ex, "r1-zero", tokenizer, "")
            round_results.append(search.run(tokenizer(prompt, add_special_tokens=False)["input_ids"], response_prefix(prompt), ex))
        errors = [abs(v - target) for r in round_results for v, target in r.value_errors()]  # before this round's update
        train_values(value_model, optimizer, round_results, tokenizer.eos_token_id, cfg)
        results += round_results
    n = len(results)
    return {"task": task_name.split("/")[1], "step": "sentence" if step_tokens == 0 else f"{step_tokens} tokens",
            "expansions": sum(r.expansions for r in results) / n,
            "value_abs_error": sum(errors) / len(errors) if errors else None,
            "tokens_per_problem": sum(r.policy_tokens + r.value_tokens for r in results) / n,
            "best_path_accuracy": sum(r.score for r in results) / n,
            "solved_in_tree": sum(any(o >= 1.0 for _, o in r.finished) for r in results) / n,
            "depth": sum(len(best_path(r.root)) - 1 for r in results) / n, "seconds": round(time.time() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--problems", type=int, default=16)
    parser.add_argument("--max-expansions", type=int, default=MCTSConfig().max_expansions)
    parser.add_argument("--branching", type=int, default=MCTSConfig().branching)
    parser.add_argument("--c-puct", type=float, default=MCTSConfig().c_puct)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny models: threads only wait on each other beside the other jobs of a shared machine
    model_dir = cache_dir(PretrainConfig())
    if not (model_dir / "r1lab.json").exists():
        model_dir = pretrain(PretrainConfig())  # the default base, built once (minutes) and cached
    rows = []
    header = ("task", "step", "expansions", "value_abs_error", "tokens_per_problem", "best_path_accuracy", "solved_in_tree",
              "depth", "seconds")
    print(" | ".join(header), flush=True)
    for task_name, step_tokens in WORKLOADS:
        row = measure(model_dir, task_name, step_tokens, args)
        rows.append(row)
        print(" | ".join(f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k]) for k in header), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
