"""The RL loop: sample groups, score them with rules, update (cfg.algorithm), log, checkpoint, resume.

    for step:
        seen, train = sample_step(engine, prompts, rewards)         # rl/rollouts.py
        batch = Batch.from_rollout(train.rollout, train.rewards)     # rl/batch.py
        stats = rl_step(policy, optimizer, batch, cfg, algorithm)    # rl/step.py
        engine.load_weights(policy)                                  # the engine samples the new weights
        append_metrics(step_metrics(...), report); maybe checkpoint  # report: the trackers' log

With several processes (torchrun; r1lab/dist.py, docs/SCALE.md) every rank runs this loop on its share of
each step's prompts; `trainee` is then an FSDP2-sharded copy of `policy`, whose weights are gathered back
into `policy` after each update; rank 0 writes the logs (and reports them to the trackers) and the checkpoints'
shared files.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from r1lab import dist
from r1lab.config import RLConfig
from r1lab.data.example import Task
from r1lab.data.format import render_prompt
from r1lab.engines.base import pad_id
from r1lab.engines.episodes import Turns
from r1lab.models.io import restore_weights
from r1lab.models.lora import AdapterDisabled, is_lora
from r1lab.models.memory import enable_gradient_checkpointing
from r1lab.progress import console, progress_bar
from r1lab.rewards.registry import Rewards, TrainerState
from r1lab.rl.algorithms import ALGORITHMS, Algorithm
from r1lab.rl.batch import Batch
from r1lab.rl.metrics import step_metrics, step_samples
from r1lab.rl.ppo import ValueModel
from r1lab.rl.rollouts import PromptStream, Scored, sample_step
from r1lab.rl.step import rl_step
from r1lab.store import checkpoint
from r1lab.store.logs import append_jsonl, append_metrics, truncate_jsonl
from r1lab.train.guards import BadStepCounter, DivergedError, ExplosionWatch, params_finite, step_problem
from r1lab.train.optim import lr_lambda
from r1lab.train.threads import ThreadFit


@dataclass
class Training:
    """What one RL stage trains and keeps: built once by `setup`, saved in checkpoints, restored by `resume`."""

    algorithm: Algorithm  # ALGORITHMS[cfg.algorithm], looked up once here
    trainee: torch.nn.Module  # what the optimizer trains: the policy itself in one process, its sharded copy in several
    value_model: torch.nn.Module | None  # PPO's
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ref: object | None  # KL's reference (beta > 0)
    ref_copy: torch.nn.Module | None  # the reference when it has weights of its own: checkpointed, reset
    stream: PromptStream
    rewards: Rewards
    state: dist.TrainingState
    turns: Turns | None  # with rl.tools: episodes that call them
    compute_tokens: int = 0  # policy tokens generated so far (GRPO has no value model): mcts stages count on the same ledger


def train_rl(policy, tokenizer, task: Task, cfg: RLConfig, run_dir: Path, *, engine, template: str,
             system: str | None, seed: int = 0, stage: str = "rl", held_out: Callable[[], dict] | None = None,
             held_out_every: int = 0, report: Callable[[dict], None] | None = None, max_turns: int = 1) -> dict:
    """cfg.algorithm (GRPO by default) on `task`, sampling with `engine` (from engines.make_engine).
    Resumes from RUN/checkpoints if present. Returns {"steps", "wall_seconds"}.

    held_out(): metrics of the current policy on held-out problems (eval_pass@1, ...), measured before the
    first step, every `held_out_every` steps and at the last, into that step's metrics.jsonl row: the
    curves the report draws are then the test split's, not only the training samples'.
    report(row): each metrics row is also handed to it (the run's trackers' `log`; a list's append in a test).
    max_turns: with cfg.tools, generations per episode (rollout.max_turns)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if is_lora(policy) and dist.world_size() > 1:
        raise ValueError("LoRA with several processes is not supported yet: train LoRA in one process per model")
    t = setup(policy, task, cfg, seed, max_turns, template)
    bad = BadStepCounter(cfg.max_bad_steps, f"{stage} (rl)")
    explosions = ExplosionWatch(cfg.entropy_warn * math.log(len(tokenizer)) if cfg.entropy_warn else None, cfg.kl_warn)
    start, elapsed = resume(run_dir, t, policy, engine, bad, stage)
    for log in ("metrics.jsonl", "samples.jsonl") if dist.is_main() else ():  # also from step 0: a killed first attempt's rows go
        truncate_jsonl(run_dir / log, lambda row: row.get("step", 0) <= start)
    t.trainee.train()
    measure_held_out = held_out if held_out is not None and held_out_every and dist.is_main() else None
    if measure_held_out is not None and start == 0:
        append_metrics(run_dir / "metrics.jsonl", {"stage": stage, "step": 0, "compute_tokens": 0, **measure_held_out()}, report)

    schemas = t.turns.prompt_tools(template) if t.turns is not None else None

    def prompt_of(example) -> str:
        return render_prompt(example, template, tokenizer, system, schemas)

    on_cpu = next(policy.parameters()).device.type == "cpu"
    fit_threads = ThreadFit(enabled=on_cpu and getattr(engine, "in_process", False))
    with progress_bar(f"{stage}: {cfg.algorithm}", cfg.steps) as bar:
        bar(start)
        for step in range(start + 1, cfg.steps + 1):
            t0 = time.time()
            seen, stats, problem, t_gen = rl_iteration(t, policy, engine, prompt_of, cfg, step, fit_threads)
            bad.record(not problem, step, problem)
            stats["skipped_steps"] = bad.total
            metrics = step_metrics(stage, step, seen, stats, cfg, t_gen, time.time() - t0, t.scheduler.get_last_lr()[0])
            t.compute_tokens += metrics["tokens"]
            metrics["compute_tokens"] = t.compute_tokens
            if measure_held_out is not None and (step % held_out_every == 0 or step == cfg.steps):
                metrics |= measure_held_out()  # after step_time: its cost is not the step's
            if dist.is_main():
                append_metrics(run_dir / "metrics.jsonl", metrics, report)
                append_jsonl(run_dir / "samples.jsonl", step_samples(stage, step, seen, cfg))
            elapsed += metrics["step_time"]
            bar(**{k: f"{metrics[k]:.3f}" for k in ("reward", "accuracy") if k in metrics}, len=f"{metrics['completion_len_mean']:.0f}")
            for warning in explosions(metrics):
                console.print(f"[bold red]warning: {stage} step {step}: {warning}")
            bad.check()
            if ((cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == cfg.steps) and bad.streak == 0:
                save_checkpoint(run_dir, t, policy, tokenizer, engine, step, elapsed, bad, stage)  # only from a good step
    policy.eval()
    if bad.total:  # finished, but not every step trained: say so where the user looks
        console.print(f"[bold red]warning: {stage}: {bad.total} step(s) skipped for non-finite values (skipped_steps in metrics.jsonl)")
    return {"steps": cfg.steps, "wall_seconds": round(elapsed, 3)}


def setup(policy, task: Task, cfg: RLConfig, seed: int, max_turns: int = 1, template: str = "r1-zero") -> Training:
    """Everything a stage trains with, built in a fixed order (the value head's initialisation draws from torch's RNG)."""
    algorithm = ALGORITHMS[cfg.algorithm]
    weights = next(policy.parameters())  # a reward model runs beside the policy, in its dtype
    rewards = Rewards(cfg.rewards, task, cfg.general_rewards, reward_model=cfg.reward_model, device=weights.device,
                      dtype=weights.dtype)
    stream = PromptStream(task.examples("train"), seed)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    trainee = dist.training_copy(policy)  # what the optimizer trains: policy itself in one process
    value_model = dist.shard(ValueModel(policy)) if algorithm.needs_value_model else None
    opt = _optimizer(trainee, value_model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio, cfg.schedule))
    ref = _reference(policy) if cfg.beta > 0 else None  # whole on every rank: no gradients, no optimizer state
    ref_copy = ref if isinstance(ref, torch.nn.Module) else None  # weights of its own: checkpointed, reset
    turns = Turns.of_settings(cfg.tools, cfg.environment, max_turns, template)
    return Training(algorithm, trainee, value_model, opt, sched, ref, ref_copy, stream, rewards,
                    dist.TrainingState(opt, trainee, value_model=value_model), turns)


def resume(run_dir: Path, t: Training, policy, engine, bad: BadStepCounter, stage: str) -> tuple[int, float]:
    """The newest intact checkpoint's state restored into `t`, the policy, the engine and the RNGs (rank 0 picks
    it, moving damaged ones aside) -> (step, elapsed seconds); (0, 0.0) when there is none."""
    ckpt = dist.from_main(lambda: checkpoint.latest(run_dir))
    if ckpt is None:
        return 0, 0.0
    state = checkpoint.load_state(ckpt, t.state)
    restore_weights(policy, ckpt)
    if t.ref_copy is not None:
        t.ref_copy.load_state_dict(state["ref"])
    t.scheduler.load_state_dict(state["scheduler"])
    t.stream.load(state["data"])
    checkpoint.set_rng_state(dist.this_rank(state["rng"]))
    engine.set_rng_state(dist.this_rank(state["sampler_rng"]))
    engine.load_weights(policy)
    bad.total = state.get("skipped_steps", 0)
    t.compute_tokens = state.get("compute_tokens", 0)  # 0 from a checkpoint written before it was counted
    console.print(f"[green]resuming {stage} from {ckpt.name}")
    return state["step"], state["elapsed"]


def rl_iteration(t: Training, policy, engine, prompt_of, cfg: RLConfig, step: int, fit_threads: ThreadFit):
    """One step: sample and score groups, update (unless a reward is non-finite on any rank), hand the engine
    the new weights -> (every rank's scored groups, stats, the problem that skipped the update or "", seconds sampling)."""
    t0 = time.time()
    t.rewards.trainer_state = TrainerState(global_step=step - 1, max_steps=cfg.steps)
    fit_threads()
    seen, train, stats = sample_step(engine, t.stream, t.rewards, prompt_of, cfg, t.algorithm.resample_zero_spread, t.turns)
    t_gen = time.time() - t0
    pad = pad_id(engine.tokenizer)
    # non-finite rewards on any rank: no update at all this step (divergence guard)
    problem = "; ".join(filter(None, dist.all_gather_objects(step_problem({}, train.rewards) if train is not None else "")))
    if train is not None and not problem:  # None: dapo found no group with reward spread, nothing to learn from
        batch = Batch.from_rollout(train.rollout, train.rewards, pad)
        stats["threads"] = fit_threads()
        stats |= rl_step(t.trainee, t.optimizer, batch, cfg, t.algorithm, ref=t.ref, value_model=t.value_model)
        dist.copy_weights(t.trainee, policy)
        problem = step_problem(stats)  # stats are every rank's: the ranks agree
        t_sync = time.time()
        engine.load_weights(policy)
        stats["sync_time"] = round(time.time() - t_sync, 4)
    t.scheduler.step()
    if cfg.ref_reset_every and step % cfg.ref_reset_every == 0 and t.ref_copy is not None:
        t.ref_copy.load_state_dict(policy.state_dict())
    return Scored.concat(dist.all_gather_objects(seen), pad), stats, problem, t_gen  # every rank's groups, for the logs


def save_checkpoint(run_dir: Path, t: Training, policy, tokenizer, engine, step: int, elapsed: float,
                    bad: BadStepCounter, stage: str) -> None:
    if not params_finite(policy):
        raise DivergedError(f"{stage} (rl) diverged: non-finite weights at step {step}; the last good "
                            "checkpoint is kept and no final model is written")
    checkpoint.save(run_dir, step, policy, tokenizer, {
        "step": step, "elapsed": elapsed, "scheduler": t.scheduler.state_dict(), "data": t.stream.state(),
        "rng": dist.by_rank(checkpoint.rng_state()), "sampler_rng": dist.by_rank(engine.rng_state()),
        "skipped_steps": bad.total, "compute_tokens": t.compute_tokens, "ref": t.ref_copy.state_dict() if t.ref_copy is not None else None}, t.state)


def _optimizer(policy, value_model, cfg: RLConfig):
    """One AdamW over the parameters that train (with LoRA, the adapters only: the frozen base has no
    optimizer state); PPO's value model is a second parameter group with its own lr. One optimizer (and
    one state dict) keeps the schedule and resume the same for every algorithm."""
    groups = [{"params": [p for p in policy.parameters() if p.requires_grad]}]
    if value_model is not None:
        groups.append({"params": list(value_model.parameters()), "lr": cfg.value_lr or cfg.lr})
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))


def _reference(policy):
    """KL's reference: the policy as it starts. With LoRA, the base model under it with the adapter
    disabled (its weights are frozen: no second copy); otherwise a frozen copy."""
    return AdapterDisabled(policy) if is_lora(policy) else _frozen_copy(policy)


def _frozen_copy(model):
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref
