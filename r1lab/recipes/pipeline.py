"""Runs a recipe's stages into a run directory, evaluates every model it makes, writes the summary and report.

    RUN/config.yaml     the resolved config (a run directory holds one experiment), RUN/data.json its data files'
                        sha256: both written with the first saved state (rundir.py); RUN/.lock: one process at a time
    RUN/state.json      finished stages and evaluations: re-running the same command resumes, never redoes
    RUN/<stage>/        each stage's own files: metrics, checkpoints, final/ (rl, sft; with LoRA the merged model and
                        final/adapter) or samples.jsonl (generate, answers)
    RUN/metrics.jsonl   every stage's step metrics, RUN/samples.jsonl their sample completions
    RUN/summary.json    one entry per model stage with eval_before (its init) and eval_after, and the
                        paper-style table: every model of the run measured the same way
    RUN/final           the last model stage's final/ (a symlink)
    RUN/trackers/       log.report_to's trackers (wandb, tensorboard, trackio): every metrics row, the config and the
                        table (store/trackers.py)

With several processes (torchrun; r1lab/dist.py) every rank trains in rl stages; rank 0 alone evaluates
models, runs the other stages and writes every file, while the others wait for the next rl stage.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import time
from pathlib import Path

from r1lab import dist
from r1lab.config import RunConfig, StageConfig
from r1lab.data.limits import fit_context
from r1lab.disk import atomic_write
from r1lab.evaluation.evaluate import evaluate
from r1lab.models.io import save_model, trained_system
from r1lab.progress import console
from r1lab.recipes.preflight import check_run
from r1lab.recipes.rundir import check_run_dir, record_run
from r1lab.store.runlock import run_lock
from r1lab.store.trackers import reporting


def resolve_model(cfg: RunConfig, which: str = "base") -> str:
    """The path (or hub name) of the run's base, student or teacher model. 'tinyworld' means a tiny-world
    model built (or taken from the cache) from cfg.pretrain (the student's: with cfg.student.pretrain)."""
    name = {"base": cfg.model, "student": cfg.student.model, "teacher": cfg.teacher}[which]
    if name == "tinyworld":
        from r1lab.tinyworld.build import pretrain, read_checks
        from r1lab.tinyworld.census import describe

        path = pretrain(cfg.student_pretrain() if which == "student" else cfg.pretrain)
        checks = read_checks(path)
        if checks is not None and not checks["honest"]:
            console.print(f"[yellow]warning: the tiny {which} model {path} has {describe(checks)}. R1-Zero's RL "
                          "selects behaviour the base has: with no honest checking to amplify, accuracy can rise but "
                          "length and reflection are unlikely to. Build another base (pretrain.seed=N, or longer: "
                          "pretrain.steps=N) and see docs/AHA.md.[/]", highlight=False)
        return str(path)
    if which == "teacher" and not Path(name).expanduser().is_dir():
        from r1lab.models.hub import check_source, is_hub_id

        if not is_hub_id(name):
            raise FileNotFoundError(f"teacher '{name}' is not a model directory (run `r1lab run r1 --out runs/r1` "
                                    "and pass teacher=runs/r1/final, any model directory or a hub id)")
        check_source(name, "model", "teacher")
    return name


def resolve_system(cfg: RunConfig, model_path: str) -> str | None:
    """An explicit `system` wins; else the one a model was built with (r1lab.json); else None: the paper's."""
    return cfg.system if cfg.system is not None else trained_system(model_path)


def load_task_for(cfg: RunConfig, name: str | None = None):
    from r1lab.recipes.tasks import load_task

    d = cfg.data
    return load_task(name or cfg.task, question_field=d.question_field, answer_field=d.answer_field, test_file=d.test_file,
                     test_size=d.test_size, train_size=d.train_size, seed=cfg.seed, config=d.config, split=d.split,
                     test_split=d.test_split, prompt_format=d.prompt_format)


def write_json_atomic(path: Path, data) -> None:
    atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False), "state")


