"""PPO and GRPO on classic control (gymnasium CartPole-v1, Acrobot-v1), on one CPU core in seconds.

The same clipped-ratio objective as the language-model trainer, on a system small enough to check
quickly. The two algorithms differ in where the advantage comes from:

- PPO learns a value network and uses GAE over the per-step rewards (GAE and the clipped value loss
  are r1lab.rl.ppo's, the ones the language-model PPO uses).
- GRPO has no value network: it plays G episodes from one start state and scores each episode by
  its return against the others of its group, as DeepSeek-R1 scores G completions of one prompt.

Shapes: E envs (= episodes for GRPO), T steps per env of a PPO rollout, S steps collected,
D observation size.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from r1lab.config import ControlConfig, check_env
from r1lab.progress import progress_bar
from r1lab.rl.algorithms import clipped_objective, group_advantages
from r1lab.rl.ppo import gae, value_loss
from r1lab.store.trackers import reporting


def make_env(env_id: str) -> gym.Env:
    check_env(env_id)
    return gym.make(env_id)


def reset_envs(envs: list[gym.Env], seeds) -> np.ndarray:
    """Resets env i with seeds[i]: equal seeds give equal initial states. Returns obs (E, D)."""
    return np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)])


def mlp(sizes: list[int], out_gain: float) -> nn.Sequential:
    """Tanh MLP with orthogonal init (CleanRL); a small out_gain starts the policy near uniform."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        lin = nn.Linear(a, b)
        nn.init.orthogonal_(lin.weight, out_gain if last else np.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin] if last else [lin, nn.Tanh()]
    return nn.Sequential(*layers)


