"""Runs a recipe's stages into a run directory, evaluates every model it makes, writes the summary and report.

    RUN/config.yaml     the resolved config (a run directory holds one experiment), RUN/data.json its data files'
                        sha256: both written with the first saved state (rundir.py); RUN/.lock: one process at a time
    RUN/state.json      finished stages and evaluations: re-running the same command resumes, never redoes
    RUN/<stage>/        each stage's own files: metrics, checkpoints, final/ (rl, sft; with LoRA the merged model and
                        final/adapter) or samples.jsonl (generate, answers, traces)
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
import shutil
import time
from pathlib import Path

from r1lab import dist
from r1lab.config import RunConfig
from r1lab.disk import atomic_write
from r1lab.progress import console
from r1lab.recipes.run import Run, write_json_atomic
from r1lab.recipes.stages import RUNNERS
from r1lab.store.runlock import run_lock
from r1lab.store.trackers import reporting


def run_recipe(cfg: RunConfig, run_dir: str | Path) -> dict:
    # a second r1lab on this directory fails here, naming this one's pid (rank 0 holds it for every rank)
    with run_lock(run_dir) if dist.is_main() else contextlib.nullcontext():
        return _run_recipe(cfg, Path(run_dir))


def _run_recipe(cfg: RunConfig, run_dir: Path) -> dict:
    t0 = time.time()
    cfg.check_processes(dist.world_size())
    run = Run(cfg, run_dir)
    with reporting(cfg.log, run.dir, cfg.model_dump()) as trackers:  # rank 0's; the stages' metrics rows go to them
        run.report = trackers.log
        main = dist.is_main()
        for stage in cfg.stages:
            out = run.dir / stage.name
            if stage.kind not in ("answers", "traces") and main:
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
