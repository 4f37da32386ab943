"""Playing episodes with a policy: E envs stepped together, one batched forward pass per step.

Shapes: E envs, S steps collected (all envs' steps, in the order taken), D observation size."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from r1lab.gym.envs import reset_envs, snapshot


def play(policy, envs: list[gym.Env], obs: np.ndarray, greedy: bool = False, update_norm: bool = False,
         max_steps: int | None = None, snapshot_every: int | None = None) -> tuple[np.ndarray, dict]:
    """Plays each env on from its observation obs[i] (E, D) until its episode ends or it took `max_steps`.

    Returns the returns (E,) and the batch: obs (S, D) normalised as the policy saw them, actions (S,) or (S, A),
    logp (S,) under the sampling policy, episode (S,) the env each step was taken in. With `snapshot_every` k,
    batch["snapshots"][i] lists (t, snapshot) of env i at t = 0, k, 2k, ... taken before the step; `update_norm`
    folds the observations seen into the policy's running statistics."""
    obs = np.array(obs, dtype=np.float64)
    alive = np.ones(len(envs), dtype=bool)
    returns, taken = np.zeros(len(envs)), np.zeros(len(envs), dtype=int)
    steps: dict[str, list] = {"obs": [], "actions": [], "logp": [], "episode": []}
    snapshots: list[list] = [[] for _ in envs]
    while alive.any():
        idx = np.flatnonzero(alive)
        if snapshot_every:
            for i in idx[taken[idx] % snapshot_every == 0]:
                snapshots[i].append((int(taken[i]), snapshot(envs[i])))
        normed = policy.obs_norm(obs[idx], update=update_norm)
        actions, logp = policy.sample(normed, greedy)
        for k, v in (("obs", normed), ("actions", actions), ("logp", logp), ("episode", torch.as_tensor(idx))):
            steps[k].append(v)
        for j, (i, action) in enumerate(zip(idx, policy.env_actions(actions))):
            obs[i], r, term, trunc, _ = envs[i].step(action)
            returns[i] += r
            taken[i] += 1
            alive[i] = not (term or trunc) and (max_steps is None or taken[i] < max_steps)
    batch = {k: torch.cat(v) for k, v in steps.items()}
    if snapshot_every:
        batch["snapshots"] = snapshots
    return returns, batch


def run_episodes(policy, envs: list[gym.Env], seeds, greedy: bool = False, update_norm: bool = False,
                 snapshot_every: int | None = None) -> tuple[np.ndarray, dict]:
    """One whole episode in each env, env i reset with seeds[i] (equal seeds: equal start states); see play."""
    return play(policy, envs, reset_envs(envs, seeds), greedy, update_norm, snapshot_every=snapshot_every)
