"""The stage kinds of a recipe, one function each (RUNNERS): rl (GRPO or another rl.algorithm), mcts (tree search
with a value model, docs/FAILED.md), generate (sample,
score, filter), answers (the task's reference answers), traces (the tiny world's tool-using solutions) and sft; each
trains or writes into the stage's directory."""

from __future__ import annotations

import functools
import time
from pathlib import Path

from r1lab import dist
from r1lab.config import StageConfig
from r1lab.evaluation.evaluate import evaluate
from r1lab.models.io import save_model
from r1lab.recipes.run import Run


def trainable(run: Run, name: str):
    """The model `name` as an rl or sft stage trains it, and its tokenizer: with lora.r > 0, LoRA adapters
    on it (its own weights frozen, kept in the compute dtype); otherwise its weights in fp32, the master
    copy the optimizer updates (models.py). A run with tools adds their call and result tokens first."""
    from r1lab.models.vocab import add_tokens

    model, tokenizer = run.load(name, master_weights=not run.cfg.lora.enabled)
    add_tokens(model, tokenizer, run.tool_tokens, run.cfg.seed)  # a run with tools: its first trained model learns their markers
    if not run.cfg.lora.enabled:
        return model, tokenizer
    from r1lab.models.lora import add_lora

    return add_lora(model, run.cfg.lora, run.cfg.seed), tokenizer


def run_rl(run: Run, stage: StageConfig, out: Path) -> dict:
    from r1lab.rl.loop import train_rl

    rl = run.cfg.stage_rl(stage)
    if rl.reward_model in {st.name for st in run.cfg.stages}:  # a reward-model stage of this recipe: its scorer
        rl = rl.model_copy(update={"reward_model": str(run.dir / rl.reward_model / "final")})
    dist.barrier()  # every rank starts once rank 0 has made (and measured) the stage's init model
    policy, tokenizer = trainable(run, stage.init)
    task = run.fitted(run.task_of(stage), policy, tokenizer, rl.sampling.max_new_tokens, "train")  # before any engine
    engine = run.engine(policy, tokenizer)
    try:
        result = train_rl(policy, tokenizer, task, rl, out, engine=engine, template=run.cfg.template,
                          system=run.system, seed=run.cfg.seed, stage=stage.name,
                          held_out=functools.partial(held_out, run, stage, engine), held_out_every=run.cfg.eval.every,
                          report=run.report, max_turns=run.cfg.rollout.max_turns)
    finally:
        engine.close()
    if dist.is_main():  # every rank holds the whole trained policy
        save_model(policy, tokenizer, out / "final", {"built_by": f"r1lab stage {stage.name} (rl)", "template": run.cfg.template,
                                                      "system": run.system, **run.tools_meta})
    return result


def run_mcts(run: Run, stage: StageConfig, out: Path) -> dict:
    """The R1 paper's failed attempt #2: MCTS over reasoning steps guided by a value model (rl/mcts_loop.py)."""
    from r1lab.rl.mcts_loop import train_mcts

    cfg = run.cfg.stage_mcts(stage)
    policy, tokenizer = trainable(run, stage.init)
    task = run.fitted(run.task_of(stage), policy, tokenizer, cfg.sampling.max_new_tokens, "train")
    engine = run.engine(policy, tokenizer)
    try:
        result = train_mcts(policy, tokenizer, task, cfg, out, engine=engine, template=run.cfg.template, system=run.system,
                            seed=run.cfg.seed, stage=stage.name, held_out=functools.partial(held_out, run, stage, engine),
                            held_out_every=run.cfg.eval.every, report=run.report)
    finally:
        engine.close()
    save_model(policy, tokenizer, out / "final", {"built_by": f"r1lab stage {stage.name} (mcts)", "template": run.cfg.template,
                                                  "system": run.system, **run.tools_meta})
    return result


def held_out(run: Run, stage: StageConfig, engine) -> dict:
    """The policy being trained on the first eval.every_n test problems, sampled as every evaluation is. The
    engine's random state is put back after: training samples the same with eval.every on or off."""
    task, rng = run.task_of(stage), engine.rng_state()
    try:
        result = evaluate(engine, task, run.cfg.eval, template=run.cfg.template, system=run.system,
                          reflection_phrases=run.cfg.stage_rl(stage).reflection_phrases,
                          examples=task.examples("test")[: run.cfg.eval.every_n], progress=False, turns=run.turns)
    finally:
        engine.set_rng_state(rng)
    return {"eval_pass@1": result["pass@1"], "eval_length": result["mean_length"], "eval_reflection": result["reflection_rate"]}


