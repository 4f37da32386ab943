"""The training commands as functions: `run` (and `distill`, the 'distill' recipe), `pretrain`, `compare`, `control`.
Settings are Python values, given as keyword arguments: dotted keys (`**{"rl.lr": 1e-6}`) or nested dicts
(`rl={"lr": 1e-6}`), validated exactly as the CLI's `field=value` strings are (the CLI parses its strings into the
same dict and calls these). Objects in place of strings (reward functions, rows, a model object): inputs.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from r1lab.api.inputs import in_process_names, is_rows, name_objects, name_rewards, save_model_object, save_rows
from r1lab.api.results import CompareResult, ControlResult, RunResult


def _reads_as_itself(text: str) -> bool:
    """Whether parse_overrides reads `text` back as this very string (not YAML, or YAML for itself)."""
    try:
        return yaml.safe_load(text or '""') == text
    except yaml.YAMLError:
        return True  # parse_overrides keeps text YAML cannot read as it is


class ProcessesFailed(ChildProcessError):
    """nproc > 1: the processes torchrun started exited with `returncode`."""

    def __init__(self, returncode: int):
        super().__init__(f"the run's processes exited with status {returncode}")
        self.returncode = returncode


def override_strings(settings: dict) -> list[str]:
    """Settings as the CLI's field=value strings (which parse back to the same values), for a command started anew."""
    out = []
    for key, value in settings.items():
        plain = isinstance(value, str) and (key.rsplit(".", 1)[-1] in ("model", "task", "system", "teacher")
                                            or _reads_as_itself(value))
        out.append(f"{key}={value if plain else json.dumps(value)}")
    return out


def prepare(recipe: str, out: str | Path, settings: dict, rewards=None, tokenizer=None):
    """(config, resume note, settings naming only files and names): objects among `settings` written to `out` or
    registered (inputs.py), then the recipe and settings validated as the CLI's are."""
    from r1lab.recipes.load import load_config

    out, settings = Path(out), name_objects(settings)
    started = (out / "config.yaml").exists()
    if rewards is not None:
        settings["rl.rewards"] = name_rewards(rewards)
    written = {}  # settings that now name what objects were written to: what a CLI resume passes
    if is_rows(settings.get("task")):
        if not started:  # a start that failed before the run began: the rows given now replace those written then
            shutil.rmtree(out / "input-data", ignore_errors=True)
        written.update(save_rows(settings.pop("task"), out / "input-data"))
    if settings.get("model") is not None and not isinstance(settings["model"], str):
        written["model"] = save_model_object(settings.pop("model"), tokenizer, out / "input-model", fresh=not started)
    elif tokenizer is not None:
        raise ValueError("tokenizer: give it with a model object (model=...); a model directory holds its own")
    settings.update(written)
    cfg = load_config(recipe, settings)
    return cfg, resume_note(recipe, out, in_process_names(cfg), written), settings


def resume_note(recipe: str, out: Path, own: list[str], written: dict) -> str:
    """What resuming a run started with objects needs beyond calling `run` again with the same arguments."""
    if own:
        return (f"{', '.join(own)}: Python objects of this process; resume from Python, passing them again (the CLI "
                "cannot resume this run: define them in a module to have them named module:function)")
    if written:
        return (f"from the CLI: r1lab run {recipe} --out {out} {' '.join(f'{k}={v}' for k, v in written.items())} "
                "and the other settings as given")
    return ""


def run(recipe: str, out: str | Path, *, rewards=None, tokenizer=None, nproc: int = 1, **settings) -> RunResult:
    """Runs (or resumes) `recipe` (r1-zero, r1, distill-vs-rl, distill, or a YAML path) into `out`: `r1lab run`.

    settings: any RunConfig field, e.g. `rl={"steps": 50}`, `**{"rl.lr": 1e-6}`, `task="openai/gsm8k"`; also
    `task=` rows (a list of dicts, a datasets.Dataset or DatasetDict), `model=` a transformers model (with
    `tokenizer=`), and reward functions: `rewards={my_fn: 1.0, "format": 1.0}` (or a list, weight 1 each) sets
    rl.rewards. Calling it again with the same arguments resumes. nproc > 1: that many processes (torchrun; rows
    and a model object are written first, functions must be named module:function). Returns the run read back
    (`RunResult`; None on torchrun's ranks other than 0, which write nothing)."""
    from r1lab import dist
    from r1lab.recipes.pipeline import run_recipe

    cfg, note, named = prepare(recipe, out, settings, rewards, tokenizer)
    if nproc > 1:
        own = in_process_names(cfg)
        if own:
            raise ValueError(f"nproc: {', '.join(own)} live in this process; with nproc > 1 name them module:function")
        cfg.check_processes(nproc)  # a bad split fails here, before any process starts
        status = dist.launch(nproc, ["run", recipe, "--out", str(out), *override_strings(named)])
        if status:
            raise ProcessesFailed(status)
        return RunResult.read(out, note)
    with dist.process_group():  # torchrun's processes join theirs; one process has none
        run_recipe(cfg, out)
        main = dist.is_main()  # asked inside: once the group is gone every process is its own main
    return RunResult.read(out, note) if main else None  # other ranks wrote nothing to read


def distill(teacher: str, out: str | Path, *, student: str = "tinyworld", **settings) -> RunResult:
    """A teacher writes filtered traces, a student is SFT'd on them (the 'distill' recipe): `r1lab distill`."""
    return run("distill", out, **{"teacher": str(teacher), "student.model": str(student), **settings})


def pretrain(out: str | Path | None = None, **settings) -> Path:
    """Builds the tiny world's base model (cached under $R1LAB_CACHE, or into `out`): `r1lab pretrain`. settings:
    PretrainConfig fields (steps=200, hidden_size=64, ...). Returns its directory."""
    from r1lab.progress import console
    from r1lab.recipes.load import validate
    from r1lab.tinyworld.build import pretrain as build

    cfg = validate({}, "pretrain settings", {f"pretrain.{k}": v for k, v in settings.items()}).pretrain
    path = build(cfg, out)
    console.print(f"tiny base model: {path}")
    return Path(path)


def compare(spec: str, out: str | Path, *, env: str | None = None, **settings) -> CompareResult:
    """Runs the variants of a comparison (a shipped name such as ppo-vs-grpo, or a YAML path) into out/<variant>
    with `settings` common to all, and one overlaid report: `r1lab compare`. `env`: the env of a control comparison
    (robot, cartpole), the same as env=ENV among the settings."""
    from r1lab.errors import ConfigError
    from r1lab.experiments.compare import load_spec, run_compare

    loaded = load_spec(spec, [*([f"env={env}"] if env else []), *override_strings(settings)])
    if env and loaded.kind != "control":
        raise ConfigError(f"--env: comparison '{loaded.compare}' trains language models (kind: {loaded.kind}); --env is "
                          "for control comparisons such as 'robot'")
    run_compare(loaded, out)
    return CompareResult.read(out)


def control(algo: str, out: str | Path, *, env: str = "CartPole-v1", video: bool = False, **settings) -> ControlResult:
    """PPO, GRPO or branching GRPO (grpo-branch) on a gymnasium control task or MuJoCo robot with small MLPs:
    `r1lab control`. settings: ControlConfig fields over the env's preset; `video` writes out/policy.gif."""
    from r1lab.gym.run import run_control
    from r1lab.recipes.load import validate_control

    run_control(validate_control({"algo": algo, "env": env, **({"video": True} if video else {}), **settings}), out)
    return ControlResult.read(out)
