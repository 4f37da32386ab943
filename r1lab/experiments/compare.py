"""Several variants of one experiment (algorithms, or any config change) on the same task, seed and
budget, and one report that overlays them: `r1lab compare SPEC --out DIR`.

A spec is YAML (shipped ones in r1lab/experiments/comparisons/, or a path):

    compare: ppo-vs-grpo
    kind: recipe                 # recipe: variants of an r1lab recipe; control: of `r1lab control`
    recipe: r1-zero
    overrides: [rl.steps=100]    # common to every variant
    threshold: 0.5               # time-to-threshold: first step where the smoothed `metric`
                                 # (control: the mean return) reaches it
    metric: accuracy             # recipe: accuracy (training samples) or eval_pass@1 (held-out, with eval.every=N)
    variants:                    # name -> its own overrides
      grpo: []
      ppo-lam0.95: [rl.algorithm=ppo, rl.lam=0.95]

Each variant is an ordinary run directory, DIR/<name>, so it resumes and can be opened on its own.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from r1lab.config import ConfigError, Strict, format_errors
from r1lab.evaluation.plots import is_number, smooth
from r1lab.evaluation.report import CSS, format_duration, format_number
from r1lab.progress import console
from r1lab.store.logs import read_jsonl
from r1lab.store.runlock import run_lock


class CompareSpec(Strict):
    compare: str = Field(description="the comparison's name")
    kind: Literal["recipe", "control"] = "recipe"
    recipe: str = Field("r1-zero", description="recipe the variants change (kind: recipe)")
    overrides: list[str] = Field(default_factory=list, description="field=value settings common to every variant")
    threshold: float | None = Field(None, description="`metric` (recipe) or return (control) for time-to-threshold")
    metric: Literal["accuracy", "eval_pass@1"] = Field(
        "accuracy", description="recipe: the metrics.jsonl key time-to-threshold is measured on: accuracy (the training "
        "samples, every step) or eval_pass@1 (held-out problems, logged every eval.every steps)")
    variants: dict[str, list[str]] = Field(min_length=1, description="variant name -> its field=value settings")

    @field_validator("variants")
    @classmethod
    def _names_are_folders(cls, v):
        for name in v:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"variant name {name!r} must be a plain folder name")
        return v


def load_spec(name: str, extra: list[str] = ()) -> CompareSpec:
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        shipped = resources.files("r1lab") / "experiments" / "comparisons" / f"{name}.yaml"
        if not shipped.is_file():
            names = sorted(p.name[:-5] for p in (resources.files("r1lab") / "experiments" / "comparisons").iterdir() if p.name.endswith(".yaml"))
            raise ConfigError(f"unknown comparison '{name}': choose one of {', '.join(names)} or give a .yaml path")
        path = Path(str(shipped))
    elif not path.exists():
        raise ConfigError(f"comparison file '{name}' does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"comparison '{path}' must be a mapping")
    data["overrides"] = [*data.get("overrides", []), *extra]
    try:
        return CompareSpec.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, f"comparison '{path}'", CompareSpec)) from None


def run_compare(spec: CompareSpec, out: str | Path) -> dict:
    """Runs (or resumes) every variant into out/<name>, then writes out/compare.json and out/report.html."""
    out = Path(out)
    configs = {name: _variant_config(spec, settings) for name, settings in spec.variants.items()}  # all fail fast
    out.mkdir(parents=True, exist_ok=True)
    with run_lock(out):  # the comparison's own files; each variant's directory is locked by its runner
        for name, cfg in configs.items():
            console.print(f"[bold]compare {spec.compare}: variant {name}")
            if spec.kind == "recipe":
                from r1lab.recipes.pipeline import run_recipe

                run_recipe(cfg, out / name)
            else:
                from r1lab.gym.run import run_control

                with run_lock(out / name):
                    run_control(cfg, out / name)
        return write_compare_report(spec, out)


def _variant_config(spec: CompareSpec, settings: list[str]):
    overrides = [*spec.overrides, *settings]
    if spec.kind == "recipe":
        from r1lab.recipes.load import load_config

        return load_config(spec.recipe, overrides)
    from r1lab.recipes.load import parse_overrides, validate_control

    return validate_control(parse_overrides(overrides), f"control settings {overrides}")


# What each kind plots: (file, title, y key, x key, x label). Recipe runs log per-step time, not a clock.
CURVES = {
    "recipe": [("reward", "Reward", "reward", "step", "GRPO step"), ("accuracy", "Training accuracy", "accuracy", "step", "step"),
               ("length", "Completion length", "completion_len_mean", "step", "step"),
               ("eval_pass", "Held-out pass@1 (eval.every)", "eval_pass@1", "step", "step"),
               ("eval_length", "Held-out response length (eval.every)", "eval_length", "step", "step"),
               ("eval_reflection", "Held-out reflection rate (eval.every)", "eval_reflection", "step", "step"),
               ("tool_calls", "Episodes that call a tool (rl.tools)", "tool_call_rate", "step", "step"),
               ("learned_reward", "Learned reward (rl.reward_model)", "learned_reward", "step", "step"),
               ("accuracy_time", "Training accuracy vs wall time", "accuracy", "wall_seconds", "seconds"),
               # one compute ledger for rl and mcts stages: policy tokens generated + value-model tokens (mcts)
               ("accuracy_compute", "Training accuracy vs compute", "accuracy", "compute_tokens", "compute tokens"),
               ("eval_pass_compute", "Held-out pass@1 vs compute (eval.every)", "eval_pass@1", "compute_tokens",
                "compute tokens")],
    "control": [("return_steps", "Return vs environment steps", "mean_return", "env_steps", "environment steps"),
                ("return_time", "Return vs wall time", "mean_return", "wall_seconds", "seconds"),
                ("eval_steps", "Evaluation return (fresh episodes) vs environment steps", "eval_return", "env_steps",
                 "environment steps")],
}


def read_curves(kind: str, run_dir: Path) -> list[dict]:
    """The metrics.jsonl rows of one variant's run directory ([] before it logged any), ready to plot against CURVES'
    x keys: a recipe's stages laid end to end on one `step` axis, with `wall_seconds` the sum of their step times
    and `compute_tokens` (each stage's own count from 0) added up the same way."""
    rows = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
    if kind == "recipe":
        clock, offset, last, stage = 0.0, 0, 0, None
        spent, computed = 0, 0  # compute of the stages before this one; the latest total
        for r in rows:  # a recipe's stages are concatenated: one step axis, one clock
            if r.get("stage") != stage:
                stage, offset, spent = r.get("stage"), last, computed
            clock += r.get("step_time", 0.0)
            r["wall_seconds"] = clock
            r["step"] = last = offset + (r["step"] if is_number(r.get("step")) else 0)  # eval.every's step 0: before training
            if is_number(r.get("compute_tokens")):
                r["compute_tokens"] = computed = spent + r["compute_tokens"]
            learned = [r[k] for k in LEARNED_KEYS if is_number(r.get(k))]
            if learned:
                r["learned_reward"] = learned[0]
    return rows


LEARNED_KEYS = ("reward/process_min", "reward/process_last", "reward/outcome")  # rewards/learned.py's, as logged


def start_and_end(rows: list[dict], key: str, window: int = 10) -> tuple[float | None, float | None]:
    """The mean of `key` over its first and over its last `window` logged values (None, None if never logged)."""
    values = [r[key] for r in rows if is_number(r.get(key))]
    if not values:
        return None, None
    return sum(values[:window]) / len(values[:window]), sum(values[-window:]) / len(values[-window:])


def ledger(curves: list[dict]) -> dict:
    """What a variant spent and got on the compute ledger (rl and mcts stages): its training accuracy over the last
    5 logged steps, compute tokens, and for mcts stages expansions per problem and the value model's absolute error
    (means over the stage's steps). {} for a run that logged no compute."""
    def mean(key, rows):
        values = [r[key] for r in rows if is_number(r.get(key))]
        return sum(values) / len(values) if values else None

    trained = [r for r in curves if is_number(r.get("accuracy"))]
    if not any(is_number(r.get("compute_tokens")) for r in curves):
        return {}
    return {"train_accuracy_last5": mean("accuracy", trained[-5:]),
            "compute_tokens": max(r["compute_tokens"] for r in curves if is_number(r.get("compute_tokens"))),
            "expansions_per_problem": mean("expansions_mean", curves), "value_abs_error": mean("value_abs_error", curves)}


def time_to_threshold(rows: list[dict], key: str, threshold: float | None) -> tuple[int | None, float | None]:
    """(step, seconds) at which the smoothed `key` first reaches `threshold`; (None, None) if never."""
    points = [r for r in rows if is_number(r.get(key))]
    if threshold is None or not points:
        return None, None
    for r, v in zip(points, smooth([r[key] for r in points], window=5)):
        if v >= threshold:
            return r.get("step", r.get("iteration")), r.get("wall_seconds")
    return None, None


def _row(spec: CompareSpec, name: str, run_dir: Path, curves: list[dict]) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    key = spec.metric if spec.kind == "recipe" else "mean_return"
    step, seconds = time_to_threshold(curves, key, spec.threshold)
    row = {"variant": name, "settings": " ".join(spec.variants[name]) or "(defaults)"}
    if spec.kind == "recipe":
        final = summary["stages"][-1]["eval_after"]
        row.update({"pass@1": final["pass@1"], "cons@k": final.get("cons@k"), "mean_length": final.get("mean_length"),
                    "reflection_rate": final.get("reflection_rate"),
                    **{f"{kind} pass@1": v for kind, v in final.get("pass@1_by_kind", {}).items()},  # a task mixing kinds
                    **({"tool_call_rate": final["tool_call_rate"]} if "tool_call_rate" in final else {}), **ledger(curves)})
    else:
        _, last = start_and_end(curves, "mean_return", window=5)  # the training return, as CleanRL reports its own
        row.update({"final_mean_return": summary["final_mean_return"], "train_return_last5": last,
                    "best_eval_return": summary.get("best_eval_return"), "env_steps": summary["env_steps"],
                    "steps_to_target": summary.get("env_steps_to_target"), "seconds_to_target": summary.get("time_to_target_s")})
    if any("learned_reward" in r for r in curves) or spec.recipe == "r1-prm":  # the learned reward against the truth
        rl = [r for r in curves if "accuracy" in r]
        (row["accuracy first 10"], row["accuracy last 10"]), (row["learned first 10"], row["learned last 10"]) = (
            start_and_end(rl, "accuracy"), start_and_end(rl, "learned_reward"))
    row.update({"threshold_step": step, "threshold_seconds": seconds, "wall_seconds": summary["wall_seconds"]})
    return row


def write_compare_report(spec: CompareSpec, out: Path) -> dict:
    from matplotlib.figure import Figure  # imported on use: slow to import

    curves = {name: read_curves(spec.kind, out / name) for name in spec.variants}
    rows = [_row(spec, name, out / name, curves[name]) for name in spec.variants]
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    images = []
    for file, title, ykey, xkey, xlabel in CURVES[spec.kind]:
        fig = Figure(figsize=(7, 3.6), dpi=110, layout="constrained")
        ax = fig.add_subplot()
        drawn = False
        for i, (name, rs) in enumerate(curves.items()):
            pts = [(r[xkey], r[ykey]) for r in rs if is_number(r.get(xkey)) and is_number(r.get(ykey))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, "o", color=f"C{i % 10}", ms=2, alpha=0.3)
                ax.plot(xs, smooth(list(ys)), color=f"C{i % 10}", lw=1.8, label=name)
                drawn = True
        if not drawn:
            continue
        if spec.threshold is not None and ykey in (spec.metric, "mean_return"):
            ax.axhline(spec.threshold, color="grey", ls=":", lw=1)
        ax.set(title=title, xlabel=xlabel, ylabel=ykey)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.savefig(plots / f"{file}.png")
        images.append(file)
    if _learned_vs_true(curves, plots / "learned_vs_true.png"):
        images.append("learned_vs_true")
    result = {"compare": spec.compare, "kind": spec.kind, "threshold": spec.threshold, "table": rows}
    (out / "compare.json").write_text(json.dumps(result, indent=2))
    _write_html(spec, out, rows, images)
    _print(spec, rows)
    return result


def _learned_vs_true(curves: dict[str, list[dict]], path: Path) -> bool:
    """Each variant with a learned reward: that reward (dashed) and the true training accuracy (solid), one colour
    per variant, smoothed. Where the dashed line climbs and the solid one does not, the policy is fooling its judge."""
    from matplotlib.figure import Figure

    if not any("learned_reward" in r for rows in curves.values() for r in rows):
        return False
    fig = Figure(figsize=(7, 3.6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for i, (name, rows) in enumerate(curves.items()):  # a variant on the rule reward: its accuracy, for reference
        rl = [r for r in rows if "reward" in r]  # rl steps (a learned reward is logged only there)
        for key, style, label in (("learned_reward", "--", f"{name}: learned reward"), ("accuracy", "-", f"{name}: accuracy")):
            pts = [(r["step"], r[key]) for r in rl if is_number(r.get(key))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, smooth(list(ys)), style, color=f"C{i % 10}", lw=1.6, label=label)
    ax.set(title="Learned reward (dashed) vs true accuracy (solid)", xlabel="step", ylabel="score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path)
    return True


def _write_html(spec: CompareSpec, out: Path, rows: list[dict], images: list[str]) -> None:
    import base64

    def cell(column: str, v) -> str:
        if is_number(v):
            return format_duration(v) if column.endswith("seconds") else format_number(v)
        return html.escape("–" if v is None else str(v))

    columns = list(dict.fromkeys(c for r in rows for c in r))  # variants with tools have a column more
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(c, r.get(c))}</td>" for c in columns) + "</tr>" for r in rows)
    imgs = "".join(f'<img alt="{n}" src="data:image/png;base64,{base64.b64encode((out / "plots" / f"{n}.png").read_bytes()).decode()}">'
                   for n in images)
    imgs += "".join(f'<figure><img alt="{html.escape(name)}" src="data:image/gif;base64,'  # control variants run with video=true
                    f'{base64.b64encode((out / name / "policy.gif").read_bytes()).decode()}"><figcaption>{html.escape(name)}'
                    "</figcaption></figure>" for name in spec.variants if (out / name / "policy.gif").exists())
    note = f"threshold {spec.threshold}" if spec.threshold is not None else "no threshold"
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(spec.compare)}</title><style>{CSS}</style>'
            f'</head><body><h1>{html.escape(spec.compare)}</h1><p class="sub">{html.escape(note)} · {html.escape(str(out))}</p>'
            f"<table><tr>{head}</tr>{body}</table>{imgs}</body></html>")
    (out / "report.html").write_text(page, encoding="utf-8")


def _print(spec: CompareSpec, rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(title=f"compare {spec.compare}")
    columns = list(dict.fromkeys(c for r in rows for c in r))
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v) for v in map(r.get, columns)))
    console.print(t)
