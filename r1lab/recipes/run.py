"""A run directory as a recipe's stages see it (`Run`): its settings, data, models by name (the tiny world's base
built on first use, with its check honesty said), state.json, engines and evaluations, each model measured once."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path

from r1lab import dist
from r1lab.config import RunConfig, StageConfig
from r1lab.data.limits import fit_context
from r1lab.disk import atomic_write
from r1lab.evaluation.evaluate import evaluate
from r1lab.models.io import trained_system
from r1lab.progress import console
from r1lab.recipes.preflight import check_run
from r1lab.recipes.rundir import check_run_dir, record_run


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


def turns_for(cfg: RunConfig):
    """How episodes take turns when the run's rl.tools or rl.environment are set (training and every evaluation
    alike), else None."""
    from r1lab.engines.episodes import Turns

    return Turns.of_settings(cfg.rl.tools, cfg.rl.environment, cfg.rollout.max_turns, cfg.template)


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
        self.report: Callable[[dict], None] | None = None  # where the stages' metrics rows also go: the trackers' log

    @functools.cached_property
    def system(self) -> str | None:
        """The system text of every prompt: the first model's (resolving it may build the tiny base, so it
        waits until a stage needs it)."""
        first = next(st.init for st in self.cfg.stages if st.kind not in ("answers", "traces"))
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

    @functools.cached_property
    def turns(self):
        return turns_for(self.cfg)

    @property
    def tool_tokens(self) -> list[str]:
        """New tokens for every model a stage trains in a run that calls tools (or writes tool traces) with a template
        other than chat (whose tokenizer has its own): the call and result markers, and each tool's name, so a call
        is a few ids a small model cannot misspell (the tiny world's tokenizer spells unseen words letter by letter)."""
        from r1lab.tools.box import load_tools
        from r1lab.tools.calls import PLAIN

        tools = {t for st in self.cfg.stages if st.kind == "rl" for t in self.cfg.stage_rl(st).tools}
        writes_calls = any(st.kind == "traces" and st.tool_share > 0 for st in self.cfg.stages)
        if self.cfg.template == "chat" or not (tools or writes_calls):
            return []
        return [*PLAIN, *sorted({tool.name for tool in load_tools(sorted(tools))})]

    @property
    def tools_meta(self) -> dict:
        """r1lab.json's record of the run's tools, for every model it trains (chat and serve run them)."""
        return {"tools": self.cfg.rl.tools, "max_turns": self.cfg.rollout.max_turns} if self.cfg.rl.tools else {}

    def engine(self, model, tokenizer):
        from r1lab.engines import make_engine

        return make_engine(self.cfg.rollout.engine, model, tokenizer, seed=self.cfg.seed, **self.cfg.rollout.options())

    def evaluate(self, name: str) -> dict:
        if name not in self.state["evals"]:
            model, tokenizer = self.load(name)
            engine = self.engine(model, tokenizer)
            common = {"template": self.cfg.template, "system": self.system, "reflection_phrases": self.cfg.rl.reflection_phrases}
            task = self.fitted(self.task, model, tokenizer, self.cfg.eval.sampling.max_new_tokens, "test")
            result = evaluate(engine, task, self.cfg.eval, label=f"eval {name}", turns=self.turns, **common)
            result["params"] = sum(p.numel() for p in model.parameters())
            result["tasks"] = {task: evaluate(engine, self.tasks[task], self.cfg.eval, label=f"eval {name} on {task}",
                                              turns=self.turns, **common)
                               for task in self.cfg.eval.extra_tasks}
            engine.close()
            self.state["evals"][name] = result
            self.save()
        result = self.state["evals"][name]
        extra = "".join(f", {t}: {r['pass@1']:.3f}" for t, r in result.get("tasks", {}).items())
        console.print(f"{name}: pass@1 = {result['pass@1']:.3f} (k={result['k']}, n={result['n']}{extra})")
        return result
