import json

import pytest

from r1lab.ui.cli import main
from r1lab.config import ConfigError, load_config, parse_overrides


def test_recipe_loads_and_overrides_apply():
    cfg = load_config("r1-zero", ["model=path/to/model", "task=data/gsm8k.jsonl", "rl.lr=1e-6", "rl.group_size=16",
                                  "rl.sampling.stop=[x, y]", "eval.n=10"])
    assert (cfg.model, cfg.task, cfg.rl.lr, cfg.rl.group_size) == ("path/to/model", "data/gsm8k.jsonl", 1e-6, 16)
    assert cfg.rl.sampling.stop == ["x", "y"] and cfg.eval.n == 10
    assert load_config("r1-zero").rl.group_size == 8  # the recipe file is not changed by overrides


def test_numeric_looking_names_stay_text():
    assert parse_overrides(["model=123", "rl.lr=3e-4"]) == {"model": "123", "rl": {"lr": 3e-4}}


@pytest.mark.parametrize("override, names", [
    ("rl.lrr=1", ["rl.lrr", "unknown field", "rl.lr"]),
    ("rl.lr=fast", ["rl.lr", "valid number"]),
    ("rl.group_size=1", ["rl.group_size", "greater than 1"]),
    ("eval.top_p=1.5", ["eval.top_p"]),
    ("template=jinja", ["template"]),
    ("pretrain.hidden_size=102", ["hidden_size", "heads"]),
    ("nonsense", ["field=value"]),
])
def test_bad_overrides_name_the_field(override, names):
    with pytest.raises(ConfigError) as err:
        load_config("r1-zero", [override])
    for name in names:
        assert name in str(err.value)


def test_unknown_recipe_and_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe 'r2'.*r1-zero"):
        load_config("r2")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "mine.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("rl: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))


def test_cli_reports_errors_without_a_traceback(tmp_path, capsys):
    assert main(["run", "r1-zero", "--out", str(tmp_path / "run"), "rl.stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "rl.stepz: unknown field" in err and "did you mean 'rl.steps'" in err and "Traceback" not in err

    assert main(["run", "r1-zero", "--out", str(tmp_path / "run"), f"task={tmp_path / 'missing.jsonl'}"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "1+1?", "answer": "2"}) + "\n" + json.dumps({"question": "2+2?"}) + "\n")
    assert main(["run", "r1-zero", "--out", str(tmp_path / "run"), f"task={rows}", "data.test_size=1"]) == 2
    assert "answer" in capsys.readouterr().err

    assert main(["eval", str(tmp_path / "no-model"), "--task", "tinyworld", "--n", "2"]) == 2
    assert "no-model" in capsys.readouterr().err


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("run", "pretrain", "eval", "generate", "sft", "chat", "report"):
        assert command in out
