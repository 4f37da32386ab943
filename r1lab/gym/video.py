"""A short GIF of a trained policy: one episode, rendered offscreen, its actions chosen as evaluation chooses them."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np

from r1lab.errors import ConfigError
from r1lab.gym.envs import make_env


def check_rendering(env_id: str) -> None:
    """Renders one frame of `env_id`, so that a machine without an offscreen renderer says so before training."""
    env = _render_env(env_id)
    env.close()


def _render_env(env_id: str):
    try:
        env = make_env(env_id, render=True)
        env.reset(seed=0)
        env.render()
        return env
    except Exception as err:  # no GL context: name the fix, not the driver's traceback
        raise ConfigError(f"--video: rendering {env_id} failed ({type(err).__name__}: {err}). On a machine without a "
                          "display set MUJOCO_GL=egl (libegl1) or MUJOCO_GL=osmesa (libosmesa6)") from None


def write_gif(policy, env_id: str, path: str | Path, seed: int = 0, greedy: bool = False, max_frames: int = 200,
              fps: int = 30) -> Path:
    """Plays one episode (sampled actions, or the policy's mode with `greedy`) and writes every k-th frame to `path`
    so that at most `max_frames` remain (a 1000-step Hopper episode: about 7 s at 30 fps). Written to a temporary
    name, then moved."""
    env = _render_env(env_id)
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    done, length = False, env.spec.max_episode_steps or 1000
    every = max(1, length // max_frames)
    t = 0
    while not done:
        action, _ = policy.sample(policy.obs_norm(obs[None]), greedy=greedy)
        obs, _, term, trunc, _ = env.step(policy.env_actions(action)[0])
        done, t = term or trunc, t + 1
        if t % every == 0 or done:
            frames.append(env.render())
    env.close()
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    imageio.mimsave(partial, [np.asarray(f) for f in frames], format="GIF", duration=1000 / fps, loop=0)
    partial.replace(path)
    return path
