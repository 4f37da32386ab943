"""Runs a recipe's stages into a run directory, evaluates every model it makes, writes the summary and report.

    RUN/config.yaml     the resolved config (a run directory holds one experiment)
    RUN/state.json      finished stages and evaluations: re-running the same command resumes, never redoes
    RUN/<stage>/        each stage's own files: metrics, checkpoints, final/ (rl, sft) or samples.jsonl (generate)
    RUN/metrics.jsonl   every stage's step metrics, RUN/samples.jsonl their sample completions
    RUN/summary.json    one entry per model stage with eval_before (its init) and eval_after
    RUN/final           the last model stage's final/ (a symlink)
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import yaml

from r1lab.config import ConfigError, RLConfig, RunConfig, SFTConfig, SamplingConfig, StageConfig, merge
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


def write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False))
    os.replace(tmp, path)


def check_run_dir(run_dir: Path, cfg: RunConfig) -> None:
    """A run directory belongs to one config: resuming with a different one would mix two experiments."""
    saved = run_dir / "config.yaml"
    if saved.exists():
        before, now = yaml.safe_load(saved.read_text()), cfg.model_dump()
        diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if diff:
            raise ConfigError(f"run directory '{run_dir}' holds a run with a different config (fields: {', '.join(diff)}); "
                              "use a new --out directory, or the same settings to resume")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        saved.write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False, allow_unicode=True))


class Run:
    """What every stage needs: the config, the task, the models made so far, and the saved state."""

    def __init__(self, cfg: RunConfig, run_dir: Path):
        self.cfg, self.dir = cfg, Path(run_dir)
        self.task = load_task_for(cfg)  # bad data fails here, before any model work
        check_run_dir(self.dir, cfg)
        self.state_path = self.dir / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        for key in ("stages", "evals"):
            self.state.setdefault(key, {})
        self.state.setdefault("wall_seconds", 0.0)
        self.models = {"base": resolve_model(cfg)}
        self.system = resolve_system(cfg, self.models["base"])

    def save(self) -> None:
        write_json_atomic(self.state_path, self.state)

    def load(self, name: str):
        from r1lab.models import load_model

        return load_model(self.models[name], self.cfg.device, self.cfg.dtype)

    def evaluate(self, name: str) -> dict:
        if name not in self.state["evals"]:
            from r1lab.rollout import TorchEngine

            model, tokenizer = self.load(name)
            self.state["evals"][name] = evaluate(
                TorchEngine(model, tokenizer, seed=self.cfg.seed), self.task, self.cfg.eval, template=self.cfg.template,
                system=self.system, reflection_phrases=self.cfg.rl.reflection_phrases, label=f"eval {name}")
            self.save()
        result = self.state["evals"][name]
        console.print(f"{name}: pass@1 = {result['pass@1']:.3f} (k={result['k']}, n={result['n']})")
        return result


def run_rl(run: Run, stage: StageConfig, out: Path) -> dict:
    from r1lab.trainer import train_rl

    rl = RLConfig.model_validate(merge(run.cfg.rl.model_dump(), stage.rl))
    policy, tokenizer = run.load(stage.init)
    result = train_rl(policy, tokenizer, run.task, rl, out, template=run.cfg.template, system=run.system,
                      seed=run.cfg.seed, stage=stage.name)
    save_final(policy, tokenizer, out / "final", {"built_by": f"r1lab stage {stage.name} (rl)", "template": run.cfg.template,
                                                  "system": run.system})
    return result


def run_generate(run: Run, stage: StageConfig, out: Path) -> dict:
    from r1lab.generate import generate
    from r1lab.rollout import TorchEngine

    model, tokenizer = run.load(stage.init)
    out.mkdir(parents=True, exist_ok=True)
    sampling = SamplingConfig(temperature=stage.temperature, max_new_tokens=run.cfg.rl.sampling.max_new_tokens)
    t0 = time.time()
    stats = generate(TorchEngine(model, tokenizer, seed=run.cfg.seed), run.task, run.task.examples("train")[: stage.prompts],
                     k=stage.k, sampling=sampling, template=run.cfg.template, system=run.system, filters=stage.filters,
                     out_path=out / "samples.jsonl", label=stage.name)
    return {**stats, "wall_seconds": round(time.time() - t0, 1)}


def run_sft(run: Run, stage: StageConfig, out: Path) -> dict:
    from r1lab.generate import read_kept
    from r1lab.sft import load_sft_examples, train_sft

    cfg = SFTConfig.model_validate(merge(run.cfg.sft.model_dump(), {"template": run.cfg.template, "system": run.system, **stage.sft}))
    model, tokenizer = run.load(stage.init)
    rows = [row for name in stage.data for row in read_kept(run.dir / name / "samples.jsonl")]
    if not rows:
        raise ValueError(f"stage {stage.name}: its data stages ({', '.join(stage.data)}) kept no samples to train on")
    return train_sft(model, tokenizer, load_sft_examples(rows, cfg, tokenizer), cfg, out, stage=stage.name)


RUNNERS = {"rl": run_rl, "generate": run_generate, "sft": run_sft}


def save_final(model, tokenizer, final: Path, meta: dict) -> None:
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "r1lab.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)


def run_recipe(cfg: RunConfig, run_dir: str | Path) -> dict:
    t0 = time.time()
    run = Run(cfg, Path(run_dir))
    for stage in cfg.stages:
        out = run.dir / stage.name
        if stage.kind != "generate":
            run.evaluate(stage.init)
        if stage.name not in run.state["stages"]:
            run.state["stages"][stage.name] = RUNNERS[stage.kind](run, stage, out)
            run.save()
        if stage.kind != "generate":
            run.models[stage.name] = str(out / "final")
            run.evaluate(stage.name)
    run.state["wall_seconds"] = round(run.state["wall_seconds"] + time.time() - t0, 1)
    run.save()
    return finish(run)


def finish(run: Run) -> dict:
    """Gathers the stages' logs, links RUN/final, writes summary.json and the report."""
    from r1lab.report import write_report

    cfg, state = run.cfg, run.state
    for name in ("metrics.jsonl", "samples.jsonl"):
        parts = [run.dir / s.name / name for s in cfg.stages if s.kind != "generate"]
        tmp = run.dir / (name + ".tmp")
        tmp.write_text("".join(p.read_text() for p in parts if p.exists()))
        os.replace(tmp, run.dir / name)
    last = [s for s in cfg.stages if s.kind != "generate"][-1]
    link = run.dir / "final"
    if link.is_symlink() or link.exists():
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    link.symlink_to(Path(last.name) / "final")
    summary = {
        "recipe": cfg.recipe,
        "model": cfg.model if cfg.model != "tinyworld" else f"tinyworld ({run.models['base']})",
        "task": cfg.task,
        "wall_seconds": state["wall_seconds"],
        "final_model": str(run.dir / last.name / "final"),
        "stages": [{"name": s.name, "kind": s.kind, "init": s.init, "steps": state["stages"][s.name].get("steps"),
                    "wall_seconds": state["stages"][s.name].get("wall_seconds"),
                    "eval_before": state["evals"][s.init], "eval_after": state["evals"][s.name]}
                   for s in cfg.stages if s.kind != "generate"],
        "data": [{"name": s.name, "init": s.init, **state["stages"][s.name]} for s in cfg.stages if s.kind == "generate"],
    }
    write_json_atomic(run.dir / "summary.json", summary)
    write_report(run.dir)
    first, final = state["evals"]["base"]["pass@1"], state["evals"][last.name]["pass@1"]
    console.print(f"[bold]pass@1 {first:.3f} (base) -> {final:.3f} ({last.name})[/] ({final - first:+.3f}); "
                  f"report: {run.dir / 'report.html'}")
    return summary