class Run:
    """What every stage needs: the config, the tasks, the models made so far, and the saved state."""

    def __init__(self, cfg: RunConfig, run_dir: Path):
        self.cfg, self.dir = cfg, Path(run_dir)
        self.task = load_task_for(cfg)  # bad data fails here, before any model work
        self.tasks = {cfg.task: self.task}
        for name in {st.task for st in cfg.stages if st.task} | set(cfg.eval.extra_tasks):
            self.tasks[name] = load_task_for(cfg, name)
        self.models: dict[str, str] = {}
        if cfg.teacher:
            self.model_path("teacher")  # a missing teacher fails now, not mid-run
        check_run(cfg)  # device, dtype, checkpointing, LoRA targets: before the run directory is written
        if dist.is_main():
            check_run_dir(self.dir, cfg, self.tasks)
        self.state_path = self.dir / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        for key in ("stages", "evals"):
            self.state.setdefault(key, {})
        self.state.setdefault("wall_seconds", 0.0)

    @functools.cached_property
    def system(self) -> str | None:
        """The system text of every prompt: the first model's (resolving it may build the tiny base, so it
        waits until a stage needs it)."""
        first = next(st.init for st in self.cfg.stages if st.kind != "answers")
        return resolve_system(self.cfg, self.model_path(first))

    def task_of(self, stage: StageConfig):
        return self.tasks[stage.task or self.cfg.task]

    def model_path(self, name: str) -> str:
        if name not in self.models:  # the student is built only by runs that use it
            self.models[name] = resolve_model(self.cfg, name)
        return self.models[name]

    def fitted(self, task, model, tokenizer, max_new_tokens: int, split: str):
        """`task` checked for prompts the model cannot read with room to answer (data.too_long)."""
        return fit_context(task, tokenizer, getattr(model.config, "max_position_embeddings", None), max_new_tokens,
                           template=self.cfg.template, system=self.system, mode=self.cfg.data.too_long, splits=(split,))

    def save(self) -> None:
        if dist.is_main():
            self.dir.mkdir(parents=True, exist_ok=True)
            record_run(self.dir, self.cfg, self.tasks)  # first save: the models and data loaded, the run really started
            write_json_atomic(self.state_path, self.state)

    def load(self, name: str, master_weights: bool = False):
        from r1lab.models.io import load_model

        what = {"base": "model", "student": "student.model", "teacher": "teacher"}.get(name, f"stages.{name}")
        return load_model(self.model_path(name), self.cfg.device, self.cfg.dtype, master_weights, what,
                          **self.cfg.hub_options(name))

    def engine(self, model, tokenizer):
        from r1lab.engines import make_engine

        return make_engine(self.cfg.rollout.engine, model, tokenizer, seed=self.cfg.seed, **self.cfg.rollout.options())

    def evaluate(self, name: str) -> dict:
        if name not in self.state["evals"]:
            model, tokenizer = self.load(name)
            engine = self.engine(model, tokenizer)
            common = {"template": self.cfg.template, "system": self.system, "reflection_phrases": self.cfg.rl.reflection_phrases}
            task = self.fitted(self.task, model, tokenizer, self.cfg.eval.sampling.max_new_tokens, "test")
            result = evaluate(engine, task, self.cfg.eval, label=f"eval {name}", **common)
            result["params"] = sum(p.numel() for p in model.parameters())
            result["tasks"] = {task: evaluate(engine, self.tasks[task], self.cfg.eval, label=f"eval {name} on {task}", **common)
                               for task in self.cfg.eval.extra_tasks}
            engine.close()
            self.state["evals"][name] = result
            self.save()
        result = self.state["evals"][name]
        extra = "".join(f", {t}: {r['pass@1']:.3f}" for t, r in result.get("tasks", {}).items())
        console.print(f"{name}: pass@1 = {result['pass@1']:.3f} (k={result['k']}, n={result['n']}{extra})")
        return result


def trainable(run: Run, name: str):
    """The model `name` as an rl or sft stage trains it, and its tokenizer: with lora.r > 0, LoRA adapters
    on it (its own weights frozen, kept in the compute dtype); otherwise its weights in fp32, the master
    copy the optimizer updates (models.py)."""
    if not run.cfg.lora.enabled:
        return run.load(name, master_weights=True)
    from r1lab.models.lora import add_lora

    model, tokenizer = run.load(name)
    return add_lora(model, run.cfg.lora, run.cfg.seed), tokenizer