def run_generate(run: Run, stage: StageConfig, out: Path) -> dict:
    from r1lab.sft.generate import generate

    model, tokenizer = run.load(stage.init)
    out.mkdir(parents=True, exist_ok=True)
    task = run.task_of(stage)
    t0 = time.time()
    engine = run.engine(model, tokenizer)
    try:
        stats = generate(engine, task, task.examples("train")[: stage.prompts], k=stage.k,
                         sampling=run.cfg.stage_sampling(stage), template=run.cfg.template, system=run.system,
                         filters=run.cfg.stage_filters(stage),
                         out_path=out / "samples.jsonl", label=stage.name)
    finally:
        engine.close()
    return {**stats, "wall_seconds": round(time.time() - t0, 1)}


def run_answers(run: Run, stage: StageConfig, out: Path) -> dict:
    """The task's own answers, without a chain of thought: R1's non-reasoning SFT data (in the paper,
    DeepSeek-V3's SFT set), so the final model answers simple questions without over-thinking."""
    from r1lab.sft.generate import write_reference_answers

    task = run.task_of(stage)
    return write_reference_answers(task.examples("train")[: stage.prompts], out / "samples.jsonl")


def run_traces(run: Run, stage: StageConfig, out: Path) -> dict:
    """The tiny world's worked solutions, calling tools in stage.tool_share of them: the SFT data that first shows a
    model the call and result tokens (tinyworld/tool_traces.py)."""
    import random

    from r1lab.sft.generate import write_completions
    from r1lab.tinyworld.tool_traces import trace

    rng, examples = random.Random(f"traces-{run.cfg.seed}"), run.task_of(stage).examples("train")[: stage.prompts]
    completions = []
    for ex in examples:
        thinking, answer = trace(rng, ex, stage.tool_share)
        completions.append(f"<think> {thinking} </think> <answer> {answer} </answer>")
    stats = write_completions(examples, completions, out / "samples.jsonl")
    return {**stats, "with_tools": sum("<tool>" in c for c in completions)}


def run_sft(run: Run, stage: StageConfig, out: Path) -> dict:
    from r1lab.sft.generate import read_kept
    from r1lab.sft.train import load_sft_examples, train_sft

    cfg, prompt = run.cfg.stage_sft(stage), {"template": run.cfg.template, "system": run.system}
    model, tokenizer = trainable(run, stage.init)
    rows = [row for name in stage.data for row in read_kept(run.dir / name / "samples.jsonl")]
    if not rows:
        raise ValueError(f"stage {stage.name}: its data stages ({', '.join(stage.data)}) kept no samples to train on")
    examples = load_sft_examples(rows, cfg, tokenizer, **prompt)
    return train_sft(model, tokenizer, examples, cfg, out, seed=run.cfg.seed, stage=stage.name, report=run.report,
                     tools=run.tools_meta, **prompt)


def run_reward_model(run: Run, stage: StageConfig, out: Path) -> dict:
    """A process or outcome reward model (stage.supervision): the init model with a one-output head, trained on every
    sample of the stage's generate stages, each labelled by the task's checker (sft/scorer.py), saved in out/final."""
    import torch
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    from r1lab.models.device import pick_device
    from r1lab.models.io import load_tokenizer
    from r1lab.sft.scorer import labelled_rows, train_scorer
    from r1lab.store.logs import read_jsonl

    path, cfg = run.model_path(stage.init), run.cfg.stage_sft(stage)
    rows = [row for name in stage.data for row in read_jsonl(run.dir / name / "samples.jsonl", strict=True)]
    rows = labelled_rows(rows, run.task_of(stage), stage.supervision)  # before any model work: a task without a checker fails now
    tokenizer = load_tokenizer(path, f"stages.{stage.name}.init")
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report lists the new head as "missing": it is, and it is what trains
    try:
        model = AutoModelForTokenClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    finally:
        hf_logging.set_verbosity(verbosity)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to(pick_device(run.cfg.device))
    result = train_scorer(model, tokenizer, rows, cfg, out, seed=run.cfg.seed, stage=stage.name)
    if dist.is_main():
        save_model(model, tokenizer, out / "final", {"built_by": f"r1lab stage {stage.name} (reward-model)",
                                                     "scorer": stage.supervision, "template": run.cfg.template})
    return result


RUNNERS = {"rl": run_rl, "mcts": run_mcts, "generate": run_generate, "answers": run_answers, "traces": run_traces,
           "sft": run_sft, "reward-model": run_reward_model}
