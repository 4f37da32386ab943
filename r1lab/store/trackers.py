"""Experiment trackers (`log.report_to`): every metrics.jsonl row, the run's config and its final table also go to
wandb, TensorBoard or trackio, offline, into RUN/trackers/, so a run directory stays self-contained:

    RUN/trackers/tensorboard/<stage>/   a stage's scalars (tag: the metric, x: the stage's step); the folder itself
                                        holds the config and the final table as text
    RUN/trackers/wandb/                 offline-run-*-<id>/ per attempt, one run id (kept in wandb/run-id) for all
    RUN/trackers/trackio/<project>.db   trackio's local database, the run by its name (unless TRACKIO_DIR is set)

A metric is named <stage>/<metric> in wandb and trackio (wandb plots it against <stage>/step), so several stages of
a run never collide. A resumed stage logs again the steps after its checkpoint: TensorBoard hides what the
interrupted attempt logged from there (purge_step); wandb and trackio keep both, the later last.

`reporting` opens a run's trackers (on rank 0 only) for a block and yields them; a training loop gets their `log`
as its `report(row)` callback (store/logs.py: append_metrics calls it with each metrics row), so no loop reaches
trackers through global state. A new tracker is one class with `package` and the four methods of TensorBoard
below, and one TRACKERS line.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import secrets
from pathlib import Path

import yaml

from r1lab import dist
from r1lab.progress import console


class TensorBoard:
    package = "tensorboard"  # torch.utils.tensorboard writes the event files, with tensorboard's protobufs

    def __init__(self, where: Path, project: str, name: str, config: dict, resume: bool):
        from torch.utils.tensorboard import SummaryWriter

        self.dir, self.stages = where / "tensorboard", {}
        self.run = SummaryWriter(self.dir)
        self.run.add_text("config", _code(yaml.safe_dump(config, sort_keys=False, allow_unicode=True)))
        self.run.flush()
        self.view = f"tensorboard --logdir {self.dir}"

    def log(self, metrics: dict, step: int, stage: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if stage not in self.stages:  # purge_step: TensorBoard hides what an earlier attempt logged from this step on
            self.stages[stage] = SummaryWriter(self.dir / stage, purge_step=step)
        writer = self.stages[stage]
        for key, value in metrics.items():
            writer.add_scalar(key, value, step)
        writer.flush()  # a step is seconds or minutes: each one is on disk when the next starts, as in metrics.jsonl

    def summary(self, table: list[dict]) -> None:
        self.run.add_text("summary", _markdown(table))

    def close(self, ok: bool) -> None:
        for writer in (self.run, *self.stages.values()):
            writer.close()


class WandB:
    package = "wandb"

    def __init__(self, where: Path, project: str, name: str, config: dict, resume: bool):
        import wandb

        id_file = where / "wandb" / "run-id"  # a resume continues the same run (in its own offline-run-* folder)
        run_id = id_file.read_text().strip() if resume and id_file.exists() else secrets.token_hex(4)
        id_file.parent.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run_id)
        mode = None if "WANDB_MODE" in os.environ else "offline"  # never a login prompt; WANDB_MODE=online streams
        self.run = wandb.init(project=project, name=name, id=run_id, resume="allow", dir=where, mode=mode, config=config)
        self.stages: set[str] = set()
        self.view = self.run.url or f"wandb sync {where / 'wandb'}/offline-run-*-{run_id}, or wandb leet {where / 'wandb'}"

    def log(self, metrics: dict, step: int, stage: str) -> None:
        if stage not in self.stages:  # each stage's metrics against its own step (wandb's own must only grow)
            self.stages.add(stage)
            self.run.define_metric(f"{stage}/step")
            self.run.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
        self.run.log({f"{stage}/step": step, **{f"{stage}/{key}": value for key, value in metrics.items()}})

    def summary(self, table: list[dict]) -> None:
        import wandb

        columns = _columns(table)
        self.run.summary["summary"] = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in table])

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


class Trackio:
    package = "trackio"

    def __init__(self, where: Path, project: str, name: str, config: dict, resume: bool):
        wanted = (where / "trackio").resolve()
        with _env("TRACKIO_DIR", str(wanted)):  # trackio reads it once, when first imported
            import trackio
        self.dir = Path(trackio.utils.TRACKIO_DIR).resolve()
        if self.dir != wanted and "TRACKIO_DIR" not in os.environ:
            console.print(f"[bold red]warning: trackio writes to {self.dir}: it takes its directory once per process, "
                          "from the first run that used it")
        started = wanted / "run-name"  # this run directory's run: a resume continues it, never another's of that name
        resume = "allow" if resume and started.exists() else "never"
        with contextlib.redirect_stdout(io.StringIO()):  # its banner's `trackio show` lacks the directory: `view` has it
            self.run = trackio.init(project=project, name=name, config=config, resume=resume, embed=False)
        started.parent.mkdir(parents=True, exist_ok=True)
        started.write_text(name)
        self.view = f"TRACKIO_DIR={self.dir} trackio show --project {project}"

    def log(self, metrics: dict, step: int, stage: str) -> None:
        self.run.log({f"{stage}/{key}": value for key, value in metrics.items()}, step=step)

    def summary(self, table: list[dict]) -> None:
        import trackio

        columns = _columns(table)
        self.run.log({"summary": trackio.Table(columns=columns, data=[[row.get(c) for c in columns] for row in table])})

    def close(self, ok: bool) -> None:
        import trackio

        with contextlib.redirect_stdout(io.StringIO()):
            trackio.finish()


TRACKERS = {"wandb": WandB, "tensorboard": TensorBoard, "trackio": Trackio}


class Trackers:
    """The trackers a run reports to; with none, every method does nothing."""

    def __init__(self, trackers: list | None = None):
        self.trackers = trackers or []

    @classmethod
    def open(cls, log, run_dir: Path, config: dict, resume: bool = True) -> Trackers:
        """Starts a run in each of `log.report_to` (config.LogConfig) and records `config`; with `resume`, continues
        the run this run directory started before, if any."""
        where, name = Path(run_dir) / "trackers", log.run_name or Path(run_dir).resolve().name
        opened = cls()
        try:
            for tracker in log.report_to:
                opened.trackers.append(TRACKERS[tracker](where, log.project, name, config, resume))
        except BaseException:
            opened.close(ok=False)
            raise
        for tracker in opened.trackers:
            console.print(f"[dim]{type(tracker).__name__.lower()}: {tracker.view}")
        return opened

    def log(self, row: dict) -> None:
        """A metrics row's numbers to every tracker (its `stage` and `step` are the name's prefix and the x axis):
        the `report` callback of the training loops."""
        metrics = {k: v for k, v in row.items() if k not in ("stage", "step") and isinstance(v, (int, float))}
        for tracker in self.trackers:
            tracker.log(metrics, row["step"], row["stage"])

    def summary(self, table: list[dict]) -> None:
        """The run's final table: a row per model (recipes) or one row (control, sft)."""
        for tracker in self.trackers if table else ():
            tracker.summary(table)

    def close(self, ok: bool = True) -> None:
        for tracker in self.trackers:
            tracker.close(ok)
        self.trackers = []


@contextlib.contextmanager
def reporting(log, run_dir: Path, config: dict, resume: bool = True):
    """The trackers of `log` (config.LogConfig; None: none), open for the block. Only rank 0 reports (the others get
    none); a run that raises is closed as failed. `resume=False`: a new run in each tracker (for a command that starts
    over, as `r1lab control` does)."""
    wanted = log is not None and log.report_to and dist.is_main()
    trackers = Trackers.open(log, run_dir, config, resume) if wanted else Trackers()
    ok = False
    try:
        yield trackers
        ok = True
    finally:
        trackers.close(ok)


def _columns(table: list[dict]) -> list[str]:
    return list(dict.fromkeys(key for row in table for key in row))


def _markdown(table: list[dict]) -> str:
    def cell(v) -> str:
        return "–" if v is None else f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else str(v)

    columns = _columns(table)
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns),
                      *("| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in table)])


def _code(text: str) -> str:
    """Markdown's code block (TensorBoard renders text as markdown)."""
    return "".join("    " + line + "\n" for line in text.splitlines())


@contextlib.contextmanager
def _env(name: str, value: str):
    """`name`=`value` in os.environ for the block, unless the user set it (theirs wins)."""
    if name in os.environ:
        yield
        return
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]

