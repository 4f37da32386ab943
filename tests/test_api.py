"""r1lab from Python (r1lab/api/): every CLI command has its function, settings are validated as the CLI's are, and a
run started with objects (rows, a lambda reward, a model object) returns its results as objects and resumes."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import MICRO

import r1lab
import r1lab.api
from r1lab.config import ConfigError
from r1lab.recipes.load import parse_overrides
from r1lab.ui.arguments import parser

ROOT = Path(__file__).resolve().parent.parent


def test_every_cli_command_has_its_function_at_the_top_level():
    sub = next(a for a in parser()._actions if a.dest == "command")
    commands = set(sub.choices)
    assert {"run", "eval", "compare", "pretrain", "chat"} <= commands
    assert commands == set(r1lab.api.COMMANDS), "a sub-command without its function in r1lab.api.COMMANDS (or the reverse)"
    import pkgutil

    packages = {m.name for m in pkgutil.iter_modules(r1lab.__path__)}  # r1lab.sft is the package, not a function
    for name, fn in r1lab.api.COMMANDS.items():
        assert fn.__name__ not in packages, f"r1lab.{fn.__name__} names a module of r1lab: its twin needs another name"
        assert getattr(r1lab, fn.__name__) is fn, f"r1lab.{fn.__name__} (`r1lab {name}`) is not exposed at the top level"
        assert fn.__doc__ and f"r1lab {name}" in fn.__doc__, f"{fn.__name__}'s docstring names `r1lab {name}`"


def test_import_r1lab_stays_cheap():
    code = "import sys, r1lab; print(sorted(m for m in ('torch', 'transformers', 'r1lab.api') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    with pytest.raises(AttributeError, match="no attribute 'rnu'"):
        r1lab.rnu  # noqa: B018


def test_settings_are_validated_as_the_cli_validates_them(tmp_path):
    with pytest.raises(ConfigError, match=r"rl.stpes: unknown field \(did you mean 'rl.steps'\?\)"):
        r1lab.run("r1-zero", tmp_path / "run", rl={"stpes": 3})
    with pytest.raises(ConfigError, match=r"rl.stpes: unknown field \(did you mean 'rl.steps'\?\)"):
        r1lab.run("r1-zero", tmp_path / "run", **{"rl.stpes": 3})
    with pytest.raises(ConfigError, match="unknown algorithm 'grop'.*did you mean 'grpo'"):
        r1lab.run("r1-zero", tmp_path / "run", rl={"algorithm": "grop"})
    with pytest.raises(ValueError, match="cannot tell how to call"):
        r1lab.run("r1-zero", tmp_path / "run", rewards=[lambda response: 1.0])
    assert not (tmp_path / "run" / "config.yaml").exists()


def rows(n=12):
    return [{"question": f"Compute {i} + {i}", "answer": str(2 * i)} for i in range(1, n + 1)]


SETTINGS = dict(system="", data={"test_size": 4}, sampling={"max_new_tokens": 8}, eval={"k": 2},
                rl={"steps": 3, "prompts_per_step": 2, "group_size": 3, "checkpoint_every": 1})


@pytest.mark.slow
def test_run_with_rows_a_lambda_reward_and_a_model_object_resumes(tiny, tmp_path, one_thread):
    model, tokenizer = tiny
    stop = {"at": 2, "calls": 0}

    def digits(completions, **columns):  # TRL's batched signature; stops the run (as Ctrl-C would) in step `at`
        stop["calls"] += 1
        if stop["calls"] == stop["at"]:
            raise KeyboardInterrupt
        return [min(1.0, sum(c.isdigit() for c in text) / 4) for text in completions]

    rewards = {"format": 1.0, digits: 1.0, lambda response, example, **info: float(len(response) < 40): 0.5}
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        r1lab.run("r1-zero", run, task=rows(), model=model, tokenizer=tokenizer, rewards=rewards, **SETTINGS)
    assert (run / "input-model" / "config.json").exists() and not (run / "summary.json").exists()
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["rl"]["rewards"] == {"format": 1.0, "python:digits": 1.0, "python:lambda": 0.5}
    assert recorded["task"] == str(run / "input-data" / "train.jsonl") and recorded["model"] == str(run / "input-model")
    assert [json.loads(line) for line in (run / "input-data" / "train.jsonl").read_text().splitlines()] == rows()

    stop["at"] = 0  # the same session resumes it: step 1 is not redone
    result = r1lab.run("r1-zero", run, task=rows(), model=model, tokenizer=tokenizer, rewards=rewards, **SETTINGS)
    assert isinstance(result, r1lab.RunResult) and result.dir == run
    assert [r["step"] for r in result.metrics] == [1, 2, 3]
    assert result.stages[0].name == "r1-zero" and result.stages[0].steps == 3 and result.stages[0].kind == "rl"
    assert [row["model"] for row in result.table] == ["base", "r1-zero"]
    assert result.stages[0].eval_after["k"] == 2 and result.stages[0].eval_after["n"] == 4
    assert result.final_model == run / "r1-zero" / "final" and (result.final_model / "config.json").exists()
    assert result.report.exists() and result.summary["task"] == str(run / "input-data" / "train.jsonl")
    assert "python:digits, python:lambda" in result.resume_note and "CLI cannot resume" in result.resume_note
    assert all("reward/python:digits" in r and "reward/python:lambda" in r for r in result.metrics)
    assert list(result.dataframe()["step"]) == [1, 2, 3]
    assert r1lab.load(run).metrics == result.metrics and r1lab.load(run).stages == result.stages
    assert len(result.plot().axes) >= 2
    assert "<td>r1-zero</td>" in result._repr_html_() and str(result.final_model) in result._repr_html_()

    with pytest.raises(ConfigError, match="other rows"):  # other rows on the same directory are refused
        r1lab.run("r1-zero", run, task=rows(13), model=model, tokenizer=tokenizer, rewards=rewards, **SETTINGS)
    measured = r1lab.evaluate(model, tokenizer=tokenizer, task=rows(), k=2, n=3, max_new_tokens=8, system="")
    assert measured.metrics["n"] == 3 and 0.0 <= measured.pass_at_1 <= 1.0


def test_a_reward_from_another_process_says_how_to_resume():
    from r1lab.rewards.registry import reward_factory

    with pytest.raises(ValueError, match="another process: resume from Python, passing it again"):
        reward_factory("python:never_registered")


def test_a_module_function_is_named_by_its_import_path(tmp_path):
    from helpers import digits

    from r1lab.api.inputs import name_rewards

    assert name_rewards([digits, "format"]) == {"helpers:digits": 1.0, "format": 1.0}
    first, second = (lambda r, e: 1.0), (lambda r, e: 0.0)
    assert name_rewards({first: 1, second: 2}) == {"python:lambda": 1, "python:lambda_2": 2}


def readme_python() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readmes_python_snippet_runs(tmp_path, monkeypatch, one_thread, caplog):
    """As written, with the micro budget of the other end-to-end tests added to its calls."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("R1LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    run, evaluate = r1lab.api.run, r1lab.api.evaluate
    micro = parse_overrides(MICRO)
    monkeypatch.setattr(r1lab.api, "run", lambda recipe, out, **kw: run(recipe, out, **{**kw, **micro}))
    monkeypatch.setattr(r1lab.api, "evaluate", lambda model, **kw: evaluate(model, **{**kw, "n": 3, "max_new_tokens": 8}))
    scope = {}
    exec(compile(readme_python(), "README.md", "exec"), scope)
    assert isinstance(scope["result"], r1lab.RunResult) and scope["result"].stages[0].steps == 3
    assert (tmp_path / "runs" / "r1-zero-py" / "summary.json").exists()
    assert all("reward/python:brevity" in row for row in scope["result"].metrics)
    assert "failed" not in caplog.text, "the README's reward raised (its samples were scored 0)"


