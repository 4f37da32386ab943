"""Every setting of a run, validated in one place: YAML recipes + `a.b=value` command-line overrides."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A recipe or override is wrong; the message names the field."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PretrainConfig(Strict):
    """The tiny world's base model: corpus, tokenizer, architecture and pretraining budget."""

    seed: int = 0
    corpus_docs: int = Field(60_000, gt=0, description="documents in the synthetic corpus")
    vocab_size: int = Field(448, ge=300)
    hidden_size: int = Field(128, gt=0)
    intermediate_size: int = Field(384, gt=0)
    layers: int = Field(4, gt=0)
    heads: int = Field(4, gt=0)
    max_len: int = Field(160, gt=16, description="context length and pretraining block size")
    batch_size: int = Field(32, gt=0)
    steps: int = Field(800, gt=0)
    lr: float = Field(5e-3, gt=0)

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads})")
        return self


class DataConfig(Strict):
    """How a task's examples are read (file tasks) and split."""

    question_field: str = "question"
    answer_field: str = "answer"
    test_file: str | None = None
    test_size: int = Field(200, gt=0)
    train_size: int | None = Field(None, gt=0)


class SamplingConfig(Strict):
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 = off")
    max_new_tokens: int = Field(128, gt=0)
    stop: list[str] = Field(default_factory=list, description="stop strings, besides EOS")


class RLConfig(Strict):
    """RL on rule rewards: GRPO, a variant of it or PPO (`algorithm`). Defaults suit the tiny world;
    the paper's values are in R1_RECIPE.md section 2, the algorithms in r1lab/algorithms.py."""

    steps: int = Field(100, gt=0)
    prompts_per_step: int = Field(16, gt=0)
    group_size: int = Field(8, gt=1, description="completions per prompt (G)")
    lr: float = Field(1e-4, gt=0)
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = Field(3, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    algorithm: str = Field("grpo", description="a name in r1lab.rl.algorithms.ALGORITHMS. grpo: group (r-mean)/std, "
        "per-completion token mean; dr_grpo: r-mean, no length normalisation; dapo: clip-higher, token-level loss, "
        "dynamic sampling (add the 'length' reward to `rewards` for its overlong shaping); gspo: sequence-level ratio "
        "and clip; rloo: leave-one-out baseline; reinforce_pp: batch-normalised rewards, token-level loss, KL as the k3 "
        "loss term; ppo: value model + GAE, beta * KL folded into the reward")
    eps: float | None = Field(None, gt=0, description="clip range: ratio in [1-eps, 1+eps_high]; None = the algorithm's "
                              "default: 0.2 (gspo 3e-4, its ratio is a per-token mean)")
    eps_high: float | None = Field(None, gt=0, description="upper clip (DAPO clip-higher); None = eps (dapo 0.28, gspo 4e-4)")
    beta: float = Field(0.0, ge=0, description="KL coefficient; 0 loads no reference model")
    mu: int = Field(1, gt=0, description="inner iterations over each batch of rollouts")
    minibatch_size: int = Field(128, gt=0, description="completions per optimizer step")
    micro_batch_size: int = Field(64, gt=0, description="completions per forward/backward (gradient accumulation)")
    ref_reset_every: int = Field(0, ge=0, description="reset the reference to the policy every N steps (0 = never)")
    max_resample_rounds: int = Field(4, ge=0, description="dapo: extra rounds of prompts_per_step prompts a step may sample "
                                     "to replace groups whose rewards are all equal; past it, train on the groups found")
    gamma: float = Field(1.0, ge=0, le=1, description="ppo: discount per token")
    lam: float = Field(0.95, ge=0, le=1, description="ppo: GAE lambda (R1's appendix: 1.0 brings PPO close to GRPO)")
    vf_coef: float = Field(0.1, ge=0, description="ppo: weight of the value loss in the loss")
    value_clip: float = Field(0.2, gt=0, description="ppo: a value prediction moves at most this far from the rollout's")
    value_lr: float | None = Field(None, gt=0, description="ppo: value model learning rate (None = lr)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    rewards: dict[str, float] = Field(default_factory=lambda: {"accuracy": 1.0, "format": 1.0},
                                      description="reward weights for reasoning prompts (rules a program checks)")
    general_rewards: dict[str, float] = Field(default_factory=lambda: {"helpfulness": 1.0},
                                              description="reward weights for general prompts (examples with meta general)")
    reward_model: str | None = Field(None, description="HF sequence-classification model used by the 'reward_model' reward")
    reflection_phrases: list[str] = Field(default_factory=lambda: ["wait", "recheck", "check", "等等", "再算", "验算"])
    checkpoint_every: int = Field(20, ge=0, description="0 = only at the end")
    log_samples: int = Field(4, ge=0, description="completions written to samples.jsonl per step")

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, v: str) -> str:
        from r1lab.rl.algorithms import ALGORITHMS

        if v not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {v!r}: known algorithms are {', '.join(ALGORITHMS)}")
        return v


