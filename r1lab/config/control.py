"""Settings of `r1lab control`: PPO or GRPO on a classic-control env with a small MLP."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, field_validator

from r1lab.config.base import Strict
from r1lab.config.settings import LogConfig

SUPPORTED_ENVS = ("CartPole-v1", "Acrobot-v1")  # discrete actions: one categorical policy serves both


class ControlConfig(Strict):
    """Defaults reach CartPole-v1's 475 (mean of 100 episodes, sampled actions) with either algorithm
    in 5-25 s of one CPU core, and Acrobot-v1's -100 in under a minute."""

    algo: Literal["grpo", "ppo"] = Field("ppo", description="ppo: value network + GAE; grpo: group-relative episode returns")
    env: str = Field("CartPole-v1", description=f"gymnasium env id, one of {', '.join(SUPPORTED_ENVS)}")
    seed: int = Field(0, description="seeds torch, the training envs and the evaluation episodes")
    hidden: list[PositiveInt] = Field(default_factory=lambda: [64, 64], min_length=1,
                                      description="MLP hidden sizes (policy and value)")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate (constant)")
    max_grad_norm: float = Field(0.5, gt=0)
    epochs: int = Field(4, gt=0, description="passes over each batch of rollouts (GRPO's mu)")
    minibatches: int = Field(4, gt=0, description="optimizer steps per epoch")
    clip_eps: float = Field(0.2, gt=0, description="policy ratio clipped to [1-eps, 1+eps]")
    ent_coef: float = Field(0.0, ge=0, description="entropy bonus coefficient")
    # PPO
    num_envs: int = Field(8, gt=0, description="ppo: parallel envs")
    rollout_steps: int = Field(128, gt=0, description="ppo: steps per env per iteration")
    gamma: float = Field(0.99, gt=0, le=1, description="ppo: discount")
    gae_lambda: float = Field(0.95, ge=0, le=1, description="ppo: GAE lambda")
    vf_coef: float = Field(0.5, gt=0, description="ppo: value loss coefficient")
    value_clip: float | None = Field(10.0, gt=0, description="ppo: the value moves at most this far from its rollout "
                                     "estimate per iteration (return units; None = no clipping)")
    # GRPO
    group_size: int = Field(8, gt=1, description="grpo: episodes per start state (G)")
    groups: int = Field(8, gt=0, description="grpo: start states (groups) per iteration")
    # budget, evaluation, stopping
    max_env_steps: int = Field(1_000_000, gt=0, description="training env steps before stopping")
    max_seconds: float = Field(300.0, gt=0, description="wall-clock budget, checked between iterations")
    eval_every: int = Field(10_000, gt=0, description="training env steps between evaluations")
    eval_episodes: int = Field(100, gt=0, description="fresh episodes per evaluation, the final one included "
                               "(gym's 'solved' averages 100)")
    eval_mode: Literal["sample", "greedy"] = Field("sample", description="evaluation actions: sampled from the policy "
                                                    "(as in training) or argmax (easier on CartPole)")
    target_return: float | None = Field(None, description="early-stop return; None = the env's reward_threshold "
                                        "(CartPole-v1 475, Acrobot-v1 -100)")
    stop_after: int = Field(2, ge=0, description="stop once this many evaluations in a row reach target_return "
                            "(0 = never stop early); more than one keeps a lucky evaluation from ending the run")
    threads: int | None = Field(1, gt=0, description="torch CPU threads during the run (None = leave as is); "
                                "small MLPs are fastest on one")
    log: LogConfig = Field(default_factory=LogConfig, description="experiment trackers (wandb, tensorboard, trackio)")

    @field_validator("env")
    @classmethod
    def _supported(cls, v: str) -> str:
        check_env(v)
        return v


def check_env(env_id: str) -> None:
    if env_id not in SUPPORTED_ENVS:
        raise ValueError(f"unsupported env {env_id!r}: supported are {', '.join(SUPPORTED_ENVS)} "
                         "(the policy is categorical, so continuous action spaces are not supported)")
