"""The mcts stage's loop: search, train the policy on the search's results and the value model on its outcomes,
log, checkpoint, resume (docs/FAILED.md).

    for step:
        results = [search.run(problem) for the step's P problems]        rl/mcts.py (tree: rl/tree.py)
        policy: cross-entropy on each correct best path's completion     as SFT, one optimizer step
        value model: regression of every finished path's prefixes        rl/outcome_values.py, value_updates steps
                     on its outcome
        metrics.jsonl: accuracy (the best paths' rule score), expansions, value error, tokens, compute_tokens
        checkpoint every cfg.checkpoint_every steps: the policy, the value model, the optimizer, the prompt stream, RNGs

One AdamW holds both models as two parameter groups (the policy's lr and the value lr): each update touches only
the parameters its loss reaches (the others' gradients are None, which AdamW skips), and one state dict
checkpoints both, as the RL loop keeps PPO's critic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from r1lab import dist
from r1lab.config.mcts import MCTSConfig
from r1lab.data.example import Task
from r1lab.data.format import render_prompt, response_prefix
from r1lab.engines.base import pad_id
from r1lab.models.device import autocast
from r1lab.models.io import restore_weights
from r1lab.progress import console, progress_bar
from r1lab.rewards.rules import make_accuracy_reward
from r1lab.rl.mcts import SearchResult, TreeSearch
from r1lab.rl.outcome_values import outcome_loss, right_padded
from r1lab.rl.ppo import ValueModel
from r1lab.rl.rollouts import PromptStream
from r1lab.store import checkpoint
from r1lab.store.logs import append_jsonl, append_metrics, truncate_jsonl
from r1lab.train.guards import DivergedError, params_finite
from r1lab.train.threads import ThreadFit


def train_mcts(policy, tokenizer, task: Task, cfg: MCTSConfig, run_dir: Path, *, engine, template: str,
               system: str | None, seed: int = 0, stage: str = "mcts", held_out: Callable[[], dict] | None = None,
               held_out_every: int = 0, report: Callable[[dict], None] | None = None) -> dict:
    """Tree search + training on `task` for cfg.steps steps, sampling with `engine` (the torch engine). Resumes
    from RUN/checkpoints if present. held_out(), report(row): as train_rl's. Returns {"steps", "wall_seconds"}."""
    if dist.world_size() > 1:
        raise ValueError("an mcts stage runs in one process (its search is sequential per problem)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    value_model = ValueModel(policy)  # after the seed: its head is zeros, its body the policy's copy
    optimizer = torch.optim.AdamW([{"params": [p for p in policy.parameters() if p.requires_grad]},
                                   {"params": list(value_model.parameters()), "lr": cfg.value_lr}],
                                  lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    training = dist.TrainingState(optimizer, policy, value_model=value_model)
    stream, pad = PromptStream(task.examples("train"), seed), pad_id(tokenizer)
    eos = {tokenizer.eos_token_id} | {int(i) for i in getattr(engine, "eos_ids", torch.tensor([])).tolist()}
    search = TreeSearch(engine, value_model, cfg, make_accuracy_reward(task), eos, pad)
    start, elapsed, compute = _resume(run_dir, training, policy, engine, stream, stage)
    for log in ("metrics.jsonl", "samples.jsonl"):  # a killed attempt's rows after the checkpoint go
        truncate_jsonl(run_dir / log, lambda row: row.get("step", 0) <= start)
    if held_out is not None and held_out_every and start == 0:
        append_metrics(run_dir / "metrics.jsonl", {"stage": stage, "step": 0, "compute_tokens": 0, **held_out()}, report)

    def prompt_of(example) -> str:
        return render_prompt(example, template, tokenizer, system)

    def spent(compute: int) -> bool:
        return bool(cfg.compute_budget) and compute >= cfg.compute_budget

    # torch's threads fitted to the cores other processes leave free, as the RL loop does (train/threads.py)
    fit_threads = ThreadFit(enabled=next(policy.parameters()).device.type == "cpu")
    last = start  # the last step done
    with progress_bar(f"{stage}: mcts", cfg.steps) as bar:
        bar(start)
        for step in range(start + 1, cfg.steps + 1):
            if spent(compute):
                break  # resumed from the checkpoint of the step that spent the budget
            t0 = time.time()
            fit_threads()
            examples = stream.next(cfg.prompts_per_step)
            results = [search.run(tokenizer(p, add_special_tokens=False)["input_ids"], response_prefix(p), ex)
                       for p, ex in zip(map(prompt_of, examples), examples)]
            t_search = time.time() - t0
            fit_threads()
            stats = train_policy(policy, optimizer, results, pad, cfg) | train_values(value_model, optimizer, results, pad, cfg)
            engine.load_weights(policy)
            compute += sum(r.policy_tokens + r.value_tokens for r in results)
            metrics = search_metrics(stage, step, results, stats, compute, t_search, time.time() - t0)
            last, done = step, step == cfg.steps or spent(compute)
            if held_out is not None and held_out_every and (step % held_out_every == 0 or done):
                metrics |= held_out()  # after step_time: its cost is not the step's
            append_metrics(run_dir / "metrics.jsonl", metrics, report)
            append_jsonl(run_dir / "samples.jsonl", step_samples(stage, step, examples, results, cfg.log_samples))
            elapsed += metrics["step_time"]
            bar(accuracy=f"{metrics['accuracy']:.3f}", expansions=f"{metrics['expansions_mean']:.1f}")
            if (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or done:
                _save(run_dir, training, policy, tokenizer, engine, stream, step, elapsed, compute, stage)
            if done:
                break
    policy.eval()
    return {"steps": last, "wall_seconds": round(elapsed, 3), "compute_tokens": compute}


def train_policy(policy, optimizer, results: list[SearchResult], pad: int, cfg: MCTSConfig) -> dict:
    """One optimizer step of cross-entropy on the completions of the correct best paths (as SFT trains on kept
    samples); none correct: no update. -> {"policy_loss", "trained_paths"}."""
    paths = [(r.prompt_ids + r.completion, len(r.prompt_ids)) for r in results if r.score >= 1.0 and r.completion]
    if not paths:
        return {"trained_paths": 0}
    device = next(policy.parameters()).device
    ids, mask = right_padded([p for p, _ in paths], pad, device)  # (n, L)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    policy.train()
    with autocast(policy):
        logits = policy(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, :-1]  # (n, L-1, V)
    at = torch.arange(ids.size(1) - 1, device=device)[None, :]  # logits[:, t] predicts ids[:, t + 1]
    starts = torch.tensor([n - 1 for _, n in paths], device=device)[:, None]
    predicted = ((at >= starts) & (at < mask.sum(1, keepdim=True) - 1)).float()  # (n, L-1): the completion's tokens
    losses = F.cross_entropy(logits.float().transpose(1, 2), ids[:, 1:], reduction="none")  # (n, L-1)
    loss = (losses * predicted).sum() / predicted.sum().clamp(min=1)
    _update(optimizer, loss, policy.parameters(), cfg.max_grad_norm)
    return {"policy_loss": float(loss.detach()), "trained_paths": len(paths)}


def train_values(value_model, optimizer, results: list[SearchResult], pad: int, cfg: MCTSConfig) -> dict:
    """cfg.value_updates optimizer steps of the value model on every finished path the step's searches found
    (each distinct path once) -> {"value_loss": the last step's, "value_paths"}."""
    paths = {}
    for r in results:
        for completion, outcome in r.finished:
            paths[tuple(r.prompt_ids + completion)] = (list(r.prompt_ids + completion), len(r.prompt_ids), outcome)
    if not paths:
        return {"value_paths": 0}
    value_model.train()
    for _ in range(cfg.value_updates):
        loss = outcome_loss(value_model, list(paths.values()), pad)
        _update(optimizer, loss, value_model.parameters(), cfg.max_grad_norm)
    return {"value_loss": float(loss.detach()), "value_paths": len(paths)}


def _update(optimizer, loss: torch.Tensor, params, max_grad_norm: float) -> None:
    """One step on the parameters `loss` reaches; a non-finite loss or gradient makes no update."""
    optimizer.zero_grad(set_to_none=True)  # the other model's gradients stay None: AdamW leaves it alone
    if not torch.isfinite(loss):
        console.print("[bold red]warning: mcts: non-finite loss, update skipped")
        return
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(list(params), max_grad_norm)
    if torch.isfinite(norm):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def search_metrics(stage: str, step: int, results: list[SearchResult], stats: dict, compute: int, t_search: float,
                   t_step: float) -> dict:
    """One metrics.jsonl row: accuracy is the best paths' rule score; the value error is V's estimate at each
    node it valued against the mean outcome of the finished answers the search found under that node."""
    n = len(results)
    pairs = [pair for r in results for pair in r.value_errors()]
    errors, targets = [v - target for v, target in pairs], [target for _, target in pairs]
    spread = sum((t - sum(targets) / len(targets)) ** 2 for t in targets) / len(targets) if targets else 0.0
    tokens = sum(r.policy_tokens + r.value_tokens for r in results)
    row = {"stage": stage, "step": step, "accuracy": sum(r.score for r in results) / n,
           "expansions_mean": sum(r.expansions for r in results) / n,
           "finished_paths_mean": sum(len(r.finished) for r in results) / n,
           "solved_in_tree": sum(any(o >= 1.0 for _, o in r.finished) for r in results) / n,
           "value_mse": sum(e * e for e in errors) / len(errors) if errors else None,
           "value_abs_error": sum(abs(e) for e in errors) / len(errors) if errors else None,
           # 1 - MSE / Var(targets): 0 is a value model no better than the step's mean outcome, 1 a perfect one
           "value_explained": 1 - sum(e * e for e in errors) / len(errors) / spread if spread > 0 else None,
           "value_nodes": len(errors), "tokens_per_problem": tokens / n,
           "policy_tokens": sum(r.policy_tokens for r in results), "value_tokens": sum(r.value_tokens for r in results),
           "compute_tokens": compute, "completion_len_mean": sum(len(r.completion) for r in results) / n,
           **stats, "search_time": round(t_search, 3), "step_time": round(t_step, 3)}
    return {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


def step_samples(stage: str, step: int, examples, results: list[SearchResult], n: int) -> list[dict]:
    """The first n problems' best paths, for samples.jsonl."""
    return [{"stage": stage, "step": step, "prompt": ex.prompt, "answer": ex.answer, "response": r.response,
             "correct": r.score >= 1.0} for ex, r in list(zip(examples, results))[:n]]


def _resume(run_dir: Path, training, policy, engine, stream: PromptStream, stage: str) -> tuple[int, float, int]:
    """The newest intact checkpoint restored -> (step, elapsed seconds, compute tokens); (0, 0.0, 0) without one."""
    ckpt = checkpoint.latest(run_dir)
    if ckpt is None:
        return 0, 0.0, 0
    state = checkpoint.load_state(ckpt, training)
    restore_weights(policy, ckpt)
    stream.load(state["data"])
    checkpoint.set_rng_state(state["rng"])
    engine.set_rng_state(state["sampler_rng"])
    engine.load_weights(policy)
    console.print(f"[green]resuming {stage} from {ckpt.name}")
    return state["step"], state["elapsed"], state["compute_tokens"]


def _save(run_dir: Path, training, policy, tokenizer, engine, stream: PromptStream, step: int, elapsed: float,
          compute: int, stage: str) -> None:
    if not params_finite(policy):
        raise DivergedError(f"{stage} (mcts) diverged: non-finite weights at step {step}; the last good checkpoint is kept")
    checkpoint.save(run_dir, step, policy, tokenizer, {
        "step": step, "elapsed": elapsed, "compute_tokens": compute, "data": stream.state(),
        "rng": checkpoint.rng_state(), "sampler_rng": engine.rng_state()}, training)
