"""LoRA's settings: the adapters every rl and sft stage of a run trains instead of the whole model (r1lab/models/lora.py)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from r1lab.config.base import Strict


class LoRAConfig(Strict):
    """LoRA adapters (through peft) for every rl and sft stage: the base weights stay frozen and only the
    adapters train; a stage's final/ holds the merged model and, in final/adapter, the adapter alone."""

    r: int = Field(0, ge=0, description="adapter rank; 0 = off (every weight trains)")
    alpha: float = Field(32, gt=0, description="the adapter's output is scaled by alpha / r; a fixed alpha keeps the "
                         "best lr about the same whatever r")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input while training")
    target_modules: list[str] | str = Field("all-linear", description="'all-linear' (every linear layer but the LM head), "
                                            "a list of module names (q_proj, v_proj, ...) or one regex of full names")

    @property
    def enabled(self) -> bool:
        return self.r > 0

    @field_validator("target_modules")
    @classmethod
    def _some_target(cls, v: list[str] | str) -> list[str] | str:
        if not v:
            raise ValueError("name at least one module, or 'all-linear'")
        if isinstance(v, str) and v != "all-linear":
            try:
                re.compile(v)
            except re.error as err:
                raise ValueError(f"{v!r} is not a regex ({err}); give module names as a list: [q_proj, v_proj]") from None
        return v
