import json

import pytest

from r1lab.config import ConfigError, EvalConfig
from r1lab.recipes.load import load_config, parse_overrides
from r1lab.ui.cli import main


def test_recipe_loads_and_overrides_apply():
    cfg = load_config("r1-zero", ["model=path/to/model", "task=data/gsm8k.jsonl", "rl.lr=1e-6", "rl.group_size=16",
                                  "rl.sampling.stop=[x, y]", "eval.n=10"])
    assert (cfg.model, cfg.task, cfg.rl.lr, cfg.rl.group_size) == ("path/to/model", "data/gsm8k.jsonl", 1e-6, 16)
    assert cfg.rl.sampling.stop == ["x", "y"] and cfg.eval.n == 10
    assert load_config("r1-zero").rl.group_size == 8  # the recipe file is not changed by overrides


def test_numeric_looking_names_stay_text():
    assert parse_overrides(["model=123", "rl.lr=3e-4"]) == {"model": "123", "rl.lr": 3e-4}


@pytest.mark.parametrize("override, names", [
    ("rl.lrr=1", ["rl.lrr", "unknown field", "rl.lr"]),
    ("rl.lr=fast", ["rl.lr", "valid number"]),
    ("rl.group_size=1", ["rl.group_size", "greater than 1"]),
    ("eval.top_p=1.5", ["eval.top_p"]),
    ("template=jinja", ["template"]),
    ("pretrain.hidden_size=102", ["hidden_size", "heads"]),
    ("rollout.engine=vlm", ["rollout.engine", "unknown engine 'vlm'", "torch"]),
    ("rl.algorithm=grpoo", ["rl.algorithm", "grpo", "dapo", "ppo"]),
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


# ---------------------------------------------------------------- typed, strict, predictable


def _error(recipe, overrides) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(recipe, overrides)
    return str(err.value)


def test_stage_settings_are_checked_at_load():
    err = _error("r1", ["stages.reasoning-rl.rl.stepz=50"])
    assert "stages.reasoning-rl.rl.stepz: unknown field (did you mean 'steps'?)" in err
    err = _error("r1", ["stages.cold-start-data.filters.max_per_promt=1"])
    assert "stages.cold-start-data.filters.max_per_promt: unknown field (did you mean 'max_per_prompt'?)" in err
    assert "stages.cold-start.sft: micro_batch_size (5) must divide" in _error("r1", ["stages.cold-start.sft.micro_batch_size=5"])
    assert "stages.cold-start.rl: a sft stage has no rl settings" in _error("r1", ["stages.cold-start.rl.steps=3"])
    cfg = load_config("r1", ["stages.reasoning-rl.rl.steps=50"])
    assert cfg.stage_rl(next(s for s in cfg.stages if s.name == "reasoning-rl")).steps == 50


@pytest.mark.parametrize("override, where", [
    ("rl.rewards={acuracy: 1}", "rl.rewards"),
    ("rl.general_rewards.helpfulnes=1", "rl.general_rewards"),
    ("stages.reasoning-rl.rl.rewards={acuracy: 1}", "stages.reasoning-rl.rl.rewards"),
])
def test_unknown_reward_names_fail_at_load(override, where):
    err = _error("r1", [override])
    assert f"{where}: unknown reward" in err and "(did you mean '" in err


def test_a_mapping_replaces_a_dict_field_and_a_dotted_path_merges():
    assert load_config("r1-zero", ["rl.rewards={accuracy: 1}"]).rl.rewards == {"accuracy": 1.0}
    assert load_config("r1-zero", ["rl.rewards.format=0.5"]).rl.rewards == {"accuracy": 1.0, "format": 0.5}
    cfg = load_config("r1-zero", ["rl={lr: 0.001}"])  # a section still merges key by key
    assert cfg.rl.lr == 0.001 and cfg.rl.steps == 200
    cfg = load_config("r1", ["stages.reasoning-rl.rl.rewards.format=0.5"])
    stage = next(s for s in cfg.stages if s.name == "reasoning-rl")
    assert cfg.stage_rl(stage).rewards == {"accuracy": 1.0, "format": 0.5, "language": 1.0}


def test_r1_general_rewards_override_reaches_stage_4_alone():
    cfg = load_config("r1", ["rl.general_rewards={reward_model: 1}", "rl.reward_model=path/to/rm"])
    stage4 = next(s for s in cfg.stages if s.name == "all-scenario-rl")
    assert cfg.stage_rl(stage4).general_rewards == {"reward_model": 1.0}
    assert cfg.stage_rl(stage4).sampling.temperature == 0.7  # the stage's own change of sampling stays
    assert "rl.reward_model=PATH" in _error("r1", ["rl.general_rewards={reward_model: 1}"])


def test_the_run_seed_and_template_reach_sft(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import r1lab.sft.train
    from r1lab.recipes.stages import run_sft

    seen = {}
    monkeypatch.setattr(r1lab.sft.train, "train_sft", lambda *a, **kw: seen.update(kw) or {"steps": 0})
    cfg = load_config("r1", ["seed=7", "template=none"])
    (tmp_path / "cold-start-data").mkdir()
    (tmp_path / "cold-start-data" / "samples.jsonl").write_text(json.dumps({"prompt": "1+1", "completion": "2", "kept": True}))
    run = SimpleNamespace(cfg=cfg, dir=tmp_path, system=None, report=None, tool_tokens=[], tools_meta={}, load=lambda name, **_: (None, None))
    run_sft(run, next(s for s in cfg.stages if s.name == "cold-start"), tmp_path / "out")
    assert seen["seed"] == 7 and seen["template"] == "none"

    monkeypatch.setattr(r1lab.sft.train, "sft_from_config", lambda *a, **kw: seen.update(kw) or {})
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "1+1", "completion": "2"}) + "\n")
    assert main(["sft", str(tmp_path / "model"), "--data", str(data), "--out", str(tmp_path / "sft"), "seed=3",
                 "template=chat", "epochs=1"]) == 0
    assert seen["seed"] == 3 and seen["template"] == "chat"


