"""The learning-rate schedule every trainer uses (pretraining, SFT, RL)."""

from __future__ import annotations

import math
from typing import Callable


def lr_lambda(warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0,
              schedule: str = "cosine") -> Callable[[int], float]:
    """Multiplier of the peak lr at optimizer step `step` (0-based), for torch's LambdaLR: linear warmup
    over `warmup_steps`, then constant, or cosine down to `min_lr_ratio` at the last step (total_steps - 1).

    "ramped_cosine" (the tiny world's pretraining, which built the published bases): a cosine over every
    step, from 1 to min_lr_ratio at total_steps, multiplied by a linear ramp over the first warmup_steps.
    """
    if schedule not in ("cosine", "constant", "ramped_cosine"):
        raise ValueError(f"unknown lr schedule {schedule!r}: use cosine, constant or ramped_cosine")

    def f(step: int) -> float:
        if schedule == "ramped_cosine":
            ramp = min(1.0, (step + 1) / warmup_steps)
            return ramp * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps)))
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - 1 - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return f
