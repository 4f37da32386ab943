"""Making the control envs, resetting groups of them to one start state, and saving / restoring a
simulator's state (what branching GRPO restarts its continuations from)."""

from __future__ import annotations

import os
import warnings

import gymnasium as gym
import numpy as np
from gymnasium.wrappers import TimeLimit

from r1lab.config import check_env
from r1lab.config.control import MUJOCO_ENVS
from r1lab.errors import ConfigError


def make_env(env_id: str, render: bool = False) -> gym.Env:
    """The gymnasium env, with an rgb_array renderer when `render`. MuJoCo robots need the `mujoco` extra."""
    check_env(env_id)
    if env_id in MUJOCO_ENVS:
        if render:  # mujoco reads MUJOCO_GL when it first loads; EGL renders without a display
            os.environ.setdefault("MUJOCO_GL", "egl")
        try:
            import mujoco
        except ImportError:
            raise ConfigError(f"{env_id} runs on MuJoCo, which is not installed: pip install 'r1lab[mujoco]'") from None
        # MuJoCo's own warnings (mujoco 4 deprecates an attribute of HalfCheetah's model) would otherwise be written
        # to a MUJOCO_LOG.TXT in the working directory; Python's warnings show them once instead
        mujoco.set_mju_user_warning(lambda message: warnings.warn(f"MuJoCo: {message}", stacklevel=2))
    options = {"render_mode": "rgb_array"} if render else {}
    if render and env_id in MUJOCO_ENVS:
        options.update(width=240, height=240)  # a GIF's frame, not a screen's
        if env_id in ("Hopper-v5", "HalfCheetah-v5"):  # their models' tracking camera: the default one stays put
            options["camera_name"] = "track"
    return gym.make(env_id, **options)


def is_continuous(env: gym.Env) -> bool:
    return isinstance(env.action_space, gym.spaces.Box)


def reset_envs(envs: list[gym.Env], seeds) -> np.ndarray:
    """Resets env i with seeds[i]: equal seeds give equal initial states. Returns obs (E, D)."""
    return np.stack([env.reset(seed=int(s))[0] for env, s in zip(envs, seeds)])


def _time_limit(env: gym.Env) -> TimeLimit | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, TimeLimit):
            return env
        env = env.env
    return None


def snapshot(env: gym.Env) -> tuple:
    """Everything that decides what the env does next: the simulator's state (MuJoCo: qpos, qvel; classic
    control: its `state`) and the steps already taken against the time limit."""
    sim, limit = env.unwrapped, _time_limit(env)
    state = (sim.data.qpos.copy(), sim.data.qvel.copy()) if hasattr(sim, "set_state") else np.array(sim.state, copy=True)
    return state, (limit._elapsed_steps if limit is not None else None)


def restore(env: gym.Env, snap: tuple) -> np.ndarray:
    """Puts `env` (reset at least once) in the snapshot's state. Returns the observation there."""
    state, elapsed = snap
    sim, limit = env.unwrapped, _time_limit(env)
    if hasattr(sim, "set_state"):  # MuJoCo: set_state also recomputes the derived quantities (mj_forward)
        sim.set_state(*state)
    else:
        sim.state = state.copy()
    if limit is not None:
        limit._elapsed_steps = elapsed
    for name in ("_get_obs", "_get_ob"):  # MuJoCo envs, Pendulum; Acrobot
        if hasattr(sim, name):
            return np.asarray(getattr(sim, name)(), dtype=np.float32)
    return np.array(sim.state, dtype=np.float32)  # CartPole, MountainCar(Continuous): the state is the observation
