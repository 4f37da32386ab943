"""Settings this machine or these models cannot honour fail when a run starts, before any model work (no
weights read, no tiny world pretrained): the device and dtype, gradient checkpointing on a model class
without it, LoRA targets that match no layer, a reward model's tokenizer without a pad token. Models are
read as skeletons: the architecture built from its config on the meta device (names and types, no memory)."""

from __future__ import annotations

import torch

from r1lab.config import ConfigError, RunConfig, StageConfig
from r1lab.models.device import check_device
from r1lab.models.hub import check_source
from r1lab.models.lora import check_targets
from r1lab.rewards.learned import LEARNED_REWARDS, scorer_kind
from r1lab.rewards.reward_model import reward_tokenizer


def check_run(cfg: RunConfig) -> None:
    """Raises a ConfigError naming the field of the first setting that cannot work."""
    check_device(cfg.device, cfg.dtype)
    for name, what, which in ((cfg.model, "model", "base"), (cfg.student.model, "student.model", "student")):
        if name != "tinyworld" and (which == "base" or any(st.init == "student" for st in cfg.stages)):
            check_source(name, "model", what, cfg.hub_options(which).get("revision"))
    for st in cfg.stages:  # R1's reward model is used by its last rl stage: fail now, not hours later
        rl = cfg.stage_rl(st) if st.kind == "rl" else None
        if rl and "reward_model" in {**rl.rewards, **rl.general_rewards}:
            reward_tokenizer(rl.reward_model)
        learned = rl and [r for r in LEARNED_REWARDS if r in {**rl.rewards, **rl.general_rewards}]
        if learned and rl.reward_model not in {s.name for s in cfg.stages}:  # a scorer's directory, not a stage of this run
            want = "outcome" if learned == ["outcome"] else "process"
            if scorer_kind(rl.reward_model) != want:
                raise ConfigError(f"stages.{st.name}.rl.reward_model: {rl.reward_model!r} is not a {want} scorer r1lab trained "
                                  f"(a reward-model stage's final/ directory, with \"scorer\": \"{want}\" in its r1lab.json), "
                                  f"which the {', '.join(learned)} reward(s) read")
    trained = [st for st in cfg.stages if st.makes_model]
    # an mcts stage trains without gradient checkpointing (its models are the tiny world's size)
    checkpointing = {st.name: st.kind != "mcts" and _settings(cfg, st).gradient_checkpointing for st in trained}
    if not cfg.lora.enabled and not any(checkpointing.values()):
        return
    skeletons: dict[str, torch.nn.Module] = {}
    for st in trained:
        root = _root(cfg, st)
        if root not in skeletons:
            skeletons[root] = skeleton(cfg, root)
        model = skeletons[root]
        if checkpointing[st.name] and not getattr(model, "supports_gradient_checkpointing", False):
            raise ConfigError(f"stages.{st.name}.{st.kind}.gradient_checkpointing: stage {st.name} trains a "
                              f"{type(model).__name__} ({root}), which does not support gradient checkpointing; "
                              "set gradient_checkpointing=false")
        if cfg.lora.enabled:
            check_targets(model, cfg.lora.target_modules)


def _settings(cfg: RunConfig, stage: StageConfig):
    return cfg.stage_rl(stage) if stage.kind == "rl" else cfg.stage_sft(stage)


def _root(cfg: RunConfig, stage: StageConfig) -> str:
    """The model (base, student or teacher) a stage's model descends from: it has that one's architecture."""
    kinds = {st.name: st for st in cfg.stages}
    while stage.init in kinds:
        stage = kinds[stage.init]
    return stage.init


def skeleton(cfg: RunConfig, which: str) -> torch.nn.Module:
    """The run's base, student or teacher model (as recipes.run.resolve_model names them) on the meta
    device. The tiny world's comes from its pretraining settings, without pretraining it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    name = {"base": cfg.model, "student": cfg.student.model, "teacher": cfg.teacher}[which]
    if name == "tinyworld":
        from r1lab.tinyworld.build import model_config

        pretrain = cfg.student_pretrain() if which == "student" else cfg.pretrain
        config = model_config(pretrain, pretrain.vocab_size)
    else:
        config = AutoConfig.from_pretrained(name, **cfg.hub_options(which))
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)
