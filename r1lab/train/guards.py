"""Divergence guards shared by RL and SFT: a step whose loss, gradient or rewards are not finite is
skipped (its update would write NaN/inf into the weights and the optimizer's moments, and every later
step would train garbage); `max_bad_steps` in a row stop the run. Entropy and KL explosions are not
fatal (a run may recover) but are reported loudly, since a near-uniform policy looks "healthy" otherwise."""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger("r1lab.train.guards")


class DivergedError(ValueError):
    """Training diverged: the run stops with its last good checkpoint kept and no final/ model.
    A ValueError so the CLI reports it as an error (exit 2) without a traceback."""


def finite(*values) -> bool:
    """True when every value (numbers or tensors) is finite; None counts as finite (not measured)."""
    for v in values:
        if v is None:
            continue
        if isinstance(v, torch.Tensor):
            if not bool(torch.isfinite(v).all()):
                return False
        elif not math.isfinite(float(v)):
            return False
    return True


def params_finite(model) -> bool:
    """Whether every parameter is finite: checked before a checkpoint so a bad model is never saved over a good one."""
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


class BadStepCounter:
    """Counts skipped (non-finite) steps: the total for the logs, the current streak to stop the run."""

    def __init__(self, max_bad_steps: int, what: str):
        self.max_bad_steps, self.what = max_bad_steps, what
        self.total = self.streak = 0

    def record(self, ok: bool, step: int, reason: str = "") -> None:
        if ok:
            self.streak = 0
            return
        self.total += 1
        self.streak += 1
        self.reason, self.step = reason, step
        log.warning("%s step %d skipped (no update): non-finite %s", self.what, step, reason)

    def check(self) -> None:
        """Raises DivergedError when `max_bad_steps` steps in a row were bad (called after the step is logged)."""
        if self.streak >= self.max_bad_steps:
            raise DivergedError(
                f"{self.what} diverged: {self.streak} steps in a row had a non-finite {self.reason} (last at step "
                f"{self.step}); the last good checkpoint is kept and no final model is written. Lower the lr or the "
                "reward weights (or raise max_bad_steps) and use a new --out directory")


class ExplosionWatch:
    """Loud warnings (returned, for the caller to print) when the sampling entropy passes `entropy_max` or the KL
    passes `kl_max`. A policy that starts above the entropy threshold (an untrained model is near uniform) has
    nothing to explode from, so its entropy is not watched."""

    def __init__(self, entropy_max: float | None, kl_max: float | None):
        self.entropy_max, self.kl_max, self.started = entropy_max, kl_max, False

    def __call__(self, stats: dict) -> list[str]:
        entropy, kl, out = stats.get("entropy"), stats.get("kl"), []
        if not self.started and entropy is not None:
            self.started = True
            if self.entropy_max is not None and entropy > self.entropy_max:
                self.entropy_max = None
        if self.entropy_max is not None and entropy is not None and entropy > self.entropy_max:
            out.append(f"entropy {entropy:.3f} > {self.entropy_max:.3f}: the policy is near uniform (lr too high?)")
        if self.kl_max is not None and kl is not None and kl > self.kl_max:
            out.append(f"KL to the reference {kl:.3f} > {self.kl_max:.3f}: the policy is running away from the reference")
        return out


def step_problem(stats: dict, rewards=None) -> str:
    """What was not finite in a training step ('' when nothing): the rewards, the loss or the gradient."""
    if rewards is not None and not finite(rewards):
        return "reward"
    for key in ("loss", "grad_norm", "value_loss"):
        if not finite(stats.get(key)):
            return {"grad_norm": "gradient norm"}.get(key, key.replace("_", " "))
    return "gradient norm" if stats.get("skipped_updates") else ""
