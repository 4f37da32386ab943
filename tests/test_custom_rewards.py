"""Rewards of your own by import path (`module:function`): r1lab's per-sample signature and TRL's batched one,
checked when the config is loaded, used by an RL run, failures scored 0 with one warning."""

import json
import logging
import os
import sys
import textwrap

import pytest
import yaml
from helpers import EchoTask, metrics_rows, rl_config, train

from r1lab.config import ConfigError
from r1lab.data.example import Example
from r1lab.recipes.load import load_config, validate
from r1lab.recipes.rundir import check_run_dir, record_run
from r1lab.rewards.registry import Rewards, takes_batches

REWARDS = '''
CALLS = []

def digit_share(completions, **kwargs):  # TRL's signature: every column as a keyword list
    CALLS.append(dict(kwargs, completions=completions))
    return [sum(ch.isdigit() for ch in c) / max(1, len(c)) for c in completions]

def finished(response, example, **info):  # r1lab's: one sample
    return float(not info["truncated"])

def reward_len(completions, **kwargs):  # TRL's documentation example, unchanged
    return [-abs(20 - len(completion)) for completion in completions]

def accuracy(completions, solution, **kwargs):  # an accuracy-style TRL function reading a dataset column
    return [float(s in c) for c, s in zip(completions, solution)]

def ambiguous(texts, **kwargs):
    return [0.0] * len(texts)

async def later(completions, **kwargs):
    return [0.0] * len(completions)

NUMBER = 3
'''


@pytest.fixture
def module(tmp_path, monkeypatch, request):
    """REWARDS (plus any test-specific source) as an importable module of its own name, forgotten afterwards."""
    name = "rw_" + "".join(c if c.isalnum() else "_" for c in request.node.name)

    def write(extra: str = ""):
        (tmp_path / f"{name}.py").write_text(REWARDS + textwrap.dedent(extra))
        monkeypatch.syspath_prepend(str(tmp_path))
        return name

    yield write
    sys.modules.pop(name, None)


def test_custom_rewards_drive_an_rl_run(tiny, tmp_path, module, one_thread):
    model, tokenizer = tiny
    mod = module()
    cfg = rl_config(steps=2, rewards={f"{mod}:digit_share": 0.5, f"{mod}:finished": 1.0})
    train(model, tokenizer, cfg, tmp_path / "run")
    rows = metrics_rows(tmp_path / "run")
    for row in rows:  # every sample gets both rewards: the mean total is the weighted sum of the means
        assert row["reward"] == pytest.approx(0.5 * row[f"reward/{mod}:digit_share"] + row[f"reward/{mod}:finished"])
    assert any(row[f"reward/{mod}:digit_share"] > 0 for row in rows)

    calls, examples = sys.modules[mod].CALLS, EchoTask().examples("train")
    assert len(calls) == 2  # one call per batch, not per sample
    n = cfg.prompts_per_step * cfg.group_size
    for step, call in enumerate(calls):
        assert {"prompts", "completions", "completion_ids", "answer", "num_tokens", "max_tokens", "truncated",
                "trainer_state"} <= set(call)
        assert all(len(call[k]) == n for k in ("prompts", "completions", "completion_ids", "answer", "num_tokens"))
        for i in range(0, n, cfg.group_size):  # a group: one prompt, G completions
            ex = next(e for e in examples if e.prompt == call["prompts"][i])
            assert call["prompts"][i:i + cfg.group_size] == [ex.prompt] * cfg.group_size
            assert call["answer"][i:i + cfg.group_size] == [ex.answer] * cfg.group_size
        assert [len(ids) for ids in call["completion_ids"]] == call["num_tokens"]
        assert all(c.startswith("<think>") for c in call["completions"])  # as every reward sees them: the template's prefix
        assert (call["trainer_state"].global_step, call["trainer_state"].max_steps) == (step, 2)
    logged = [json.loads(line)["response"] for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert logged[0] in calls[0]["completions"]


def test_trl_functions_work_unchanged_on_their_columns(module):
    mod = module()
    ex = [Example("a", "1+1?", "2", {"solution": "2"}), Example("b", "2+2?", "4", {"solution": "4"})]
    rewards = Rewards({f"{mod}:reward_len": 1.0, f"{mod}:accuracy": 2.0}, EchoTask())
    responses = ["<think> x </think> <answer> 2 </answer>", "<answer> 5 </answer>"]
    totals, raw = rewards(responses, ex, [{}, {}])
    assert raw[f"{mod}:reward_len"] == [-abs(20 - len(r)) for r in responses]
    assert raw[f"{mod}:accuracy"] == [1.0, 0.0]
    assert totals == [raw[f"{mod}:reward_len"][0] + 2.0, raw[f"{mod}:reward_len"][1]]


def test_a_batched_reward_sees_only_the_samples_it_applies_to(module):
    mod = module()
    general = Example("g", "What comes after 3?", "4", {"general": True, "kind": "general"})
    reasoning = Example("r", "3+4?", "7", {"kind": "arithmetic"})
    rewards = Rewards({f"{mod}:digit_share": 1.0}, EchoTask(), {"format": 1.0})
    _, raw = rewards(["a1", "b", "c22"], [reasoning, general, reasoning], [{}] * 3)
    assert raw[f"{mod}:digit_share"] == [0.5, None, 2 / 3]
    (call,) = sys.modules[mod].CALLS
    assert call["completions"] == ["a1", "c22"] and call["kind"] == ["arithmetic", "arithmetic"]
    assert call["answer"] == ["7", "7"] and "general" not in call  # the meta's keys of the rows it sees


@pytest.mark.parametrize("body, scores, failed", [
    ("raise RuntimeError('kaboom')", [0.0, 0.0, 0.0], "a batch of 3 samples"),
    ("return [1.0, 1.0]", [0.0, 0.0, 0.0], "not a list of 3 scores"),
    ("return 1.0", [0.0, 0.0, 0.0], "not a list of 3 scores"),
    ("return '1.0'", [0.0, 0.0, 0.0], "not a list of 3 scores"),
    ("return [1.0, None, 0.5]", [1.0, 0.0, 0.5], "1 of 3 samples"),
    ("return [float('nan'), 1.0, '0.5']", [0.0, 1.0, 0.0], "2 of 3 samples"),
])
def test_a_failing_batched_reward_scores_zero_with_one_warning(module, caplog, body, scores, failed):
    mod = module(f"""
        def flaky(completions, **kwargs):
            {body}
        """)
    rewards = Rewards({f"{mod}:flaky": 1.0}, EchoTask())
    with caplog.at_level(logging.WARNING, logger="r1lab.rewards"):
        totals, raw = rewards(["a", "b", "c"], EchoTask().examples("train")[:3], [{}] * 3)
    assert raw[f"{mod}:flaky"] == scores and totals == scores
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "r1lab.rewards"]
    assert f"reward '{mod}:flaky' failed" in warning and failed in warning