class RolloutConfig(Strict):
    """Which engine samples completions (engines/__init__.py: ENGINES)."""

    engine: str = Field("torch", description="torch: r1lab's KV-cached sampler in this process (CPU or GPU)")

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        from r1lab.engines import ENGINES

        if v not in ENGINES:
            raise ValueError(f"unknown engine {v!r}: known engines are {', '.join(sorted(ENGINES))}")
        return v


class EvalConfig(Strict):
    """The paper's protocol: pass@1 = mean correctness over k samples at T=0.6, top-p 0.95."""

    k: int = Field(4, gt=0)
    n: int | None = Field(None, gt=0, description="test problems to use (None = the whole test split)")
    temperature: float = Field(0.6, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(128, gt=0)
    batch_size: int = Field(256, gt=0, description="sequences sampled at once")
    extra_tasks: list[str] = Field(default_factory=list, description="more tasks every model is measured on (e.g. tinyworld/general)")


class SFTConfig(Strict):
    """Supervised fine-tuning: R1's cold start, rejection-sampling SFT and distillation (R1 uses lr 5e-5 -> 5e-6, 2 epochs)."""

    epochs: int = Field(2, gt=0, description="passes over the training examples")
    lr: float = Field(5e-5, gt=0, description="peak learning rate, reached after warmup")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays the lr to lr * min_lr_ratio at the last step")
    warmup_steps: int = Field(10, ge=0, description="optimizer steps of linear warmup")
    batch_size: int = Field(32, gt=0, description="sequences per optimizer step")
    micro_batch_size: int = Field(8, gt=0, description="sequences per forward/backward; batch_size / micro_batch_size are accumulated")
    max_len: int = Field(4096, gt=1, description="tokens per sequence; longer examples lose the end of their completion")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="share of examples held out for the eval loss (0 = none)")
    eval_every: int = Field(50, ge=0, description="optimizer steps between eval losses (0 = only at the end)")
    checkpoint_every: int = Field(100, ge=0, description="optimizer steps between checkpoints (0 = only at the end)")
    seed: int = 0
    template: Literal["r1-zero", "chat", "none"] = "r1-zero"
    system: str | None = Field(None, description="system text for the template (None = the paper's for r1-zero, none for chat)")
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = Field("messages", description="chat rows: a list of {role, content}; the last assistant message is the completion")

    @model_validator(mode="after")
    def _micro_divides_batch(self):
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"micro_batch_size ({self.micro_batch_size}) must divide batch_size ({self.batch_size})")
        return self


MODEL_NAMES = ("base", "student", "teacher")  # models a stage may start from besides earlier stages