@torch.no_grad()
def act(actor: nn.Module, obs: np.ndarray, greedy: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """obs (E, D) -> actions (E,) and their log-probabilities (E,)."""
    logits = actor(torch.as_tensor(obs, dtype=torch.float32))
    actions = logits.argmax(-1) if greedy else torch.multinomial(logits.softmax(-1), 1).squeeze(-1)
    return actions.numpy(), logits.log_softmax(-1).gather(-1, actions[:, None]).squeeze(-1)


def logp_entropy(actor: nn.Module, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logp_all = actor(obs).log_softmax(-1)  # (S, actions)
    return logp_all.gather(-1, actions[:, None]).squeeze(-1), -(logp_all.exp() * logp_all).sum(-1)


def run_episodes(actor: nn.Module, envs: list[gym.Env], seeds, greedy: bool = False) -> tuple[np.ndarray, dict]:
    """One episode in each env (env i reset with seeds[i]), the live ones stepped together.

    Returns the returns (E,) and the steps: obs (S, D), actions (S,), logp (S,) under the
    sampling policy, episode (S,) the env each step was taken in."""
    obs = reset_envs(envs, seeds)
    alive = np.ones(len(envs), dtype=bool)
    returns = np.zeros(len(envs))
    steps: dict[str, list] = {"obs": [], "actions": [], "logp": [], "episode": []}
    while alive.any():
        idx = np.flatnonzero(alive)
        actions, logp = act(actor, obs[idx], greedy)
        for k, v in (("obs", obs[idx]), ("actions", actions), ("logp", logp), ("episode", idx)):
            steps[k].append(v)
        for j, i in enumerate(idx):
            obs[i], r, term, trunc, _ = envs[i].step(int(actions[j]))
            returns[i] += r
            alive[i] = not (term or trunc)
    batch = {
        "obs": torch.as_tensor(np.concatenate(steps["obs"]), dtype=torch.float32),
        "actions": torch.as_tensor(np.concatenate(steps["actions"])),
        "logp": torch.cat(steps["logp"]),
        "episode": torch.as_tensor(np.concatenate(steps["episode"])),
    }
    return returns, batch


def _mean_stats(stats: dict[str, list]) -> dict[str, float]:
    return {k: float(torch.stack(v).mean()) for k, v in stats.items()}


# ---------------------------------------------------------------- PPO


def rollout_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor, last_value: torch.Tensor,
                gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (r1lab.rl.ppo.gae) over a rollout stored time-first. rewards, values, dones: (T, E);
    last_value: (E,) = V(obs after step T-1). Returns (advantages, returns), both (T, E).

    dones[t] = 1 when the episode ended at step t: obs t+1 (and values[t+1]) start a new episode,
    so nothing flows back across it. A time-limit cut is no end of the system: the caller adds
    gamma * V(final obs) to that step's reward instead.
    """
    values_et = values.T  # (E, T): the shared gae wants time last
    next_values = torch.cat([values_et[:, 1:], last_value[:, None]], dim=1)
    advantages = gae(rewards.T, values_et, next_values, 1.0 - dones.T, gamma, lam).T
    return advantages, advantages + values


class PPO:
    """CleanRL-style PPO: separate actor and critic MLPs, GAE, advantages normalised per batch,
    clipped surrogate + clipped value loss - entropy bonus, epochs of shuffled minibatches."""

    def __init__(self, cfg: ControlConfig, obs_dim: int, n_actions: int):
        self.cfg = cfg
        self.actor = mlp([obs_dim, *cfg.hidden, n_actions], 0.01)
        self.critic = mlp([obs_dim, *cfg.hidden, 1], 1.0)
        self.params = [*self.actor.parameters(), *self.critic.parameters()]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr, eps=1e-5)
        self.envs = [make_env(cfg.env) for _ in range(cfg.num_envs)]
        # Seeded once; later resets draw from each env's own seeded generator.
        self.obs = reset_envs(self.envs, np.random.default_rng([cfg.seed, 2]).integers(0, 2**31, cfg.num_envs))  # (E, D)
        self.ep_return = np.zeros(cfg.num_envs)

    @torch.no_grad()
    def value(self, obs: np.ndarray) -> torch.Tensor:
        return self.critic(torch.as_tensor(obs, dtype=torch.float32)).squeeze(-1)

    def iteration(self) -> tuple[int, list[float], dict]:
        """Collects T steps in each of the E envs and updates. Returns (env steps, returns of the
        episodes that ended, loss stats)."""
        cfg, T, E = self.cfg, self.cfg.rollout_steps, self.cfg.num_envs
        obs_buf = torch.zeros(T, E, self.obs.shape[1])
        act_buf = torch.zeros(T, E, dtype=torch.long)
        logp_buf, rew_buf, done_buf, val_buf = (torch.zeros(T, E) for _ in range(4))
        finished: list[float] = []
        for t in range(T):
            obs_buf[t] = torch.as_tensor(self.obs)
            actions, logp_buf[t] = act(self.actor, self.obs)
            act_buf[t], val_buf[t] = torch.as_tensor(actions), self.value(self.obs)
            for i, env in enumerate(self.envs):
                o, r, term, trunc, _ = env.step(int(actions[i]))
                self.ep_return[i] += r
                if term or trunc:
                    finished.append(float(self.ep_return[i]))
                    self.ep_return[i] = 0.0
                    if trunc and not term:  # cut by the time limit: the state still had a future
                        r += cfg.gamma * float(self.value(o[None])[0])
                    o, _ = env.reset()
                rew_buf[t, i], done_buf[t, i] = r, float(term or trunc)
                self.obs[i] = o
        adv, ret = rollout_gae(rew_buf, val_buf, done_buf, self.value(self.obs), cfg.gamma, cfg.gae_lambda)
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        b_obs, b_act, b_logp = obs_buf.view(T * E, -1), act_buf.view(-1), logp_buf.view(-1)
        b_adv, b_ret, b_val = adv.view(-1), ret.view(-1), val_buf.view(-1)
        stats: dict[str, list] = {k: [] for k in ("policy_loss", "value_loss", "entropy", "clip_frac", "approx_kl")}
        for _ in range(cfg.epochs):
            for mb in torch.randperm(T * E).chunk(cfg.minibatches):
                logp, entropy = logp_entropy(self.actor, b_obs[mb], b_act[mb])
                pg, clipped = clipped_objective(torch.exp(logp - b_logp[mb]), b_adv[mb], cfg.clip_eps, None)
                vl, _ = value_loss(self.critic(b_obs[mb]).squeeze(-1), b_val[mb], b_ret[mb], cfg.value_clip)
                loss = pg.mean() - cfg.ent_coef * entropy.mean() + cfg.vf_coef * vl
                self.opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm)
                self.opt.step()
                for k, v in zip(stats, (pg.mean(), vl, entropy.mean(), clipped.float().mean(), (b_logp[mb] - logp).mean())):
                    stats[k].append(v.detach())
        return T * E, finished, _mean_stats(stats)


# ---------------------------------------------------------------- GRPO


class GRPO:
    """GRPO with an outcome reward: an episode's return, judged against its group, credits all its actions.

    Each group is G episodes started from the SAME initial state (G envs reset with the same seed;
    seeds differ across groups). Why: the group mean then estimates the value of that start state
    under the current policy, so (return - group mean) / group std says how much better this
    episode's actions did than the policy's average from there. The baseline compares like with
    like, as G completions of one prompt do in DeepSeek-R1. Started from different states, an
    episode from an easy start would get a positive advantage for its luck, not its actions: the
    credit would mix the start state's value into the policy gradient. (CartPole and Acrobot draw
    start states from a tiny box, +-0.05 and +-0.1, so there the difference is small; it is large
    when start states differ in value, as prompts differ in difficulty.)

    No value network, no KL term (beta 0). The loss is the clipped surrogate averaged over all steps
    of the batch (token-level, as DAPO), so long episodes weigh in proportion to their actions.
    A group whose episodes all score the same (all 500 on CartPole, all -500 on an untrained
    Acrobot) has advantage 0 and teaches nothing: `zero_std_frac` logs how many.
    """

    def __init__(self, cfg: ControlConfig, obs_dim: int, n_actions: int):
        self.cfg = cfg
        self.actor = mlp([obs_dim, *cfg.hidden, n_actions], 0.01)
        self.opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, eps=1e-5)
        self.envs = [make_env(cfg.env) for _ in range(cfg.groups * cfg.group_size)]
        self.rng = np.random.default_rng([cfg.seed, 0])  # start states of the groups

    def iteration(self) -> tuple[int, list[float], dict]:
        """Plays `groups` x G episodes and updates. Returns (env steps, episode returns, loss stats)."""
        cfg = self.cfg
        seeds = np.repeat(self.rng.integers(0, 2**31, cfg.groups), cfg.group_size)  # env g*G + j: group g
        returns, b = run_episodes(self.actor, self.envs, seeds)
        ep_adv = group_advantages(torch.as_tensor(returns, dtype=torch.float32), cfg.group_size)  # (E,)
        adv = ep_adv[b["episode"]]  # (S,): each action gets its episode's advantage
        stats: dict[str, list] = {k: [] for k in ("policy_loss", "entropy", "clip_frac", "approx_kl")}
        for _ in range(cfg.epochs):
            for mb in torch.randperm(len(adv)).chunk(cfg.minibatches):
                logp, entropy = logp_entropy(self.actor, b["obs"][mb], b["actions"][mb])
                pg, clipped = clipped_objective(torch.exp(logp - b["logp"][mb]), adv[mb], cfg.clip_eps, None)
                loss = pg.mean() - cfg.ent_coef * entropy.mean()
                self.opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.actor.parameters(), cfg.max_grad_norm)
                self.opt.step()
                for k, v in zip(stats, (pg.mean(), entropy.mean(), clipped.float().mean(), (b["logp"][mb] - logp).mean())):
                    stats[k].append(v.detach())
        out = _mean_stats(stats)
        out["zero_std_frac"] = float((returns.reshape(cfg.groups, cfg.group_size).std(1) == 0).mean())
        return len(adv), returns.tolist(), out


# ---------------------------------------------------------------- run


def run_control(cfg: ControlConfig, out: str | Path) -> dict:
    """Trains cfg.algo on cfg.env until the target, max_env_steps or max_seconds, whichever first.

    Writes out/metrics.jsonl (a row per iteration; `eval_return` on evaluated ones; each row also to cfg.log's
    trackers, in out/trackers/), out/summary.json (returned too) and out/policy.pt (the actor's state dict).
    `final_mean_return` is a last evaluation on `eval_episodes` fresh episodes (`final_eval_mode`: sampled or greedy actions);
    `wall_seconds` is the training time including the periodic evaluations, not the final one.
    """
    check_env(cfg.env)
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
    probe = make_env(cfg.env)
    target = cfg.target_return if cfg.target_return is not None else probe.spec.reward_threshold
    agent = (PPO if cfg.algo == "ppo" else GRPO)(cfg, probe.observation_space.shape[0], int(probe.action_space.n))
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
            n, finished, stats = agent.iteration()
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
            if report is not None:  # one stage name for ppo and grpo: a comparison's curves share their charts
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
    return summary


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.1f}"