def test_tools_and_environments_as_objects_are_named_and_found():
    from helpers import AnswerBook

    from r1lab.api.inputs import name_objects
    from r1lab.tools.box import load_environment, load_tools

    def shout(text: str) -> str:
        """Says a text loudly.

        Args:
            text: what to say
        """
        return text.upper()

    named = name_objects({"rl": {"tools": [shout, "r1lab.tools:calculator"]}, "rl.environment": AnswerBook})
    assert named == {"rl": {"tools": ["python:shout", "r1lab.tools:calculator"]}, "rl.environment": "helpers:AnswerBook"}
    assert load_tools(["python:shout"])[0].fn("hi") == "HI"
    assert load_environment("helpers:AnswerBook") is AnswerBook


def test_chat_with_a_message_answers_once_and_prints_nothing(tiny_model_dir, capsys, one_thread):
    reply = r1lab.chat(str(tiny_model_dir), "Compute 2 + 2", max_new_tokens=6, temperature=0)
    assert isinstance(reply, r1lab.Reply) and 0 < reply.tokens <= 6 and reply.text.startswith("<think>")
    assert reply.thinking and capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="max_turns must be at least 1"):
        r1lab.chat(str(tiny_model_dir), "hi", max_turns=0)


def test_a_run_from_rows_and_a_model_object_says_the_cli_command_that_resumes_it(tiny, tmp_path):
    from r1lab.api.runs import override_strings, prepare
    from r1lab.recipes.load import load_config

    model, tokenizer = tiny
    settings = {**SETTINGS, "rl.rewards": {"format": 1.0, "helpers:digits": 1.0}}
    cfg, note, _ = prepare("r1-zero", tmp_path / "run", {**settings, "task": rows(), "model": model}, tokenizer=tokenizer)
    command = note.removeprefix("from the CLI: ").removesuffix(" and the other settings as given").split()
    assert command[:5] == ["r1lab", "run", "r1-zero", "--out", str(tmp_path / "run")]
    assert sorted(command[5:]) == [f"model={tmp_path / 'run' / 'input-model'}", f"task={tmp_path / 'run' / 'input-data' / 'train.jsonl'}"]
    # the CLI's strings, parsed, give the config the objects gave: one path
    assert load_config("r1-zero", parse_overrides([*override_strings(settings), *command[5:]])) == cfg


