"""Settings of `r1lab control`: PPO, GRPO or branching GRPO on a gymnasium control task with small MLPs.

Each env starts from its preset (ENV_PRESETS): the settings that reach its target on this CPU in minutes.
A field the user sets wins over the preset; `r1lab control --env Hopper-v5 lr=1e-4` changes only the lr.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from r1lab.config.base import Strict
from r1lab.config.settings import LogConfig

DISCRETE_ENVS = ("CartPole-v1", "Acrobot-v1")  # a categorical policy
CONTINUOUS_ENVS = ("Pendulum-v1", "MountainCarContinuous-v0")  # a Gaussian policy; gymnasium's classic control
MUJOCO_ENVS = ("InvertedPendulum-v5", "Reacher-v5", "Hopper-v5", "HalfCheetah-v5")  # pip install 'r1lab[mujoco]'
SUPPORTED_ENVS = DISCRETE_ENVS + CONTINUOUS_ENVS + MUJOCO_ENVS

# CleanRL's ppo_continuous_action settings (one env, 2048-step rollouts, 32 minibatches x 10 epochs, lr 3e-4
# annealed, observations and rewards normalised): the comparison point for PPO's numbers on the robots.
_CLEANRL = dict(num_envs=1, rollout_steps=2048, minibatches=32, epochs=10, lr=3e-4, anneal_lr=True, normalize=True,
                value_clip=0.2, eval_mode="sample", eval_episodes=10, stop_after=0, max_seconds=1800.0)
ENV_PRESETS: dict[str, dict] = {
    # Pendulum: a short horizon (gamma 0.9, as RL Zoo) and 8 envs; CleanRL's robot settings barely move in 40k steps
    "Pendulum-v1": dict(_CLEANRL, num_envs=8, rollout_steps=128, minibatches=4, lr=3e-3, anneal_lr=False, gamma=0.9,
                        max_env_steps=100_000, eval_every=10_000, target_return=-250.0, stop_after=2),
    "MountainCarContinuous-v0": dict(_CLEANRL, max_env_steps=300_000, eval_every=20_000),
    "InvertedPendulum-v5": dict(_CLEANRL, max_env_steps=200_000, eval_every=10_000, target_return=1000.0, stop_after=2),
    "Reacher-v5": dict(_CLEANRL, max_env_steps=300_000, eval_every=20_000, target_return=-6.0),
    "Hopper-v5": dict(_CLEANRL, max_env_steps=300_000, eval_every=25_000),
    "HalfCheetah-v5": dict(_CLEANRL, max_env_steps=300_000, eval_every=25_000),
}


class ControlConfig(Strict):
    """Defaults reach CartPole-v1's 475 (mean of 100 episodes, sampled actions) with either algorithm
    in 5-25 s of one CPU core, and Acrobot-v1's -100 in under a minute; other envs start from ENV_PRESETS."""

    algo: Literal["grpo", "ppo", "grpo-branch"] = Field(
        "ppo", description="ppo: value network + GAE; grpo: group-relative episode returns; grpo-branch: group-relative "
        "returns of G continuations restarted from states along a trajectory (a per-state baseline without a critic)")
    env: str = Field("CartPole-v1", description=f"gymnasium env id, one of {', '.join(SUPPORTED_ENVS)}")
    seed: int = Field(0, description="seeds torch, the training envs and the evaluation episodes")
    hidden: list[PositiveInt] = Field(default_factory=lambda: [64, 64], min_length=1,
                                      description="MLP hidden sizes (policy and value)")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate")
    anneal_lr: bool = Field(False, description="decay the lr linearly to 0 over max_env_steps (CleanRL's robots)")
    max_grad_norm: float = Field(0.5, gt=0)
    epochs: int = Field(4, gt=0, description="passes over each batch of rollouts (GRPO's mu)")
    minibatches: int = Field(4, gt=0, description="optimizer steps per epoch")
    clip_eps: float = Field(0.2, gt=0, description="policy ratio clipped to [1-eps, 1+eps]")
    ent_coef: float = Field(0.0, ge=0, description="entropy bonus coefficient")
    normalize: bool = Field(False, description="normalise observations (running mean/std, clipped to +-10) and, for "
                            "ppo, rewards (by the std of the discounted return), as CleanRL does for the robots")
    squash: Literal["clip", "tanh"] = Field("clip", description="continuous actions: a Gaussian sample clipped to the "
                                            "action box (CleanRL), or squashed by tanh with the log-prob corrected")
    # PPO
    num_envs: int = Field(8, gt=0, description="ppo: parallel envs")
    rollout_steps: int = Field(128, gt=0, description="ppo: steps per env per iteration")
    gamma: float = Field(0.99, gt=0, le=1, description="ppo: discount")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="ppo: GAE lambda")
    vf_coef: float = Field(0.5, gt=0, description="ppo: value loss coefficient")
    value_clip: float | None = Field(10.0, gt=0, description="ppo: the value moves at most this far from its rollout "
                                     "estimate per iteration (return units; None = no clipping)")
    # GRPO
    group_size: int = Field(8, gt=1, description="grpo: episodes per start state (G); grpo-branch: continuations per "
                            "branch state")
    groups: int = Field(8, gt=0, description="grpo: start states (groups) per iteration; grpo-branch: trajectories "
                        "branched from per iteration")
    branch_every: int = Field(50, gt=0, description="grpo-branch: steps between branch states along a trajectory")
    horizon: int = Field(100, gt=0, description="grpo-branch: steps of each continuation (fewer at an episode's end)")
    # budget, evaluation, stopping
    max_env_steps: int = Field(1_000_000, gt=0, description="training env steps before stopping")
    max_seconds: float = Field(300.0, gt=0, description="wall-clock budget, checked between iterations")
    eval_every: int = Field(10_000, gt=0, description="training env steps between evaluations")
    eval_episodes: int = Field(100, gt=0, description="fresh episodes per evaluation, the final one included "
                               "(gym's 'solved' averages 100)")
    eval_mode: Literal["sample", "greedy"] = Field("sample", description="evaluation actions: sampled from the policy "
                                                    "(as in training) or its mode (argmax; a Gaussian's mean)")
    target_return: float | None = Field(None, description="early-stop return; None = the env's reward_threshold "
                                        "(CartPole-v1 475, Acrobot-v1 -100)")
    stop_after: int = Field(2, ge=0, description="stop once this many evaluations in a row reach target_return "
                            "(0 = never stop early); more than one keeps a lucky evaluation from ending the run")
    threads: int | None = Field(1, gt=0, description="torch CPU threads during the run (None = leave as is); "
                                "small MLPs are fastest on one")
    video: bool = Field(False, description="after training, write policy.gif: one episode of the trained policy "
                        "(MuJoCo's offscreen renderer; MUJOCO_GL=egl or osmesa on a headless machine)")
    log: LogConfig = Field(default_factory=LogConfig, description="experiment trackers (wandb, tensorboard, trackio)")

    @model_validator(mode="before")
    @classmethod
    def _env_preset(cls, data):
        """The env's preset under the fields given: what the user sets wins."""
        if isinstance(data, dict) and isinstance(data.get("env"), str):
            return {**ENV_PRESETS.get(data["env"], {}), **data}
        return data

    @field_validator("env")
    @classmethod
    def _supported(cls, v: str) -> str:
        check_env(v)
        return v

    @model_validator(mode="after")
    def _video_needs_mujoco(self):
        if self.video and self.env not in MUJOCO_ENVS:
            raise ValueError(f"video: {self.env} has no offscreen renderer here; --video renders MuJoCo envs "
                             f"({', '.join(MUJOCO_ENVS)})")
        return self


def check_env(env_id: str) -> None:
    if env_id not in SUPPORTED_ENVS:
        raise ValueError(f"unsupported env {env_id!r}: supported are {', '.join(SUPPORTED_ENVS)}")
