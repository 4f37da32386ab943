"""The settings of each part of a run: one pydantic class per part (RunConfig, over them all, is in run.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from r1lab.config.base import Strict


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
    steps: int = Field(1600, gt=0)
    lr: float = Field(5e-3, gt=0)
    census: int = Field(500, ge=0, description="held-out equations (x 4 samples at T=1) the base's checks are judged on "
                        "when it is built (r1lab.json's checks); 0 skips it")
    careful_styles: bool = Field(True, description="the corpus holds the long, careful worked solutions (those that "
                                 "check, redo or keep searching); false drops them: the aha-ablation's base")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by heads ({self.heads})")
        return self


class DataConfig(Strict):
    """How a dataset task's rows are read (a local file or directory, or a hub dataset id) and split."""

    question_field: str = Field("question", description="the prompt column (TRL's datasets call it 'prompt')")
    answer_field: str = Field("answer", description="the reference answer column; a GSM8K '#### n' or a \\boxed{} is the answer")
    prompt_format: Literal["text", "conversational"] = Field(
        "text", description="text: the prompt column holds the question; conversational: a list of {role, content} "
        "messages ending with the user's (TRL's format), rendered with the run's template")
    config: str | None = Field(None, description="the dataset's configuration (e.g. main for openai/gsm8k)")
    split: str = Field("train", description="the split to train on")
    test_split: str | None = Field(None, description="the split to evaluate on (None: the dataset's 'test' split if it has "
                                   "one, else test_size rows held out of `split`)")
    test_file: str | None = Field(None, description="a separate file to evaluate on, used whole")
    test_size: int = Field(200, gt=0)
    train_size: int | None = Field(None, gt=0)
    too_long: Literal["error", "drop"] = Field("error", description="prompts longer than the model's context minus "
                                               "sampling.max_new_tokens: error (refuse, naming the rows) or drop (warn)")
    allow_changed: bool = Field(False, description="resume even though a data file changed since the run started "
                                "(its fingerprint, recorded in RUN/data.json, differs); not part of the config comparison")


class SamplingConfig(Strict):
    """How completions are sampled. The run's `sampling` is everyone's; rl.sampling, eval.sampling and a
    generate stage's `sampling` change it for their own use. The defaults are RL's (the paper's T=1)."""

    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, description="0 = off")
    max_new_tokens: int = Field(128, gt=0)
    stop: list[str] = Field(default_factory=list, description="stop strings, besides EOS")


EVAL_SAMPLING = {"temperature": 0.6, "top_p": 0.95}  # the paper measures (and talks to) models this way, never greedy
REFLECTION_PHRASES = ("wait", "recheck", "check", "等等", "再算", "验算")  # a response "reflects" if it has one


