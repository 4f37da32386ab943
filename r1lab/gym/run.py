"""`r1lab control`: trains PPO, GRPO or branching GRPO on one env until the target, the step or the time budget."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch

from r1lab.config import ControlConfig, check_env
from r1lab.gym.envs import make_env
from r1lab.gym.episodes import run_episodes
from r1lab.gym.grpo import GRPO, BranchingGRPO
from r1lab.gym.ppo import PPO
from r1lab.progress import progress_bar
from r1lab.store.trackers import reporting

AGENTS = {"ppo": PPO, "grpo": GRPO, "grpo-branch": BranchingGRPO}


def run_control(cfg: ControlConfig, out: str | Path) -> dict:
    """Trains cfg.algo on cfg.env until the target, max_env_steps or max_seconds, whichever first.

    Writes out/metrics.jsonl (a row per iteration; `eval_return` on evaluated ones; each row also to cfg.log's
    trackers, in out/trackers/), out/summary.json (returned too), out/policy.pt (the actor's state dict, its
    observation statistics included) and, with cfg.video, out/policy.gif. `final_mean_return` is a last
    evaluation on `eval_episodes` fresh episodes (`final_eval_mode`: sampled or greedy actions); `wall_seconds`
    is the training time including the periodic evaluations, not the final one.
    """
    check_env(cfg.env)
    make_env(cfg.env).close()  # a missing extra is named before anything is written
    if cfg.video:  # and a missing renderer before training, not after
        from r1lab.gym.video import check_rendering

        check_rendering(cfg.env)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        with reporting(cfg.log, out, cfg.model_dump(), resume=False) as trackers:  # it starts over, as metrics.jsonl does
            summary = _run(cfg, out, trackers.log)
            trackers.summary([{k: v for k, v in summary.items() if k != "config"}])
            return summary
    finally:
        torch.set_num_threads(threads)


def _run(cfg: ControlConfig, out: Path, report: Callable[[dict], None] | None = None) -> dict:
    """The training loop of run_control; `report(row)` (the trackers' log) gets each metrics row, with its stage and step."""
    torch.manual_seed(cfg.seed)
    agent = AGENTS[cfg.algo](cfg)
    target = cfg.target_return if cfg.target_return is not None else gym.spec(cfg.env).reward_threshold
    eval_rng = np.random.default_rng([cfg.seed, 1])  # start states apart from training's
    eval_envs = [make_env(cfg.env) for _ in range(cfg.eval_episodes)]
    greedy = cfg.eval_mode == "greedy"

    t0 = time.time()
    steps, iteration, next_eval, stop = 0, 0, cfg.eval_every, "max_env_steps"
    best_eval, hit, streak = None, {}, 0
    with progress_bar(f"{cfg.algo} {cfg.env}", cfg.max_env_steps) as bar, open(out / "metrics.jsonl", "w") as log:
        while steps < cfg.max_env_steps:
            if time.time() - t0 >= cfg.max_seconds:
                stop = "max_seconds"
                break
            n, finished, stats = agent.iteration(steps / cfg.max_env_steps)
            steps += n
            iteration += 1
            row = {"iteration": iteration, "env_steps": steps, "wall_seconds": round(time.time() - t0, 3),
                   "episodes": len(finished), "mean_return": float(np.mean(finished)) if finished else None, **stats}
            if steps >= next_eval or steps >= cfg.max_env_steps:
                next_eval = (steps // cfg.eval_every + 1) * cfg.eval_every
                returns, _ = run_episodes(agent.actor, eval_envs, eval_rng.integers(0, 2**31, cfg.eval_episodes), greedy)
                row["eval_return"] = float(returns.mean())
                row["wall_seconds"] = round(time.time() - t0, 3)
                best_eval = max(best_eval if best_eval is not None else -np.inf, row["eval_return"])
                streak = streak + 1 if target is not None and row["eval_return"] >= target else 0
                if streak and not hit:
                    hit = {"time_to_target_s": row["wall_seconds"], "env_steps_to_target": steps,
                           "iteration_at_target": iteration}
            log.write(json.dumps(row) + "\n")
            log.flush()
            if report is not None:  # one stage name for every algo: a comparison's curves share their charts
                report({**row, "stage": "control", "step": iteration})
            bar(n - max(0, steps - cfg.max_env_steps), ret=_fmt(row["mean_return"]), eval=_fmt(row.get("eval_return", best_eval)))
            if cfg.stop_after and streak >= cfg.stop_after:
                stop = "target"
                break
    train_seconds = time.time() - t0

    final, _ = run_episodes(agent.actor, eval_envs, eval_rng.integers(0, 2**31, cfg.eval_episodes), greedy)
    torch.save(agent.actor.state_dict(), out / "policy.pt")
    summary = {
        "algo": cfg.algo, "env": cfg.env, "seed": cfg.seed,
        "final_mean_return": float(final.mean()), "final_std_return": float(final.std()),
        "final_eval_mode": cfg.eval_mode, "final_episodes": cfg.eval_episodes,
        "env_steps": steps, "iterations": iteration, "wall_seconds": round(train_seconds, 3), "stop_reason": stop,
        "target_return": target, "reached_target": bool(hit), "time_to_target_s": None, "env_steps_to_target": None,
        "iteration_at_target": None, **hit, "best_eval_return": best_eval, "config": cfg.model_dump(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if cfg.video:  # after the summary: the run is whole even if the picture fails
        from r1lab.gym.video import write_gif

        write_gif(agent.actor, cfg.env, out / "policy.gif", seed=cfg.seed, greedy=greedy)
    return summary


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"
