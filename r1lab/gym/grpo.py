"""GRPO for control, and branching GRPO: no value network, advantages from groups that share a start state.

GRPO plays G episodes from the SAME initial state (G envs reset with one seed; seeds differ across groups). The
group mean then estimates the value of that start state under the current policy, so (return - group mean) /
group std says how much better this episode's actions did than the policy's average from there: like with like,
as G completions of one prompt in DeepSeek-R1. Started from different states, an episode from an easy start would
get a positive advantage for its luck, not its actions. Every action of an episode gets its episode's advantage:
on a 1000-step robot episode that is one number for a thousand decisions.

Branching GRPO gives later decisions their own baseline without a critic, as VinePPO does for language: it plays a
trajectory, saves the simulator's state every `branch_every` steps, restarts G continuations of `horizon` steps
from each saved state, and scores each continuation against the others from the same state. Its price is env
steps: groups x (trajectory + branches x G x horizon) per iteration; `env_steps` counts them all.

The loss is the clipped surrogate averaged over all steps of the batch (token-level, as DAPO), no KL term.
A group whose members all score the same has advantage 0 and teaches nothing: `zero_std_frac` logs how many.
Shapes: E envs (= episodes or continuations), S steps collected.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from r1lab.config import ControlConfig
from r1lab.gym.envs import make_env, restore
from r1lab.gym.episodes import play, run_episodes
from r1lab.gym.policies import make_policy
from r1lab.gym.ppo import mean_stats
from r1lab.rl.algorithms import clipped_objective, group_advantages


class GRPO:
    def __init__(self, cfg: ControlConfig):
        self.cfg = cfg
        self.envs = [make_env(cfg.env) for _ in range(cfg.groups * cfg.group_size)]
        self.actor = make_policy(self.envs[0], cfg.hidden, cfg.normalize, cfg.squash)
        self.opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, eps=1e-5, fused=True)  # fused: as PPO's
        self.rng = np.random.default_rng([cfg.seed, 0])  # start states of the groups

    def iteration(self, progress: float = 0.0) -> tuple[int, list[float], dict]:
        """Plays `groups` x G episodes and updates. Returns (env steps, episode returns, loss stats)."""
        cfg = self.cfg
        seeds = np.repeat(self.rng.integers(0, 2**31, cfg.groups), cfg.group_size)  # env g*G + j: group g
        returns, b = run_episodes(self.actor, self.envs, seeds, update_norm=True)
        ep_adv = group_advantages(torch.as_tensor(returns, dtype=torch.float32), cfg.group_size)  # (E,)
        stats = update(self, b, ep_adv[b["episode"]], progress)  # each action gets its episode's advantage
        stats["zero_std_frac"] = float((returns.reshape(cfg.groups, cfg.group_size).std(1) == 0).mean())
        return len(b["episode"]), returns.tolist(), stats


class BranchingGRPO:
    def __init__(self, cfg: ControlConfig):
        self.cfg = cfg
        self.trunks = [make_env(cfg.env) for _ in range(cfg.groups)]
        self.branch_envs: list = []  # grown to the largest batch of continuations needed
        self.actor = make_policy(self.trunks[0], cfg.hidden, cfg.normalize, cfg.squash)
        self.opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr, eps=1e-5, fused=True)  # fused: as PPO's
        self.rng = np.random.default_rng([cfg.seed, 0])

    def iteration(self, progress: float = 0.0) -> tuple[int, list[float], dict]:
        """One trajectory per group, G continuations from each of its saved states, an update on the continuations.
        Returns (env steps of trajectories and continuations, the trajectories' returns, loss stats)."""
        cfg = self.cfg
        returns, trunk = run_episodes(self.actor, self.trunks, self.rng.integers(0, 2**31, cfg.groups), update_norm=True,
                                      snapshot_every=cfg.branch_every)
        snaps = [s for per_env in trunk["snapshots"] for _, s in per_env]
        while len(self.branch_envs) < len(snaps) * cfg.group_size:
            self.branch_envs.append(make_env(cfg.env))
            self.branch_envs[-1].reset(seed=len(self.branch_envs))  # an env must be reset once before it is set
        envs = self.branch_envs[: len(snaps) * cfg.group_size]
        start = np.stack([restore(env, snaps[i // cfg.group_size]) for i, env in enumerate(envs)])  # continuation i: state i // G
        branch_returns, b = play(self.actor, envs, start, update_norm=True, max_steps=cfg.horizon)
        adv = group_advantages(torch.as_tensor(branch_returns, dtype=torch.float32), cfg.group_size)  # (E,)
        stats = update(self, b, adv[b["episode"]], progress)
        stats["zero_std_frac"] = float((branch_returns.reshape(-1, cfg.group_size).std(1) == 0).mean())
        stats["branch_states"] = len(snaps)
        stats["branch_env_steps"] = len(b["episode"])
        return len(trunk["episode"]) + len(b["episode"]), returns.tolist(), stats


def update(agent, b: dict, adv: torch.Tensor, progress: float) -> dict:
    """`epochs` passes of `minibatches` clipped-surrogate steps over the batch b, each step's advantage adv (S,)."""
    cfg = agent.cfg
    if cfg.anneal_lr:
        agent.opt.param_groups[0]["lr"] = cfg.lr * (1.0 - progress)
    stats: dict[str, list] = {k: [] for k in ("policy_loss", "entropy", "clip_frac", "approx_kl")}
    for _ in range(cfg.epochs):
        for mb in torch.randperm(len(adv)).chunk(cfg.minibatches):
            logp, entropy = agent.actor.logp_entropy(b["obs"][mb], b["actions"][mb])
            pg, clipped = clipped_objective(torch.exp(logp - b["logp"][mb]), adv[mb], cfg.clip_eps, None)
            loss = pg.mean() - cfg.ent_coef * entropy.mean()
            agent.opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(agent.actor.parameters(), cfg.max_grad_norm)
            agent.opt.step()
            for k, v in zip(stats, (pg.mean(), entropy.mean(), clipped.float().mean(), (b["logp"][mb] - logp).mean())):
                stats[k].append(v.detach())
    return mean_stats(stats)