def test_settings_go_back_to_cli_strings_unchanged():
    """--nproc starts `r1lab run` again in each process: the settings, as strings, must parse back to themselves."""
    from r1lab.api.runs import override_strings

    given = ["rl.lr=1e-6", "model=123", "task=data.jsonl", "rl.rewards={accuracy: 1, my.mod:fn: 0.5}", "system=",
             "log.report_to=[wandb]", "rl.steps=5", "eval.every=yes", "rl.tools=[r1lab.tools:calculator]"]
    settings = parse_overrides(given)
    assert parse_overrides(override_strings(settings)) == settings


def test_datasets_become_files_the_config_names(tmp_path):
    from datasets import Dataset, DatasetDict

    from r1lab.api.inputs import save_rows

    train, test = Dataset.from_list(rows(8)), Dataset.from_list(rows(3))
    named = save_rows(DatasetDict({"train": train, "test": test}), tmp_path / "d")
    assert named == {"task": str(tmp_path / "d" / "train.jsonl"), "data.test_file": str(tmp_path / "d" / "test.jsonl")}
    assert (tmp_path / "d" / "test.jsonl").read_text().count("\n") == 3
    assert save_rows(train, tmp_path / "e") == {"task": str(tmp_path / "e" / "train.jsonl")}
    with pytest.raises(ConfigError, match="drop the splits validation"):
        save_rows(DatasetDict({"train": train, "validation": test}), tmp_path / "f")
    with pytest.raises(ConfigError, match="non-empty list of dicts"):
        save_rows([], tmp_path / "g")


def test_the_top_level_names_are_the_apis():
    assert set(r1lab.API) == set(r1lab.api.__all__) and "run" in dir(r1lab)