class StageConfig(Strict):
    """One step of a recipe. Stages run in order; a stage starts from `init`: 'base', 'student',
    'teacher' or an earlier stage's model.

    kinds: rl (GRPO or another rl.algorithm), sft (on earlier generate/answers stages' kept samples), generate (sample, score,
    filter), answers (the task's reference answers without a chain of thought: non-reasoning SFT data).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="also the stage's folder in the run directory")
    kind: Literal["rl", "generate", "sft", "answers"]
    init: str = Field("base", description="model to start from (rl, sft) or to sample from (generate)")
    task: str | None = Field(None, description="rl, generate, answers: the prompts' task (None = the run's task)")
    rl: dict = Field(default_factory=dict, description="rl: changes to the run's rl settings for this stage")
    sft: dict = Field(default_factory=dict, description="sft: changes to the run's sft settings for this stage")
    data: list[str] = Field(default_factory=list, description="sft: generate/answers stages whose kept samples it trains on")
    k: int = Field(4, gt=0, description="generate: samples per prompt")
    prompts: int | None = Field(None, gt=0, description="generate, answers: train prompts to use (None = all)")
    temperature: float = Field(1.0, ge=0, description="generate: sampling temperature")
    filters: dict = Field(default_factory=dict, description="generate: FilterConfig fields (r1lab/generate.py)")

    @property
    def makes_model(self) -> bool:
        return self.kind in ("rl", "sft")


class StudentConfig(Strict):
    """The smaller model of distillation: 'tinyworld' builds one like the base, changed by `pretrain`."""

    model: str = Field("tinyworld", description="HF model path or hub name; 'tinyworld' pretrains a small tiny-world model")
    pretrain: dict = Field(default_factory=lambda: {"hidden_size": 64, "intermediate_size": 192},
                           description="changes to the run's pretrain settings (default: about a quarter of the parameters)")


class RunConfig(Strict):
    recipe: str = "r1-zero"
    model: str = Field("tinyworld", description="HF model path or hub name; 'tinyworld' builds/uses the cached tiny base")
    task: str = Field("tinyworld", description="tinyworld[/arithmetic|/countdown], reasoning-gym:NAME, or a data file")
    template: Literal["r1-zero", "chat", "none"] = "r1-zero"
    system: str | None = Field(None, description="system text for the template (None = the paper's)")
    device: str = "auto"
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    teacher: str | None = Field(None, description="model directory for stages with init 'teacher' (distillation)")
    student: StudentConfig = Field(default_factory=StudentConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    rl: RLConfig = Field(default_factory=RLConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig(name="r1-zero", kind="rl")], min_length=1)
    final_stage: str | None = Field(None, description="the stage whose model RUN/final links to (None = the last rl/sft stage)")

    def student_pretrain(self) -> PretrainConfig:
        return PretrainConfig.model_validate(merge(self.pretrain.model_dump(), self.student.pretrain))

    @model_validator(mode="after")
    def _stages_refer_backwards(self):
        seen: dict[str, str] = {}
        for i, st in enumerate(self.stages):
            if st.name in seen or st.name in (*MODEL_NAMES, "final"):
                raise ValueError(f"stages[{i}].name '{st.name}' is used twice or reserved")
            wanted = [st.init] if st.kind != "sft" else [st.init, *st.data]
            for ref in wanted:
                if ref not in MODEL_NAMES and ref not in seen:
                    raise ValueError(f"stages[{i}] ({st.name}) refers to '{ref}', which is not one of "
                                     f"{', '.join(MODEL_NAMES)} or an earlier stage")
            if seen.get(st.init) in ("generate", "answers"):
                raise ValueError(f"stages[{i}].init '{st.init}' is a {seen[st.init]} stage: it makes data, not a model")
            if st.kind == "sft" and (not st.data or any(seen.get(d) not in ("generate", "answers") for d in st.data)):
                raise ValueError(f"stages[{i}] ({st.name}) is sft: its data must name earlier generate or answers stages")
            if st.init == "teacher" and not self.teacher:
                raise ValueError(f"stages[{i}] ({st.name}) starts from 'teacher': set teacher=PATH to a model directory")
            seen[st.name] = st.kind
        if self.final_stage is not None and seen.get(self.final_stage) not in ("rl", "sft"):
            raise ValueError(f"final_stage '{self.final_stage}' is not an rl or sft stage of this recipe")
        if not any(st.makes_model for st in self.stages):
            raise ValueError("a recipe needs at least one rl or sft stage (one that makes a model)")
        if any(st.init == "student" for st in self.stages):
            try:
                self.student_pretrain()
            except ValidationError as err:
                raise ValueError(f"student.pretrain: {err.errors()[0]['msg']}") from None
        return self


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

    @field_validator("env")
    @classmethod
    def _supported(cls, v: str) -> str:
        check_env(v)
        return v


def check_env(env_id: str) -> None:
    if env_id not in SUPPORTED_ENVS:
        raise ValueError(f"unsupported env {env_id!r}: supported are {', '.join(SUPPORTED_ENVS)} "
                         "(the policy is categorical, so continuous action spaces are not supported)")


def recipe_path(name: str) -> Path:
    """A recipe by name (shipped in r1lab/recipes) or by path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"recipe file '{name}' does not exist")
        return path
    shipped = resources.files("r1lab") / "recipes" / f"{name}.yaml"
    if not shipped.is_file():
        names = sorted(p.name[:-5] for p in (resources.files("r1lab") / "recipes").iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(f"unknown recipe '{name}': choose one of {', '.join(names)} or give a .yaml path")
    return Path(str(shipped))


def parse_overrides(overrides: list[str]) -> dict:
    """['rl.lr=1e-6', 'task=x.jsonl'] -> {'rl': {'lr': 1e-6}, 'task': 'x.jsonl'}; values parsed as YAML."""
    tree: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like field=value, e.g. rl.lr=1e-6")
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{part}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        # Keys such as model= and task= are paths or names: keep them as the literal text.
        node[leaf] = raw if isinstance(value, (int, float)) and leaf in ("model", "task", "system", "teacher") else value
    return tree


def merge(base: dict, update: dict) -> dict:
    """`update` over `base`, recursively. A list of stages is changed by stage name or index:
    {"stages": {"reasoning-rl": {"rl": {"steps": 5}}}} (from the override stages.reasoning-rl.rl.steps=5)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), list):
            out[key] = _merge_list(key, out[key], value)
        else:
            out[key] = value
    return out


def _merge_list(field: str, items: list, update: dict) -> list:
    items = list(items)
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    for ref, value in update.items():
        i = names.index(ref) if ref in names else int(ref) if str(ref).isdigit() and int(ref) < len(items) else None
        if i is None:
            raise ConfigError(f"{field}.{ref}: no such entry (names: {', '.join(str(n) for n in names)})")
        items[i] = merge(items[i], value) if isinstance(value, dict) and isinstance(items[i], dict) else value
    return items


def _field_names(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        names.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names += _field_names(field.annotation, prefix + name + ".")
    return names


def validate(data: dict, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        known = _field_names(RunConfig)
        lines = []
        for e in err.errors():
            where = ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                close = difflib.get_close_matches(where, known, n=1)
                lines.append(f"  {where}: unknown field" + (f" (did you mean '{close[0]}'?)" if close else ""))
            elif not e["loc"] or isinstance(e.get("input"), dict):  # a check across fields: the message names them
                lines.append(f"  {where or 'config'}: {e['msg'].removeprefix('Value error, ')}")
            else:
                lines.append(f"  {where}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError(f"invalid {source}:\n" + "\n".join(lines)) from None


def load_config(recipe: str, overrides: list[str] = ()) -> RunConfig:
    path = recipe_path(recipe)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe '{path}' is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe '{path}' must be a mapping of fields")
    return validate(merge(data, parse_overrides(list(overrides))), source=f"recipe '{recipe}' with overrides")