class RLConfig(Strict):
    """RL on rule rewards: GRPO, a variant of it or PPO (`algorithm`). Defaults suit the tiny world;
    the paper's values are in docs/R1_RECIPE.md section 2, the algorithms in r1lab/rl/algorithms.py."""

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
    micro_batch_tokens: int | None = Field(None, gt=0, description="also at most this many tokens per forward/backward, "
                                           "counted padded: rows x (prompt width + longest completion); None = rows only")
    gradient_checkpointing: bool = Field(False, description="recompute each layer's activations in the backward pass "
                                         "(unset: the run's gradient_checkpointing)")
    ref_reset_every: int = Field(0, ge=0, description="reset the reference to the policy every N steps (0 = never)")
    max_resample_rounds: int = Field(4, ge=0, description="dapo: extra rounds of prompts_per_step prompts a step may sample "
                                     "to replace groups whose rewards are all equal; past it, train on the groups found")
    gamma: float = Field(1.0, ge=0, le=1, description="ppo: discount per token")
    lam: float = Field(0.95, ge=0, le=1, description="ppo: GAE lambda (R1's appendix: 1.0 brings PPO close to GRPO)")
    vf_coef: float = Field(0.1, ge=0, description="ppo: weight of the value loss in the loss")
    value_clip: float = Field(0.2, gt=0, description="ppo: a value prediction moves at most this far from the rollout's")
    value_lr: float | None = Field(None, gt=0, description="ppo: value model learning rate (None = lr)")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="changes to the run's `sampling` for rollouts")
    rewards: dict[str, float] = Field(default_factory=lambda: {"accuracy": 1.0, "format": 1.0},
                                      description="reward weights for reasoning prompts (rules a program checks): "
                                      "built-in names or your own module:function (r1lab/rewards/registry.py)")
    general_rewards: dict[str, float] = Field(default_factory=lambda: {"helpfulness": 1.0},
                                              description="reward weights for general prompts (examples with meta general)")
    reward_model: str | None = Field(None, description="the 'reward_model' reward's HF sequence-classification model; the "
                                     "learned rewards' (process_min, process_last, outcome) scorer: its directory, or in a "
                                     "recipe the name of the reward-model stage that trains it")
    tools: list[str] = Field(default_factory=list, description="tools the policy may call mid-episode, by import path "
                             "(r1lab.tools:calculator, my_tools:search): typed functions with a docstring. With tools, "
                             "an episode has up to rollout.max_turns turns within sampling.max_new_tokens tokens "
                             "(engines/episodes.py)")
    environment: str | None = Field(None, description="a class by import path (my_envs:Library) in TRL's environment_factory "
                                    "shape: one instance per episode, reset(**row) with the example's row (its observation "
                                    "ends the prompt), its public methods tools beside rl.tools, its reward() the "
                                    "'environment' reward")
    reflection_phrases: list[str] = Field(default_factory=lambda: list(REFLECTION_PHRASES),
                                          description="phrases counted as reflection (training and eval metrics)")
    rollout_is: Literal["auto", "truncate", "mask", "off"] = Field(
        "auto", description="rollout/train mismatch correction: the engine's log-probs differ from the trainer's (kernels, "
        "precision), so the trainer computes its own old log-probs and weights each token's loss by min(ratio, cap) "
        "(truncate) or drops tokens with ratio > cap (mask), ratio = p_trainer / p_sampler. auto: truncate with an engine "
        "whose log-probs are not the trainer's (vllm), off with the torch engine (they are exactly the trainer's)")
    rollout_is_cap: float = Field(2.0, gt=1, description="the cap C of the importance weights (verl and TRL use 2-3)")
    checkpoint_every: int = Field(20, ge=0, description="0 = only at the end")
    log_samples: int = Field(4, ge=0, description="completions written to samples.jsonl per step")
    seed_per_prompt: bool = Field(False, description="sample each prompt's completions from a random stream of its own "
                                  "(fixed by the seed and its place in the data order), so samples do not depend on how "
                                  "prompts are batched or split over processes; always on with several processes")
    max_bad_steps: int = Field(3, gt=0, description="steps in a row with a non-finite loss, gradient or reward (each "
                               "skipped, no update) that stop the run as diverged")
    entropy_warn: float | None = Field(0.9, gt=0, description="warn when the sampling entropy passes this share of "
                                       "ln(vocabulary size), a near-uniform policy (None = never)")
    kl_warn: float | None = Field(10.0, gt=0, description="warn when the KL to the reference passes this (None = never)")

    @model_validator(mode="after")
    def _reward_model_named(self):
        if "reward_model" in {**self.rewards, **self.general_rewards} and not self.reward_model:
            raise ValueError("the 'reward_model' reward needs rl.reward_model=PATH (an HF sequence-classification model)")
        learned = [r for r in ("process_min", "process_last", "outcome") if r in {**self.rewards, **self.general_rewards}]
        if learned and not self.reward_model:
            raise ValueError(f"the learned reward {learned[0]!r} needs rl.reward_model: a scorer's directory, or the name "
                             "of the recipe's reward-model stage")
        return self


class RolloutConfig(Strict):
    """Which engine samples completions (engines/__init__.py: ENGINES)."""

    engine: str = Field("torch", description="torch: r1lab's KV-cached sampler in this process (CPU or GPU); vllm: vLLM's "
                        "offline LLM colocated in this process, weights synced after every optimizer step (pip install 'r1lab[vllm]')")
    # An engine's own options. Only those changed from their defaults reach the engine, and setting one the engine does
    # not take is refused when the settings load (recipes/load.py), not silently dropped.
    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="vllm: share of the accelerator's memory vLLM may "
                                          "take (weights + KV cache); the trainer needs the rest")
    sleep: bool = Field(False, description="vllm on CUDA: free vLLM's weights and KV cache while the trainer runs (sleep mode)")
    max_turns: int = Field(3, gt=0, description="with rl.tools: generations per episode, a tool's result appended "
                           "between them (the last turn makes no call)")

    def options(self) -> dict:
        """What make_engine passes to the engine: its own options changed from their defaults."""
        return self.model_dump(exclude={"engine", "max_turns"}, exclude_defaults=True)


