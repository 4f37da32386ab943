"""Every setting of a run, validated in one place: YAML recipes + `field=value` command-line overrides.

Every mistake fails at load, before any model work, with a message naming the field (and the close
match for a misspelt name): unknown fields, bad values, nan/inf, unknown reward names, and each stage's
own settings (`stages.reasoning-rl.rl.stepz: unknown field (did you mean 'steps'?)`).

Changing settings, one rule everywhere (apply_changes: overrides, a stage's blocks, student.pretrain):
  - a dotted path sets one entry and keeps the others: `rl.lr=1e-6`, `rl.rewards.format=0.5` (the
    explicit merge form, also as a key inside a stage's block: `rl: {rewards.language: 1.0}`);
  - a mapping given for a sub-config (rl, sft, eval, sampling, data, pretrain, a stage's rl block...)
    merges key by key: `rl={lr: 1e-6}` keeps the other rl settings;
  - any other value replaces the field, a mapping for a dict-valued field included:
    `rl.rewards={accuracy: 1}` leaves only accuracy, and so does `rewards: {accuracy: 1.0}` in a stage's rl.
A stage's rl / sft / sampling blocks are changes to the run's rl / sft / sampling (filters: to
FilterConfig's defaults); RunConfig.stage_rl(stage) & co. give them resolved.

Sampling, one place: the run's `sampling` (SamplingConfig's defaults, RL's: T=1, top_p 1, 128 new tokens)
is what rl.sampling, a generate stage's `sampling` and eval.sampling change; eval puts the paper's
protocol (EVAL_SAMPLING: T=0.6, top_p 0.95) between the run's and its own. After load cfg.rl.sampling
and cfg.eval.sampling are whole SamplingConfigs. One `seed`, `template` and `system` serve every stage.
The run's `gradient_checkpointing` is likewise rl's and sft's unless they set their own; `lora` (LoRAConfig)
serves every rl and sft stage.
"""

from r1lab.config.base import Strict, apply_changes, changed, error_lines, format_errors
from r1lab.config.control import SUPPORTED_ENVS, ControlConfig, check_env
from r1lab.config.lora import LoRAConfig
from r1lab.config.mcts import MCTSConfig
from r1lab.config.run import MODEL_NAMES, RunConfig, StageConfig, StudentConfig
from r1lab.config.settings import (
                                   EVAL_SAMPLING,
                                   REFLECTION_PHRASES,
                                   DataConfig,
                                   EvalConfig,
                                   FilterConfig,
                                   LogConfig,
                                   PretrainConfig,
                                   RLConfig,
                                   RolloutConfig,
                                   SamplingConfig,
                                   SFTConfig,
)
from r1lab.errors import ConfigError

__all__ = ["ConfigError", "Strict", "apply_changes", "changed", "error_lines", "format_errors", "SUPPORTED_ENVS",
           "ControlConfig", "check_env", "EVAL_SAMPLING",
           "MODEL_NAMES", "REFLECTION_PHRASES", "DataConfig", "EvalConfig", "FilterConfig", "LogConfig", "LoRAConfig", "MCTSConfig",
           "PretrainConfig", "RLConfig",
           "RolloutConfig", "RunConfig", "SamplingConfig", "SFTConfig", "StageConfig", "StudentConfig"]
