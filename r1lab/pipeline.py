"""Runs a recipe into a run directory: base model -> evaluate -> RL -> evaluate -> save -> report.

Each finished piece is recorded in RUN/state.json, so running the same command again resumes
where it stopped (RL itself resumes from its last checkpoint) and never redoes finished work.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml

from r1lab.config import ConfigError, RunConfig
from r1lab.evaluate import evaluate
from r1lab.progress import console


def resolve_model(cfg: RunConfig) -> str:
    """'tinyworld' means the tiny world's base model, built (or taken from the cache) from cfg.pretrain."""
    if cfg.model == "tinyworld":
        from r1lab.tinyworld.build import pretrain

        return str(pretrain(cfg.pretrain))
    return cfg.model


def resolve_system(cfg: RunConfig, model_path: str) -> str | None:
    """An explicit `system` wins; else the one a model was built with (r1lab.json); else the paper's."""
    if cfg.system is not None:
        return cfg.system
    meta = Path(model_path) / "r1lab.json"
    if meta.exists() and meta.stat().st_size:
        return json.loads(meta.read_text()).get("system")
    return None


def load_task_for(cfg: RunConfig):
    from r1lab.tasks import load_task

    d = cfg.data
    return load_task(cfg.task, question_field=d.question_field, answer_field=d.answer_field, test_file=d.test_file,
                     test_size=d.test_size, train_size=d.train_size, seed=cfg.seed)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def check_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    """A run directory belongs to one config: resuming with a different one would mix two experiments."""
    saved = run_dir / "config.yaml"
    if saved.exists():
        before = yaml.safe_load(saved.read_text())
        now = cfg.model_dump()
        diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if diff:
            raise ConfigError(f"run directory '{run_dir}' holds a run with a different config (fields: {', '.join(diff)}); "
                              "use a new --out directory, or the same settings to resume")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))


def run_r1_zero(cfg: RunConfig, run_dir: str | Path) -> dict:
    from r1lab.models import load_model
    from r1lab.report import write_report
    from r1lab.rollout import TorchEngine
    from r1lab.trainer import train_rl

    run_dir = Path(run_dir)
    t0 = time.time()
    task = load_task_for(cfg)  # bad data fails here, before any model work
    check_run_dir(run_dir, cfg)
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    state.setdefault("wall_before", 0.0)
    save = lambda: _write_json_atomic(state_path, state)  # noqa: E731
    stage = cfg.recipe

    model_path = resolve_model(cfg)
    system = resolve_system(cfg, model_path)
    policy, tokenizer = load_model(model_path, cfg.device, cfg.dtype)
    evaluate_kw = dict(template=cfg.template, system=system, reflection_phrases=cfg.rl.reflection_phrases)
    if "eval_before" not in state:
        state["eval_before"] = evaluate(TorchEngine(policy, tokenizer, seed=cfg.seed), task, cfg.eval, label="eval base", **evaluate_kw)
        save()
    console.print(f"base pass@1 = {state['eval_before']['pass@1']:.3f} (k={cfg.eval.k}, n={state['eval_before']['n']})")

    final = run_dir / "final"
    if "rl" not in state:
        state["rl"] = train_rl(policy, tokenizer, task, cfg.rl, run_dir, template=cfg.template, system=system,
                               seed=cfg.seed, stage=stage)
        tmp = run_dir / "final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        policy.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "r1lab.json").write_text(json.dumps({"built_by": f"r1lab run {cfg.recipe}", "base": model_path,
                                                    "template": cfg.template, "system": system}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        save()
    if "eval_after" not in state:
        policy, tokenizer = load_model(str(final), cfg.device, cfg.dtype)
        state["eval_after"] = evaluate(TorchEngine(policy, tokenizer, seed=cfg.seed + 1), task, cfg.eval, label="eval final", **evaluate_kw)
        save()

    wall = round(state["wall_before"] + time.time() - t0, 1)
    state["wall_before"] = wall
    save()
    summary = {
        "recipe": cfg.recipe,
        "model": cfg.model if cfg.model != "tinyworld" else f"tinyworld ({model_path})",
        "task": cfg.task,
        "wall_seconds": wall,
        "final_model": str(final),
        "stages": [{"name": stage, "steps": state["rl"]["steps"], "wall_seconds": state["rl"]["wall_seconds"],
                    "eval_before": state["eval_before"], "eval_after": state["eval_after"]}],
    }
    _write_json_atomic(run_dir / "summary.json", summary)
    write_report(run_dir)
    before, after = state["eval_before"]["pass@1"], state["eval_after"]["pass@1"]
    console.print(f"[bold]pass@1 {before:.3f} -> {after:.3f}[/] ({after - before:+.3f}); report: {run_dir / 'report.html'}")
    return summary


RECIPES = {"r1-zero": run_r1_zero}


def run_recipe(cfg: RunConfig, run_dir: str | Path) -> dict:
    if cfg.recipe not in RECIPES:
        raise ConfigError(f"recipe: unknown pipeline '{cfg.recipe}' (choose one of {', '.join(RECIPES)})")
    return RECIPES[cfg.recipe](cfg, run_dir)