def run_rl(run: Run, stage: StageConfig, out: Path) -> dict:
    from r1lab.rl.loop import train_rl

    rl = run.cfg.stage_rl(stage)
    dist.barrier()  # every rank starts once rank 0 has made (and measured) the stage's init model
    policy, tokenizer = trainable(run, stage.init)
    task = run.fitted(run.task_of(stage), policy, tokenizer, rl.sampling.max_new_tokens, "train")  # before any engine
    engine = run.engine(policy, tokenizer)
    try:
        result = train_rl(policy, tokenizer, task, rl, out, engine=engine, template=run.cfg.template,
                          system=run.system, seed=run.cfg.seed, stage=stage.name,
                          held_out=functools.partial(held_out, run, stage, engine), held_out_every=run.cfg.eval.every)
    finally:
        engine.close()
    if dist.is_main():  # every rank holds the whole trained policy
        save_model(policy, tokenizer, out / "final", {"built_by": f"r1lab stage {stage.name} (rl)", "template": run.cfg.template,
                                                      "system": run.system})
    return result


def held_out(run: Run, stage: StageConfig, engine) -> dict:
    """The policy being trained on the first eval.every_n test problems, sampled as every evaluation is. The
    engine's random state is put back after: training samples the same with eval.every on or off."""
    task, rng = run.task_of(stage), engine.rng_state()
    try:
        result = evaluate(engine, task, run.cfg.eval, template=run.cfg.template, system=run.system,
                          reflection_phrases=run.cfg.stage_rl(stage).reflection_phrases,
                          examples=task.examples("test")[: run.cfg.eval.every_n], progress=False)
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


def run_sft(run: Run, stage: StageConfig, out: Path) -> dict:
    from r1lab.sft.generate import read_kept
    from r1lab.sft.train import load_sft_examples, train_sft

    cfg, prompt = run.cfg.stage_sft(stage), {"template": run.cfg.template, "system": run.system}
    model, tokenizer = trainable(run, stage.init)
    rows = [row for name in stage.data for row in read_kept(run.dir / name / "samples.jsonl")]
    if not rows:
        raise ValueError(f"stage {stage.name}: its data stages ({', '.join(stage.data)}) kept no samples to train on")
    examples = load_sft_examples(rows, cfg, tokenizer, **prompt)
    return train_sft(model, tokenizer, examples, cfg, out, seed=run.cfg.seed, stage=stage.name, **prompt)


RUNNERS = {"rl": run_rl, "generate": run_generate, "answers": run_answers, "sft": run_sft}


def run_recipe(cfg: RunConfig, run_dir: str | Path) -> dict:
    # a second r1lab on this directory fails here, naming this one's pid (rank 0 holds it for every rank)
    with run_lock(run_dir) if dist.is_main() else contextlib.nullcontext():
        return _run_recipe(cfg, Path(run_dir))


def _run_recipe(cfg: RunConfig, run_dir: Path) -> dict:
    t0 = time.time()
    cfg.check_processes(dist.world_size())
    run = Run(cfg, run_dir)
    with reporting(cfg.log, run.dir, cfg.model_dump()) as trackers:  # rank 0's; the stages' metrics rows go to them
        main = dist.is_main()
        for stage in cfg.stages:
            out = run.dir / stage.name
            if stage.kind != "answers" and main:
                run.evaluate(stage.init)  # cached: each model is measured once
            if stage.name not in run.state["stages"] and (main or stage.kind == "rl"):
                run.state["stages"][stage.name] = RUNNERS[stage.kind](run, stage, out)
                run.save()
            if stage.makes_model:
                run.models[stage.name] = str(out / "final")
                if main:
                    run.evaluate(stage.name)
        if not main:
            return {}
        run.state["wall_seconds"] = round(run.state["wall_seconds"] + time.time() - t0, 1)
        run.save()
        summary = finish(run)
        trackers.summary(summary["table"])
        return summary


