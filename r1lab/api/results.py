"""What the API returns: a run directory read back as objects (its summary, stages, final model, metrics rows,
table, report), which `r1lab.load(run_dir)` also gives for any finished run; and the results of the other commands."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path

from r1lab.store.logs import read_jsonl

CURVES = ("reward", "accuracy", "completion_len_mean", "reflection_rate")  # plot()'s default panels


@dataclass(frozen=True)
class Stage:
    """One model-making stage of a run: its name, kind, the model it started from, steps, wall time, and its model
    measured before (`eval_before`, the init's) and after (`eval_after`)."""

    name: str
    kind: str
    init: str
    steps: int | None
    wall_seconds: float | None
    eval_before: dict
    eval_after: dict


def frame(rows: list[dict]):
    """`rows` as a pandas DataFrame; an ImportError saying what to install where pandas is not."""
    try:
        import pandas
    except ImportError:
        raise ImportError("pandas is not installed: pip install pandas (the rows are in .metrics as a list of dicts)") from None
    return pandas.DataFrame(rows)


def plot_rows(rows: list[dict], keys: tuple[str, ...], title: str, x: str = "step"):
    """One panel per key found in `rows`, against `x` -> a matplotlib Figure (shown inline in a notebook)."""
    import matplotlib

    if matplotlib.get_backend().lower() == "agg" and not _in_notebook():
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)]
    if not keys:
        raise ValueError(f"no rows hold any of {', '.join(keys) or 'the keys asked for'}: nothing to plot")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(r.get(x, i), r[key]) for i, r in enumerate(rows) if isinstance(r.get(key), (int, float))]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 30 else None)
        ax.set(title=key, xlabel=x)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # returned, not drawn twice: a notebook shows the returned figure
    return fig


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


@dataclass(frozen=True)
class RunResult:
    """A run directory read back: what `r1lab.run` returns and `r1lab.load(run_dir)` gives."""

    dir: Path
    summary: dict
    stages: list[Stage]
    final_model: Path
    metrics: list[dict]  # one row per training step of every stage (metrics.jsonl)
    table: list[dict]  # one row per model the run measured (base, each stage)
    report: Path
    resume_note: str = ""  # what resuming needs beyond `r1lab run` with the same settings

    @classmethod
    def read(cls, run_dir: str | Path, resume_note: str = "") -> RunResult:
        run_dir = Path(run_dir)
        path = run_dir / "summary.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: '{run_dir}' is not a finished run directory (run it, or "
                                    "run it again to resume it)")
        summary = json.loads(path.read_text())
        stages = [Stage(**{k: s.get(k) for k in Stage.__dataclass_fields__}) for s in summary["stages"]]
        metrics = read_jsonl(run_dir / "metrics.jsonl") if (run_dir / "metrics.jsonl").exists() else []
        return cls(run_dir, summary, stages, Path(summary["final_model"]), metrics, summary["table"],
                   run_dir / "report.html", resume_note)

    @property
    def pass_at_1(self) -> tuple[float, float]:
        """pass@1 of the run's first model measured and of its final one."""
        return self.table[0]["pass@1"], self.stages[-1].eval_after["pass@1"]

    def dataframe(self):
        """The metrics rows as a pandas DataFrame."""
        return frame(self.metrics)

    def plot(self, keys: tuple[str, ...] = CURVES):
        """The training curves (one panel per metrics key) as a matplotlib Figure: shown inline in a notebook."""
        return plot_rows(self.metrics, keys, f"{self.summary['recipe']}: {self.dir}")

    def _repr_html_(self) -> str:
        from r1lab.evaluation.report import format_number

        head = "".join(f"<th>{k}</th>" for k in self.table[0])
        cell = lambda v: format_number(v) if isinstance(v, (int, float)) else html.escape(str(v if v is not None else ""))  # noqa: E731
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row.values()) + "</tr>" for row in self.table)
        return (f"<p><b>{self.summary['recipe']}</b> in {self.dir}: final model {self.final_model}, report "
                f"{self.report}</p><table><tr>{head}</tr>{body}</table>" + (f"<p>{self.resume_note}</p>" if self.resume_note else ""))


@dataclass(frozen=True)
class CompareResult:
    """A comparison read back: its table (one row per variant) and each variant's run directory."""

    dir: Path
    name: str
    kind: str
    table: list[dict]
    report: Path
    variants: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def read(cls, out: str | Path) -> CompareResult:
        out = Path(out)
        data = json.loads((out / "compare.json").read_text())
        variants = {row["variant"]: out / row["variant"] for row in data["table"] if "variant" in row}
        return cls(out, data["compare"], data["kind"], data["table"], out / "report.html", variants)

    def dataframe(self):
        return frame(self.table)


@dataclass(frozen=True)
class ControlResult:
    """`r1lab control`'s run read back: its summary.json, metrics rows and the saved policy."""

    dir: Path
    summary: dict
    metrics: list[dict]
    policy: Path

    @classmethod
    def read(cls, out: str | Path) -> ControlResult:
        out = Path(out)
        return cls(out, json.loads((out / "summary.json").read_text()), read_jsonl(out / "metrics.jsonl"), out / "policy.pt")

    @property
    def final_mean_return(self) -> float:
        return self.summary["final_mean_return"]

    def dataframe(self):
        return frame(self.metrics)

    def plot(self, keys: tuple[str, ...] = ("mean_return", "eval_return")):
        return plot_rows(self.metrics, keys, f"{self.summary['algo']} on {self.summary['env']}", x="env_steps")


def load(run_dir: str | Path) -> RunResult | CompareResult | ControlResult:
    """Any finished r1lab directory read back: a run's (summary.json with stages), a comparison's (compare.json)
    or a control run's (policy.pt)."""
    run_dir = Path(run_dir)
    if (run_dir / "compare.json").exists():
        return CompareResult.read(run_dir)
    if (run_dir / "policy.pt").exists() and (run_dir / "summary.json").exists():
        return ControlResult.read(run_dir)
    return RunResult.read(run_dir)