class EvalConfig(Strict):
    """The paper's protocol: pass@1 = mean correctness over k samples at T=0.6, top-p 0.95 (EVAL_SAMPLING)."""

    k: int = Field(4, gt=0)
    n: int | None = Field(None, gt=0, description="test problems to use (None = the whole test split)")
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(**EVAL_SAMPLING),
                                     description="EVAL_SAMPLING, then the run's `sampling` for the rest, changed by these")
    batch_size: int = Field(256, gt=0, description="sequences sampled at once")
    every: int = Field(0, ge=0, description="rl stages: also evaluate on every_n test problems before the first step, "
                       "every this many steps and at the last (metrics.jsonl: eval_pass@1, eval_length, eval_reflection); "
                       "0 = never")
    every_n: int = Field(100, gt=0, description="test problems (the first of the split) each eval.every evaluation uses")
    extra_tasks: list[str] = Field(default_factory=list, description="more tasks every model is measured on (e.g. tinyworld/general)")

    @field_validator("sampling", mode="before")
    @classmethod
    def _protocol(cls, v):
        return {**EVAL_SAMPLING, **v} if isinstance(v, dict) else v


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
    max_bad_steps: int = Field(3, gt=0, description="optimizer steps in a row with a non-finite loss or gradient (each "
                               "skipped) that stop the run as diverged")
    gradient_checkpointing: bool = Field(False, description="recompute each layer's activations in the backward pass "
                                         "(unset: the run's gradient_checkpointing)")
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="share of examples held out for the eval loss (0 = none)")
    eval_every: int = Field(50, ge=0, description="optimizer steps between eval losses (0 = only at the end)")
    checkpoint_every: int = Field(100, ge=0, description="optimizer steps between checkpoints (0 = only at the end)")
    # seed, template and system are the run's (one of each for every stage), given to train_sft beside this
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = Field("messages", description="chat rows: a list of {role, content}; the last assistant message is the completion")

    @model_validator(mode="after")
    def _micro_divides_batch(self):
        if self.batch_size % self.micro_batch_size:
            raise ValueError(f"micro_batch_size ({self.micro_batch_size}) must divide batch_size ({self.batch_size})")
        return self


class LogConfig(Strict):
    """Experiment trackers besides RUN/metrics.jsonl (r1lab/store/trackers.py): every metrics row, the config and the
    final table, written offline under RUN/trackers/. Not part of the experiment: a resume may change it."""

    report_to: list[str] = Field(default_factory=list, description="trackers to report to: wandb, tensorboard, trackio "
                                 "(each an extra: pip install 'r1lab[wandb]'); wandb runs offline unless WANDB_MODE is set")
    project: str = Field("r1lab", min_length=1, description="the wandb / trackio project")
    run_name: str | None = Field(None, min_length=1, description="the run's name in the trackers (None: the run "
                                 "directory's name)")

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_or_a_list(cls, v):
        """report_to=wandb or report_to=wandb,tensorboard, as well as a list."""
        return [name.strip() for name in v.split(",") if name.strip()] if isinstance(v, str) else v

    @field_validator("report_to")
    @classmethod
    def _once_each(cls, names: list[str]) -> list[str]:
        return list(dict.fromkeys(names))  # which names exist and are installed: recipes/load.py checks


class FilterConfig(Strict):
    """Which samples a generate stage keeps. A None threshold turns its filter off."""

    require_correct: bool = Field(True, description="drop samples the verifier scores below 1")
    require_format: bool = Field(True, description="drop samples not exactly <think>…</think> <answer>…</answer>")
    require_summary: bool = Field(True, description="drop samples without a non-empty <answer> after </think>")
    max_repetition: float | None = Field(0.3, ge=0, le=1, description="drop above this share of repeated word 3-grams")
    min_language_share: float | None = Field(0.95, ge=0, le=1, description="drop below this share of thinking in `language`")
    language: Literal["en", "zh"] = Field("en", description="target language of the thinking")
    drop_truncated: bool = Field(True, description="drop samples that hit the generation limit")
    max_tokens: int | None = Field(None, gt=0, description="drop samples longer than this many tokens")
    max_per_prompt: int | None = Field(None, gt=0, description="keep at most this many samples per prompt (None: all)")
    dedupe: bool = Field(True, description="drop a response seen earlier for the prompt (up to whitespace)")