def finish(run: Run) -> dict:
    """Gathers the stages' logs, links RUN/final, writes summary.json and the report."""
    from r1lab.evaluation.report import write_report

    cfg, state = run.cfg, run.state
    models = [s for s in cfg.stages if s.makes_model]
    for name in ("metrics.jsonl", "samples.jsonl"):
        parts = [run.dir / s.name / name for s in models]
        atomic_write(run.dir / name, "".join(p.read_text() for p in parts if p.exists()), "log")
    last = next(s for s in models if s.name == cfg.final_stage) if cfg.final_stage else models[-1]
    link = run.dir / "final"
    if link.is_symlink() or link.exists():
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    link.symlink_to(Path(last.name) / "final")
    summary = {
        "recipe": cfg.recipe,
        "model": cfg.model if "base" not in run.models or cfg.model != "tinyworld" else f"tinyworld ({run.models['base']})",
        "task": cfg.task,
        "wall_seconds": state["wall_seconds"],
        "final_model": str(run.dir / last.name / "final"),
        "stages": [{"name": s.name, "kind": s.kind, "init": s.init, "steps": state["stages"][s.name].get("steps"),
                    "wall_seconds": state["stages"][s.name].get("wall_seconds"),
                    "eval_before": state["evals"][s.init], "eval_after": state["evals"][s.name]}
                   for s in models],
        "data": [{"name": s.name, "init": s.init, **state["stages"][s.name]} for s in cfg.stages if not s.makes_model],
        "table": table(run),
    }
    if cfg.model == "tinyworld" and "base" in run.models:
        from r1lab.tinyworld.build import read_checks
        from r1lab.tinyworld.census import describe

        checks = read_checks(run.models["base"])
        if checks is not None:  # the base's check honesty, measured when it was built
            summary["base_checks"] = {**checks, "text": describe(checks)}
    write_json_atomic(run.dir / "summary.json", summary)
    write_report(run.dir)
    print_table(summary["table"], f"{cfg.recipe}: every model on {cfg.task} (k={cfg.eval.k}, T={cfg.eval.sampling.temperature})")
    first = "base" if "base" in state["evals"] else last.init  # distillation: student -> distilled
    start, final = state["evals"][first]["pass@1"], state["evals"][last.name]["pass@1"]
    console.print(f"[bold]pass@1 {start:.3f} ({first}) -> {final:.3f} ({last.name})[/] ({final - start:+.3f}); "
                  f"report: {run.dir / 'report.html'}")
    return summary


TABLE_METRICS = ("pass@1", "pass@k", "cons@k", "format_rate", "language_consistency", "mean_length", "reflection_rate")


def table(run: Run) -> list[dict]:
    """One row per model the run measured (base, student, each stage), in the order they were made."""
    rows = []
    for name, result in run.state["evals"].items():
        row = {"model": name, "params": result.get("params"), **{m: result[m] for m in TABLE_METRICS}}
        row.update({f"{task} pass@1": r["pass@1"] for task, r in result.get("tasks", {}).items()})  # e.g. general
        rows.append(row)
    return rows


SHORT = {"pass@1": "pass@1", "pass@k": "pass@k", "cons@k": "cons@k", "format_rate": "format",
         "language_consistency": "language", "mean_length": "length", "reflection_rate": "reflection"}


def print_table(rows: list[dict], title: str) -> None:
    from rich.table import Table

    t = Table(title=title)
    columns = list(rows[0])
    for column in columns:  # short headers: "tinyworld/general pass@1" -> "general"
        name = SHORT.get(column, column.rsplit("/", 1)[-1].replace(" pass@1", ""))
        t.add_column(name, justify="left" if column == "model" else "right", no_wrap=True)
    for row in rows:
        cells = []
        for column in columns:
            v = row.get(column)
            cells.append(f"{v / 1e6:.2f}M" if column == "params" and v else f"{v:.1f}" if column == "mean_length"
                         else f"{v:.3f}" if isinstance(v, float) else str(v))
        t.add_row(*cells)
    console.print(t)
