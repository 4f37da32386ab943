"""A run's settings: RunConfig over every part (config/settings.py), the recipe's stages, and the rules
that join them (stage changes resolved over the run's settings, sampling inherited; see r1lab.config)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from r1lab.config.base import Strict, changed
from r1lab.config.lora import LoRAConfig
from r1lab.config.mcts import MCTSConfig
from r1lab.config.settings import (
    EVAL_SAMPLING,
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

MODEL_NAMES = ("base", "student", "teacher")  # models a stage may start from besides earlier stages
DATA_KINDS = ("generate", "answers", "traces")  # stages that write samples for sft stages, not a model


class StageConfig(Strict):
    """One step of a recipe. Stages run in order; a stage starts from `init`: 'base', 'student',
    'teacher' or an earlier stage's model.

    kinds: rl (GRPO or another rl.algorithm), mcts (tree search over reasoning steps with a value model, training on
    its best paths: docs/FAILED.md), sft (on earlier generate/answers stages' kept samples), generate (sample, score,
    filter), answers (the task's reference answers without a chain of thought: non-reasoning SFT data), traces
    (the tiny world's own worked solutions, calling tools in `tool_share` of them: tool-use SFT data), reward-model
    (a process or outcome reward model trained on every sample of earlier generate stages, labelled by the task's
    checker; an rl stage's rl.reward_model names it), mcts (tree search over reasoning steps, docs/FAILED.md).
    rl, mcts, sft, sampling and filters are changes to the run's settings (to FilterConfig's defaults for
    filters), checked when the config is loaded; RunConfig.stage_rl(stage) & co. resolve them.
    """

    changes_to: ClassVar[dict[str, type[Strict]]] = {"rl": RLConfig, "mcts": MCTSConfig, "sft": SFTConfig,
                                                     "sampling": SamplingConfig, "filters": FilterConfig}
    uses: ClassVar[dict[str, tuple[str, ...]]] = {"rl": ("rl",), "mcts": ("mcts",), "sft": ("sft",), "generate": ("sampling", "filters"),
                                                  "answers": (), "traces": (), "reward-model": ("sft",)}

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="also the stage's folder in the run directory")
    kind: Literal["rl", "mcts", "generate", "sft", "answers", "traces", "reward-model"]
    init: str = Field("base", description="model to start from (rl, mcts, sft, reward-model) or to sample from (generate)")
    task: str | None = Field(None, description="rl, mcts, generate, answers, traces: the prompts' task (None = the run's task)")
    rl: dict = Field(default_factory=dict, description="rl: changes to the run's rl settings for this stage")
    mcts: dict = Field(default_factory=dict, description="mcts: changes to the run's mcts settings for this stage")
    sft: dict = Field(default_factory=dict, description="sft: changes to the run's sft settings for this stage")
    data: list[str] = Field(default_factory=list, description="sft: generate/answers/traces stages whose kept samples it "
                            "trains on; reward-model: generate stages whose every sample (kept or not) it labels")
    supervision: Literal["process", "outcome"] = Field("process", description="reward-model: label every step (a PRM) "
                                                        "or the answer only (an ORM)")
    k: int = Field(4, gt=0, description="generate: samples per prompt")
    prompts: int | None = Field(None, gt=0, description="generate, answers, traces: train prompts to use (None = all)")
    tool_share: float = Field(0.5, ge=0, le=1, description="traces: the share of solutions that call a tool (the rest "
                              "compute in the head or guess), so RL has a choice to select")
    sampling: dict = Field(default_factory=dict, description="generate: changes to the run's sampling")
    filters: dict = Field(default_factory=dict, description="generate: changes to FilterConfig's defaults")

    @property
    def makes_model(self) -> bool:
        return self.kind in ("rl", "mcts", "sft")


class StudentConfig(Strict):
    """The smaller model of distillation: 'tinyworld' builds one like the base, changed by `pretrain`."""

    changes_to: ClassVar[dict[str, type[Strict]]] = {"pretrain": PretrainConfig}

    model: str = Field("tinyworld", description="HF model path or hub name; 'tinyworld' pretrains a small tiny-world model")
    pretrain: dict = Field(default_factory=lambda: {"hidden_size": 64, "intermediate_size": 192},
                           description="changes to the run's pretrain settings (default: about a quarter of the parameters)")


class RunConfig(Strict):
    recipe: str = "r1-zero"
    model: str = Field("tinyworld", description="a local model directory or any hub id (e.g. Qwen/Qwen2.5-0.5B); "
                       "'tinyworld' builds/uses the cached tiny base")
    revision: str | None = Field(None, description="the hub revision (branch, tag or commit) of `model` (None = main)")
    trust_remote_code: bool = Field(False, description="let transformers run model code from the hub repository "
                                    "(models whose architecture transformers does not ship); off unless you trust it")
    task: str = Field("tinyworld", description="tinyworld[/arithmetic|/countdown], reasoning-gym:NAME, or a data file")
    template: Literal["r1-zero", "chat", "none"] = Field("r1-zero", description="the prompt format of every stage")
    system: str | None = Field(None, description="system text for the template (None = the paper's)")
    device: str = Field("auto", description="auto (cuda, then mps, then cpu) or a torch device: cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "fp32", "bf16"] = Field("auto", description="what the forward passes compute in (auto: bf16 on a GPU "
                                                   "that has it, else fp32); bf16 trains fp32 master weights under autocast")
    gradient_checkpointing: bool = Field(False, description="rl and sft stages recompute activations in the backward pass "
                                         "(rl.gradient_checkpointing / sft.gradient_checkpointing change it per use)")
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    seed: int = Field(0, description="seeds every stage: data splits, sampling, RL and SFT")
    teacher: str | None = Field(None, description="model directory for stages with init 'teacher' (distillation)")
    student: StudentConfig = Field(default_factory=StudentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig,
                                     description="every use's sampling (rl, eval, generate stages) unless it changes it")
    rl: RLConfig = Field(default_factory=RLConfig)
    mcts: MCTSConfig = Field(default_factory=MCTSConfig, description="mcts stages: tree search with a value model (docs/FAILED.md)")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig(name="r1-zero", kind="rl")], min_length=1)
    final_stage: str | None = Field(None, description="the stage whose model RUN/final links to (None = the last rl/sft stage)")
    log: LogConfig = Field(default_factory=LogConfig, description="experiment trackers (wandb, tensorboard, trackio)")

    def hub_options(self, which: str = "base") -> dict:
        """What from_pretrained gets for the run's base, student or teacher model, or a model a stage made from
        them: `revision` names a commit of `model` alone; trust_remote_code is needed by all of them alike."""
        return {"trust_remote_code": self.trust_remote_code, **({"revision": self.revision} if which == "base" and self.revision else {})}

    def stage_rl(self, stage: StageConfig) -> RLConfig:
        return changed(RLConfig, self.rl, stage.rl, f"stages.{stage.name}.rl")

    def stage_mcts(self, stage: StageConfig) -> MCTSConfig:
        return changed(MCTSConfig, self.mcts, stage.mcts, f"stages.{stage.name}.mcts")

    def stage_sft(self, stage: StageConfig) -> SFTConfig:
        return changed(SFTConfig, self.sft, stage.sft, f"stages.{stage.name}.sft")

    def stage_sampling(self, stage: StageConfig) -> SamplingConfig:
        return changed(SamplingConfig, self.sampling, stage.sampling, f"stages.{stage.name}.sampling")

    def stage_filters(self, stage: StageConfig) -> FilterConfig:
        return changed(FilterConfig, FilterConfig(), stage.filters, f"stages.{stage.name}.filters")

    def student_pretrain(self) -> PretrainConfig:
        return changed(PretrainConfig, self.pretrain, self.student.pretrain, "student.pretrain")

    @field_validator("device")
    @classmethod
    def _device_format(cls, v: str) -> str:
        import torch

        if v != "auto":
            try:
                torch.device(v)
            except (RuntimeError, ValueError):
                raise ValueError(f"{v!r} is not a device: use auto, cpu, cuda, cuda:N or mps") from None
        return v

    @model_validator(mode="before")
    @classmethod
    def _inherit_checkpointing(cls, data):
        """rl and sft take the run's gradient_checkpointing where they do not set their own."""
        if not isinstance(data, dict) or not isinstance(data.get("gradient_checkpointing"), bool):
            return data
        data = dict(data)
        for use in ("rl", "sft"):
            section = data.get(use, {})
            if isinstance(section, dict) and "gradient_checkpointing" not in section:
                data[use] = {**section, "gradient_checkpointing": data["gradient_checkpointing"]}
        return data

    @model_validator(mode="after")
    def _rl_samples(self):
        """GRPO learns from the spread of a group's rewards: greedy sampling makes a group G copies of one
        completion, every advantage 0, and nothing trains. An mcts expansion's samples are its children: the same.
        Checked for the stages that sample so, not for settings no stage uses."""
        problems = [f"stages.{st.name}.rl.sampling.temperature (or rl.sampling.temperature, sampling.temperature): "
                    "RL needs temperature > 0; at 0 every group's completions are identical and nothing trains"
                    for st in self.stages if st.kind == "rl" and self.stage_rl(st).sampling.temperature == 0]
        problems += [f"stages.{st.name}.mcts.sampling.temperature (or mcts.sampling.temperature, sampling.temperature): "
                     "an expansion samples `branching` different steps; at 0 they are one"
                     for st in self.stages if st.kind == "mcts" and self._mcts_temperature(st) == 0]
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _conversations_train_through_chat(self):
        """SFT rows made from conversational prompts hold the conversation (system and earlier turns), which
        only a chat template writes back as a prompt."""
        if self.data.prompt_format == "conversational" and self.template != "chat" and any(st.kind == "sft" for st in self.stages):
            raise ValueError("data.prompt_format=conversational with sft stages needs template=chat (the SFT rows are "
                             "conversations, written with the tokenizer's chat template)")
        return self

    def check_processes(self, n: int) -> None:
        """n processes split each rl step's prompts evenly (r1lab/dist.py): every rl stage's prompts_per_step
        must divide by n. Checked before any model work (and before `--nproc` starts processes)."""
        if n > 1 and self.rollout.engine != "torch":
            raise ConfigError(f"rollout.engine={self.rollout.engine} with {n} processes is not supported yet: "
                              "use rollout.engine=torch with several processes, or one process with vllm")
        if n > 1 and self.eval.every:
            raise ConfigError(f"eval.every={self.eval.every} with {n} processes is not supported yet (the evaluation runs "
                              "on rank 0, and a sharded model needs every rank): use eval.every=0 with several processes")
        if n > 1 and any(st.kind == "mcts" for st in self.stages):
            raise ConfigError(f"an mcts stage with {n} processes is not supported: its search runs in one process; "
                              "run the recipe without --nproc")
        if n > 1 and self.lora.r > 0:
            raise ConfigError(f"lora.r > 0 with {n} processes is not supported yet: train LoRA in one process")
        bad = [f"stages.{st.name}.rl.prompts_per_step={self.stage_rl(st).prompts_per_step}"
               for st in self.stages if st.kind == "rl" and self.stage_rl(st).prompts_per_step % n]
        if bad:
            raise ConfigError(f"{n} processes split each rl step's prompts evenly, but {', '.join(bad)} "
                              f"does not divide by {n}: set rl.prompts_per_step to a multiple of {n}")

    @model_validator(mode="before")
    @classmethod
    def _inherit_sampling(cls, data):
        """rl.sampling, mcts.sampling and eval.sampling are changes to the run's `sampling` (eval's protocol, EVAL_SAMPLING,
        between the two): filled in here, so after load both are whole SamplingConfigs."""
        if not isinstance(data, dict):
            return data
        top = data.get("sampling", {})
        top = top.model_dump() if isinstance(top, BaseModel) else top
        try:
            SamplingConfig.model_validate(top)
        except ValidationError:
            return data  # reported once, under `sampling`, not again under rl and eval
        data = dict(data)
        for use, own in (("rl", {}), ("mcts", {}), ("eval", EVAL_SAMPLING)):
            section = data.get(use, {})
            if isinstance(section, dict) and isinstance(section.get("sampling", {}), dict):
                data[use] = {**section, "sampling": {**top, **own, **section.get("sampling", {})}}
        return data

    @model_validator(mode="after")
    def _stages_refer_backwards(self):
        seen: dict[str, str] = {}
        for i, st in enumerate(self.stages):
            if st.name in seen or st.name in (*MODEL_NAMES, "final"):
                raise ValueError(f"stages[{i}].name '{st.name}' is used twice or reserved")
            wanted = [st.init] if st.kind not in ("sft", "reward-model") else [st.init, *st.data]
            for ref in wanted:
                if ref not in MODEL_NAMES and ref not in seen:
                    raise ValueError(f"stages[{i}] ({st.name}) refers to '{ref}', which is not one of "
                                     f"{', '.join(MODEL_NAMES)} or an earlier stage")
            if seen.get(st.init) in (*DATA_KINDS, "reward-model"):
                raise ValueError(f"stages[{i}].init '{st.init}' is a {seen[st.init]} stage: it makes "
                                 f"{'a reward model' if seen[st.init] == 'reward-model' else 'data'}, not a policy")
            if st.kind == "reward-model" and (not st.data or any(seen.get(d) != "generate" for d in st.data)):
                raise ValueError(f"stages[{i}] ({st.name}) is reward-model: its data must name earlier generate stages "
                                 "(their every sample, right and wrong, is what it learns to tell apart)")
            if st.kind == "rl" and (scorer := self._scorer_of(st)) in self._stage_names():
                if seen.get(scorer) != "reward-model":
                    raise ValueError(f"stages.{st.name}.rl.reward_model '{scorer}' names a stage that is not an earlier "
                                     "reward-model stage")
                self._check_supervision(st, next(x for x in self.stages if x.name == scorer))
            if st.kind == "sft" and (not st.data or any(seen.get(d) not in DATA_KINDS for d in st.data)):
                raise ValueError(f"stages[{i}] ({st.name}) is sft: its data must name earlier generate, answers or traces stages")
            if st.init == "teacher" and not self.teacher:
                raise ValueError(f"stages[{i}] ({st.name}) starts from 'teacher': set teacher=PATH to a model directory")
            seen[st.name] = st.kind
        if self.final_stage is not None and seen.get(self.final_stage) not in ("rl", "mcts", "sft"):
            raise ValueError(f"final_stage '{self.final_stage}' is not an rl, mcts or sft stage of this recipe")
        if not any(st.makes_model for st in self.stages):
            raise ValueError("a recipe needs at least one rl, mcts or sft stage (one that makes a model)")
        return self

    def _mcts_temperature(self, stage: StageConfig) -> float | None:
        """An mcts stage's sampling temperature (None while its settings are invalid: _stage_settings_valid names them)."""
        try:
            return self.stage_mcts(stage).sampling.temperature
        except ConfigError:
            return None

    def _stage_names(self) -> set[str]:
        return {st.name for st in self.stages}

    def _check_supervision(self, stage: StageConfig, scorer: StageConfig) -> None:
        """process_* rewards read a PRM's step scores, outcome an ORM's: the stage must train that one."""
        rl = self.stage_rl(stage)
        wanted = {"outcome" if r == "outcome" else "process" for r in {**rl.rewards, **rl.general_rewards}
                  if r in ("process_min", "process_last", "outcome")}
        if wanted and wanted != {scorer.supervision}:
            raise ValueError(f"stages.{stage.name}.rl.rewards read {' and '.join(sorted(wanted))} scores, and stage "
                             f"{scorer.name} trains a scorer with supervision: {scorer.supervision}")

    def _scorer_of(self, stage: StageConfig) -> str | None:
        """An rl stage's rl.reward_model (None while its settings are invalid: _stage_settings_valid names them)."""
        try:
            return self.stage_rl(stage).reward_model
        except ConfigError:
            return None

    @model_validator(mode="after")
    def _stage_settings_valid(self):
        """Each stage's settings resolved now, so a typo fails at load, not when its stage starts an hour later."""
        resolve = {"rl": self.stage_rl, "mcts": self.stage_mcts, "sft": self.stage_sft, "sampling": self.stage_sampling, "filters": self.stage_filters}
        problems = []
        for st in self.stages:
            for block, settings in resolve.items():
                if block not in StageConfig.uses[st.kind]:
                    if getattr(st, block):
                        problems.append(f"stages.{st.name}.{block}: a {st.kind} stage has no {block} settings")
                    continue
                try:
                    settings(st)
                except ConfigError as err:
                    problems.append(str(err))
        if any(st.init == "student" for st in self.stages):
            try:
                self.student_pretrain()
            except ConfigError as err:
                problems.append(str(err))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @model_validator(mode="after")
    def _lora_resets_no_reference(self):
        """LoRA's reference model is the base with the adapter disabled: it cannot be reset to the policy.
        (An algorithm that trains a value model, which LoRA does not support, is refused by recipes/load.py.)"""
        if not self.lora.enabled:
            return self
        problems = [f"stages.{st.name}.rl.ref_reset_every: with LoRA (lora.r > 0) the reference is the frozen "
                    "base model and cannot be reset to the policy; use 0 or lora.r=0"
                    for st in self.stages if st.kind == "rl" and self.stage_rl(st).ref_reset_every]
        if problems:
            raise ValueError("\n".join(problems))
        return self
