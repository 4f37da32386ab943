"""A run directory belongs to one experiment: its config (RUN/config.yaml) and the fingerprints of the data
files it trains on (RUN/data.json). Both are written only once a run has really started (its first state is
saved), so a start that fails on a bad model path or data file leaves nothing that blocks the corrected
command; on resume both are compared, so a different config or a replaced data file is refused by name."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from r1lab.config import ConfigError, RunConfig
from r1lab.disk import atomic_write, sha256_file
from r1lab.recipes.tasks import is_dataset

NOT_COMPARED = {"data": ("allow_changed",)}  # overrides for one resume, not part of the experiment
NOT_RECORDED = ("log",)  # where a run reports (store/trackers.py), not what it is: a resume may change it


def _comparable(cfg: RunConfig) -> dict:
    dumped = cfg.model_dump(exclude=set(NOT_RECORDED))
    for section, fields in NOT_COMPARED.items():
        for field in fields:
            dumped.get(section, {}).pop(field, None)
    return dumped


def _recorded(saved: dict) -> dict:
    """A recorded config as this version of r1lab reads it: a setting added since the run started takes its default,
    so upgrading r1lab does not stop a run from resuming (a setting it cannot read any more is compared as written)."""
    try:
        return _comparable(RunConfig.model_validate(saved))
    except (ValidationError, ConfigError, TypeError):
        return saved


def data_files(cfg: RunConfig) -> list[Path]:
    """Every local file the run's tasks read (file tasks, test_file); a directory counts as its files."""
    names = {cfg.task, *(st.task for st in cfg.stages if st.task), *cfg.eval.extra_tasks}
    paths = [Path(n) for n in sorted(names) if is_dataset(n)]
    if cfg.data.test_file:
        paths.append(Path(cfg.data.test_file))
    files = []
    for p in paths:
        files += sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p] if p.is_file() else []
    return files


def fingerprints(cfg: RunConfig, tasks: dict | None = None) -> dict[str, str]:
    """sha256 of every local data file; of a hub dataset's rows as loaded (`tasks`: name -> Task), keyed
    'hub:NAME', since its files live in a cache that may move to a newer revision."""
    from r1lab.models.hub import is_hub_id

    out = {}
    for name, task in sorted((tasks or {}).items()):
        if is_dataset(name) and is_hub_id(name):
            rows = [[ex.id, ex.prompt, ex.answer, list(ex.messages or ())] for split in ("train", "test") for ex in task.examples(split)]
            out[f"hub:{name}"] = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    for path in data_files(cfg):
        out[str(path)] = sha256_file(path)
    return out


def check_run_dir(run_dir: Path, cfg: RunConfig, tasks: dict | None = None) -> None:
    """Refuses a run directory holding another config, or data files changed since it started (unless
    data.allow_changed=true). Writes nothing."""
    saved = Path(run_dir) / "config.yaml"
    if saved.exists():
        before, now = _recorded(yaml.safe_load(saved.read_text())), _comparable(cfg)
        for section, fields in NOT_COMPARED.items():
            for field in fields:
                (before.get(section) or {}).pop(field, None)
        diff = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if diff:
            raise ConfigError(f"run directory '{run_dir}' holds a run with a different config (fields: {', '.join(diff)}); "
                              "use a new --out directory, or the same settings to resume")
    recorded = Path(run_dir) / "data.json"
    if recorded.exists() and not cfg.data.allow_changed:
        before, now = json.loads(recorded.read_text()), fingerprints(cfg, tasks)
        changed = sorted(p for p in set(before) | set(now) if before.get(p) != now.get(p))
        if changed:
            raise ConfigError(f"data.allow_changed: data (files, or a hub dataset's rows) changed since this run started: {', '.join(changed)}; "
                              "resuming would train on other examples. Restore the file(s), use a new --out directory, "
                              "or pass data.allow_changed=true to resume anyway")


def record_run(run_dir: Path, cfg: RunConfig, tasks: dict | None = None) -> None:
    """Writes config.yaml and data.json if absent (called when the run's first state is saved)."""
    run_dir = Path(run_dir)
    for name, text in (("config.yaml", lambda: yaml.safe_dump(_comparable(cfg), sort_keys=False, allow_unicode=True)),
                       ("data.json", lambda: json.dumps(fingerprints(cfg, tasks), indent=2))):
        if not (run_dir / name).exists():
            atomic_write(run_dir / name, text(), "run record")