def test_a_failing_per_sample_reward_warns_once(module, caplog):
    mod = module("""
        def flaky(response, example, **info):
            return {"a": None, "b": 1.0}.get(response, "0.5")
        """)
    with caplog.at_level(logging.WARNING, logger="r1lab.rewards"):
        _, raw = Rewards({f"{mod}:flaky": 1.0}, EchoTask())(["a", "b", "c"], EchoTask().examples("train")[:3], [{}] * 3)
    assert raw[f"{mod}:flaky"] == [0.0, 1.0, 0.0]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "r1lab.rewards"]
    assert f"reward '{mod}:flaky' failed on 2 of 3 samples" in warning and "NoneType" in warning


def _load_error(override: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config("r1-zero", [override])
    return str(err.value)


def test_config_load_names_what_is_wrong(module):
    mod = module()
    for override, problem in [
        ("rl.rewards.no_such_module_xyz:fn=1", "no module named 'no_such_module_xyz'"),
        (f"rl.rewards.{mod}:digit_shar=1", f"module {mod} has no attribute 'digit_shar' (did you mean 'digit_share'?)"),
        (f"rl.rewards.{mod}:NUMBER=1", f"{mod}.NUMBER is not callable"),
        (f"rl.rewards.{mod}:ambiguous=1", "cannot tell how to call ambiguous(texts, **kwargs)"),
        (f"rl.rewards.{mod}:later=1", "is async"),
        (f"rl.rewards.{mod}.digit_share=1", f"module:function, e.g. '{mod}:digit_share'"),
        ("rl.rewards.my/rewards.py:fn=1", "is named module:function"),
        ("rl.general_rewards={acuracy: 1}", "(did you mean 'accuracy'?)"),
    ]:
        err = _load_error(override)
        field = override.split("=")[0].split(".")[1]
        assert f"rl.{field}: " in err and problem in err, (override, err)


def test_a_module_that_fails_to_import_is_named(module):
    mod = module("import no_such_dependency_xyz\n")
    err = _load_error(f"rl.rewards.{mod}:digit_share=1")
    assert f"importing {mod} failed" in err and "no_such_dependency_xyz" in err


def test_modules_in_the_current_directory_are_found(tmp_path, monkeypatch):
    (tmp_path / "rw_in_cwd.py").write_text("def short(completions, **kwargs):\n    return [0.0] * len(completions)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", os.getcwd())])  # as the r1lab script starts
    try:
        assert load_config("r1-zero", ["rl.rewards.rw_in_cwd:short=1"]).rl.rewards["rw_in_cwd:short"] == 1.0
        assert sys.path[0] == str(tmp_path)
    finally:
        sys.modules.pop("rw_in_cwd", None)


def test_custom_names_round_trip_through_the_run_directory(module, tmp_path):
    mod = module()
    cfg = load_config("r1-zero", [f'rl.rewards={{"{mod}:reward_len": 0.5, accuracy: 1}}', f"rl.rewards.{mod}:finished=2"])
    assert cfg.rl.rewards == {f"{mod}:reward_len": 0.5, "accuracy": 1.0, f"{mod}:finished": 2.0}
    record_run(tmp_path, cfg)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert validate(saved) == cfg
    check_run_dir(tmp_path, cfg)  # resuming with the same config is accepted
    with pytest.raises(ConfigError, match=r"different config \(fields: rl\)"):
        check_run_dir(tmp_path, load_config("r1-zero", [f"rl.rewards.{mod}:finished=3"]))


def sample_style(response, example=None, **info):
    return 0.0


def trl_style(completions, **kwargs):
    return []


def trl_prompts_first(prompts, completions, answer, **kwargs):
    return []


def keywords_only(**kwargs):
    return []


class Judge:
    def __call__(self, completions, prompts, **_):
        return []


@pytest.mark.parametrize("fn, batched", [(sample_style, False), (lambda response, example, **_: 1.0, False),
                                         (trl_style, True), (trl_prompts_first, True), (keywords_only, True),
                                         (Judge(), True), (lambda *args, **kwargs: 0.0, False)])
def test_the_signature_rule(fn, batched):
    assert takes_batches(fn, "x") is batched
