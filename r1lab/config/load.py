"""Recipes and `field=value` overrides into a validated RunConfig."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from r1lab.config.base import ConfigError, apply_changes, format_errors
from r1lab.config.run import RunConfig


def recipe_path(name: str) -> Path:
    """A recipe by name (shipped in r1lab/recipes) or by path to a YAML file."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.exists():
            raise ConfigError(f"recipe file '{name}' does not exist")
        return path
    shipped = resources.files("r1lab") / "recipes" / f"{name}.yaml"
    if not shipped.is_file():
        names = sorted(p.name[:-5] for p in (resources.files("r1lab") / "recipes").iterdir() if p.name.endswith(".yaml"))
        raise ConfigError(f"unknown recipe '{name}': choose one of {', '.join(names)} or give a .yaml path")
    return Path(str(shipped))


def parse_overrides(overrides: list[str]) -> dict:
    """['rl.lr=1e-6', 'rl.rewards={accuracy: 1}'] -> {'rl.lr': 1e-6, 'rl.rewards': {'accuracy': 1}}: dotted
    paths kept as keys (apply_changes reads them), values parsed as YAML."""
    changes: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or "" in key.split("."):
            raise ConfigError(f"override '{item}' must look like field=value, e.g. rl.lr=1e-6")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as text
            try:
                value = float(value)
            except ValueError:
                pass
        # Keys such as model= and task= are paths or names: keep them as the literal text.
        leaf = key.rsplit(".", 1)[-1]
        changes.pop(key, None)  # a repeated key counts where it was last written
        changes[key] = raw if isinstance(value, (int, float)) and leaf in ("model", "task", "system", "teacher") else value
    return changes


def validate(data: dict, source: str = "config", overrides: list[str] = ()) -> RunConfig:
    """`overrides` (field=value) applied over `data`, validated: a ConfigError names every wrong field."""
    data = apply_changes(RunConfig, data, parse_overrides(list(overrides)))
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, RunConfig)) from None


def load_config(recipe: str, overrides: list[str] = ()) -> RunConfig:
    path = recipe_path(recipe)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe '{path}' is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe '{path}' must be a mapping of fields")
    return validate(data, f"recipe '{recipe}' with overrides", overrides)