def test_sampling_is_inherited_unless_changed():
    cfg = load_config("r1-zero", ["sampling.max_new_tokens=64"])
    assert cfg.rl.sampling.max_new_tokens == cfg.eval.sampling.max_new_tokens == 64
    assert (cfg.rl.sampling.temperature, cfg.eval.sampling.temperature, cfg.eval.sampling.top_p) == (1.0, 0.6, 0.95)
    cfg = load_config("r1-zero", ["sampling.max_new_tokens=64", "sampling.temperature=0.8", "eval.sampling.max_new_tokens=32"])
    assert (cfg.rl.sampling.max_new_tokens, cfg.eval.sampling.max_new_tokens) == (64, 32)
    assert (cfg.rl.sampling.temperature, cfg.eval.sampling.temperature) == (0.8, 0.6)  # eval keeps the paper's protocol
    generate = next(s for s in load_config("r1", ["sampling.max_new_tokens=64"]).stages if s.kind == "generate")
    assert load_config("r1", ["sampling.max_new_tokens=64"]).stage_sampling(generate).max_new_tokens == 64
    assert EvalConfig(sampling={"max_new_tokens": 8}).sampling.temperature == 0.6


@pytest.mark.parametrize("override", ["rl.lr=.inf", "rl.lr=nan", "sampling.temperature=.inf", "rl.rewards.format=.nan"])
def test_non_finite_numbers_are_refused(override):
    assert "finite number" in _error("r1-zero", [override])


@pytest.mark.parametrize("recipe", ["r1-zero", "r1", "distill", "distill-vs-rl"])
def test_shipped_recipes_fit_the_tiny_base_context(recipe):
    """Every sampling budget of a shipped recipe leaves room for the tiny world's longest prompt in the base's
    context (pretrain.max_len), measured with the tiny world's own tokenizer as pretraining builds it."""
    from r1lab.data.format import apply_template
    from r1lab.recipes.load import load_config
    from r1lab.tinyworld.build import SYSTEM, corpus, train_tokenizer
    from r1lab.tinyworld.problems import TinyWorldTask

    cfg = load_config(recipe, ["teacher=."] if recipe in ("distill", "distill-vs-rl") else [])
    task = TinyWorldTask("tinyworld", train_size=2000, test_size=400)
    small = cfg.pretrain.model_copy(update={"corpus_docs": 3000})
    tokenizer = train_tokenizer(corpus(small, task), cfg.pretrain.vocab_size)
    longest = max(len(tokenizer(apply_template(e.prompt, "r1-zero", system=SYSTEM))["input_ids"])
                  for split in ("train", "test") for e in task.examples(split))
    budgets = {cfg.sampling.max_new_tokens, cfg.eval.sampling.max_new_tokens,
               *(cfg.stage_rl(st).sampling.max_new_tokens for st in cfg.stages if st.kind == "rl"),
               *(cfg.stage_sampling(st).max_new_tokens for st in cfg.stages if st.kind == "generate")}
    assert longest + max(budgets) <= cfg.pretrain.max_len, (longest, budgets)


def test_a_run_recorded_before_a_setting_existed_still_resumes(tmp_path):
    """Upgrading r1lab adds settings (with defaults); a run directory recorded without them resumes, and a real
    change is still refused by name."""
    import yaml

    from r1lab.recipes.rundir import check_run_dir, record_run

    cfg = load_config("r1-zero")
    record_run(tmp_path, cfg)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del saved["mcts"]  # as an older r1lab wrote it
    for stage in saved["stages"]:
        del stage["supervision"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(saved))
    check_run_dir(tmp_path, cfg)
    with pytest.raises(ConfigError, match=r"different config \(fields: rl\)"):
        check_run_dir(tmp_path, load_config("r1-zero", ["rl.lr=0.5"]))
