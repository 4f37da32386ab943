"""Recipes and `field=value` overrides into a validated RunConfig, and the names a config chooses from
r1lab's registries checked against them.

config/ validates the settings' shape and values and imports nothing above it; the names of algorithms,
engines, rewards and trackers live with their code (rl/algorithms.py, engines/, rewards/registry.py,
store/trackers.py), so they are checked here, where those registries are in reach. Every command loads its
settings through `validate` / `load_config` (or calls `check_names`), so a wrong name still fails at load,
before any model work, naming the field and the close match.
"""

from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from r1lab.config.base import apply_changes, format_errors
from r1lab.config.control import ControlConfig
from r1lab.config.run import RunConfig
from r1lab.engines import ENGINES, engine_class, unknown_options
from r1lab.errors import ConfigError, did_you_mean
from r1lab.rewards.registry import reward_factory
from r1lab.rl.algorithms import ALGORITHMS
from r1lab.store.trackers import TRACKERS
from r1lab.tools.box import load_environment, load_tools


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


def validate(data: dict, source: str = "config", overrides: list[str] | dict = ()) -> RunConfig:
    """`overrides` (field=value strings, or a dict of them already parsed: dotted keys or nested dicts) applied over
    `data`, validated: a ConfigError names every wrong field."""
    changes = dict(overrides) if isinstance(overrides, dict) else parse_overrides(list(overrides))
    return _checked(RunConfig, apply_changes(RunConfig, data, changes), source)


def validate_control(settings: dict, source: str = "control settings") -> ControlConfig:
    """`r1lab control`'s settings (already parsed overrides), validated and their names checked."""
    return _checked(ControlConfig, settings, source)


def _checked(model, data: dict, source: str):
    try:
        cfg = model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, model)) from None
    check_names(cfg, source)
    return cfg


def load_config(recipe: str, overrides: list[str] | dict = ()) -> RunConfig:
    """A recipe (name or YAML path) with `overrides` (as `validate` takes them), validated and its names checked."""
    path = recipe_path(recipe)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe '{path}' is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe '{path}' must be a mapping of fields")
    return validate(data, f"recipe '{recipe}' with overrides", overrides)


def check_names(cfg, source: str = "config") -> None:
    """A ConfigError naming every field of `cfg` (a RunConfig, or any settings with a `log`, such as
    ControlConfig) whose name is not in its registry: rl.algorithm, rl.rewards and rl.general_rewards (a
    registered name, or your own `module:function` that imports and has a signature r1lab can call), each
    rl stage's own choices, rollout.engine, log.report_to (known and installed); and a value-model algorithm
    under LoRA."""
    problems = _tracker_problems(cfg.log.report_to)
    if isinstance(cfg, RunConfig):
        problems += _engine_problems(cfg.rollout.engine, cfg.rollout.options())
        # the run's rl settings, then each rl stage's as resolved (a value model is refused where LoRA trains it)
        stages = [("rl", cfg.rl, False)] + [(f"stages.{st.name}.rl", cfg.stage_rl(st), cfg.lora.enabled)
                                            for st in cfg.stages if st.kind == "rl"]
        seen = set()
        for where, rl, lora in stages:
            for field, problem in _rl_problems(rl, lora):
                if (field, problem) not in seen:  # a stage that keeps the run's choice is not named twice
                    seen.add((field, problem))
                    problems.append(f"{where}.{field}: {problem}")
        problems += [f"stages.{st.name}.task: {p}" for st in cfg.stages if st.kind == "traces"
                     for p in _traces_problems(st.task or cfg.task)]
    if problems:
        raise ConfigError(f"invalid {source}:\n" + "\n".join(f"  {line}" for line in problems))


def _traces_problems(task: str) -> list[str]:
    """A traces stage writes the tiny world's own tool-using solutions: arithmetic and lookup problems only."""
    kinds = task.removeprefix("tinyworld/").split("+") if task.startswith("tinyworld/") else None
    if kinds is None or not set(kinds) <= {"arithmetic", "lookup"}:
        return [f"a traces stage writes tiny-world solutions for arithmetic and lookup problems; {task!r} is not "
                "tinyworld/arithmetic, tinyworld/lookup or tinyworld/arithmetic+lookup"]
    return []


def _rl_problems(rl, lora: bool) -> list[tuple[str, str]]:
    if rl.algorithm not in ALGORITHMS:
        return [("algorithm", f"unknown algorithm {rl.algorithm!r}{did_you_mean(rl.algorithm, ALGORITHMS)}: "
                              f"known algorithms are {', '.join(ALGORITHMS)}")]
    problems = []
    try:
        load_tools(rl.tools)
    except ValueError as err:
        problems.append(("tools", str(err)))
    try:
        if rl.environment:
            load_environment(rl.environment)
    except ValueError as err:
        problems.append(("environment", str(err)))
    if "environment" in {**rl.rewards, **rl.general_rewards} and not rl.environment:
        problems.append(("rewards", "the 'environment' reward is what rl.environment's reward() returns: set rl.environment"))
    if (rl.tools or rl.environment) and ALGORITHMS[rl.algorithm].needs_value_model:
        problems.append(("algorithm", f"{rl.algorithm}'s GAE runs over consecutive policy tokens: with rl.tools (tool "
                                      "results between them) use a GRPO-family algorithm"))
    if lora and ALGORITHMS[rl.algorithm].needs_value_model:
        problems.append(("algorithm", f"{rl.algorithm} trains a value model, a copy of the whole transformer, which "
                                      "LoRA (lora.r > 0) does not support; use a GRPO-family algorithm or lora.r=0"))
    for field in ("rewards", "general_rewards"):
        for name in getattr(rl, field):
            try:
                reward_factory(name)
            except ValueError as err:
                problems.append((field, str(err)))
    return problems


def _engine_problems(name: str, options: dict) -> list[str]:
    if name not in ENGINES:
        return [f"rollout.engine: unknown engine {name!r}{did_you_mean(name, ENGINES)}: known engines are {', '.join(ENGINES)}"]
    return [f"rollout.{key}: the {name} engine takes no such option (it would do nothing); remove it or pick an engine "
            "that takes it" for key in unknown_options(engine_class(name), options)]


def _tracker_problems(names: list[str]) -> list[str]:
    """A tracker's client is checked at load, so a missing one fails before any model work."""
    problems = []
    for name in names:
        if name not in TRACKERS:
            problems.append(f"log.report_to: unknown tracker {name!r}{did_you_mean(name, TRACKERS)}: "
                            f"known trackers are {', '.join(TRACKERS)}")
        elif importlib.util.find_spec(TRACKERS[name].package) is None:
            problems.append(f"log.report_to: {name} is not installed: pip install 'r1lab[{name}]' "
                            f"(or -e '.[{name}]' in a checkout)")
    return problems
