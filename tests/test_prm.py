"""The process and outcome reward models (rewards/learned.py, sft/scorer.py, tinyworld/steps.py): the checker's step
labels on crafted solutions, a scorer that learns, the config that wires a reward-model stage to an rl stage."""

import json

import pytest
import torch

from r1lab.config import ConfigError
from r1lab.data.example import Example
from r1lab.data.steps import split_steps, step_ends
from r1lab.tinyworld.problems import TinyWorldTask

step_labels = TinyWorldTask("tinyworld/arithmetic", train_size=10, test_size=2).step_labels

# 7 * x + 23 = 72: x = 7
EQ = Example(id="e", prompt="Solve 7 * x + 23 = 72", answer="7", meta={"kind": "arithmetic", "parts": (7, "+", 23, 72, 7)})
# Make 56 from 3, 5, 7: (3 + 5) * 7
CD = Example(id="c", prompt="Make 56 from 3, 5, 7", answer="(3 + 5) * 7",
             meta={"kind": "countdown", "numbers": [3, 5, 7], "target": 56})


def labelled(response, example):
    return list(zip([s.strip() for s in split_steps(response)], step_labels(response, example)))


def test_steps_are_sentences_then_the_answer_and_cover_the_response():
    r = "<think> x is about 6. check 7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7, too small. wait, try 7: 3.5 </think> <answer> 7 </answer>"
    steps = split_steps(r)
    assert "".join(steps) == r and step_ends(r)[-1] == len(r)
    assert [s.strip() for s in steps] == ["<think> x is about 6.", "check 7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7, too small.",
                                          "wait, try 7:", "3.5 </think>", "<answer> 7 </answer>"]
    assert split_steps("no sentence end at all") == ["no sentence end at all"]


def test_the_checker_labels_each_arithmetic_step():
    right = ("<think> x is about 6. check 7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7, too small. wait, try 7: "
             "7 * 7 = 49, 49 + 23 = 72, 72 - 72 = 0 ok. </think> <answer> 7 </answer>")
    assert all(label for _, label in labelled(right, EQ))  # a corrected wrong estimate states nothing false
    cases = {
        "7 * 6 = 43, 43 + 23 = 66, 72 - 66 = 6, too small.": False,  # a wrong product
        "7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7, too big.": False,  # the verdict does not follow the difference
        "7 * 6 = 42, 42 + 32 = 74, 72 - 74 = -2, too big.": False,  # b miscopied
        "7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7, ok.": False,  # ok on a miss
        "7 * 7 = 49, 49 + 23 = 72, 72 - 72 = 0 ok.": True,
        "7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7, not 72.": True,
        "7 * = 42 + 23 =": False,  # garbled arithmetic
    }
    for line, want in cases.items():
        response = f"<think> x is about 6. check {line} </think> <answer> 6 </answer>"
        assert labelled(response, EQ)[1] == (f"check {line} </think>", want), line
        assert labelled(response, EQ)[-1] == ("<answer> 6 </answer>", False)  # 6 is not x
    assert labelled("<think> x is about 7.", EQ) == [("<think> x is about 7.", False)]  # never answered


def test_the_checker_labels_countdown_tries_and_the_answer():
    response = ("<think> try 3 + 5 = 8, 8 + 7 = 15 no. try 3 + 5 = 8, 8 * 7 = 56 yes. </think> "
                "<answer> (3 + 5) * 7 </answer>")
    assert [label for _, label in labelled(response, CD)] == [True, True, True]
    assert [label for _, label in labelled(response.replace("15 no", "15 yes"), CD)] == [False, True, True]
    assert [label for _, label in labelled(response.replace("8 + 7 = 15", "8 + 7 = 16"), CD)] == [False, True, True]
    assert [label for _, label in labelled(response.replace("try 3 + 5 = 8, 8 + 7", "try 3 + 6 = 9, 9 + 7")
                                                       .replace("= 16", "= 16"), CD)][0] is False  # 6 is not a number given
    assert labelled("<think> maybe (3 + 5) * 7. </think> <answer> (3 + 5) * 8 </answer>", CD)[-1][1] is False


def _scorer(tiny_model_dir, tmp_path):
    from transformers import AutoModelForTokenClassification

    from r1lab.models.io import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    torch.manual_seed(0)
    return AutoModelForTokenClassification.from_pretrained(str(tiny_model_dir), num_labels=1), tokenizer


def _rows(n: int = 24):
    """Right and wrong checks of one equation, labelled by the checker."""
    rows = []
    for i in range(n):
        guess = 5 + i % 4
        value = 7 * guess + 23
        verdict = "ok" if value == 72 else ("too small" if value < 72 else "too big")
        if i % 3 == 0:  # a wrong verdict: the line states something false
            verdict = "ok" if verdict != "ok" else "too big"
        response = (f"<think> x is about {guess}. check 7 * {guess} = {7 * guess}, {7 * guess} + 23 = {value}, "
                    f"72 - {value} = {72 - value}, {verdict}. </think> <answer> {guess} </answer>")
        rows.append({"id": f"p{i}", "prompt": EQ.prompt, "response": response, "labels": step_labels(response, EQ)})
    return rows


def test_a_process_reward_model_learns_its_labels(tiny_model_dir, tmp_path):
    from r1lab.config import SFTConfig
    from r1lab.sft.scorer import encode, evaluate_scorer, train_scorer

    model, tokenizer = _scorer(tiny_model_dir, tmp_path)
    rows = _rows()
    assert {label for row in rows for label in row["labels"]} == {True, False}
    cfg = SFTConfig(epochs=30, lr=3e-3, batch_size=8, warmup_steps=0, eval_fraction=0.2)
    result = train_scorer(model, tokenizer, rows, cfg, tmp_path / "prm", seed=0, stage="prm")
    losses = [r["loss"] for r in map(json.loads, (tmp_path / "prm" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5  # the loss falls
    seen = evaluate_scorer(model, encode(rows, tokenizer, None), tokenizer.pad_token_id)
    assert seen["step_accuracy"] > 0.9 and result["after"]["steps"] > 0


def test_scores_are_read_at_each_steps_last_token(tiny_model_dir, tmp_path):
    """A scorer saved like a reward-model stage's: process_min is the lowest step score, process_last the last."""
    from r1lab.models.io import save_model
    from r1lab.rewards.learned import StepScorer, learned_reward

    model, tokenizer = _scorer(tiny_model_dir, tmp_path)
    save_model(model, tokenizer, tmp_path / "prm", {"scorer": "process"})
    response = _rows(1)[0]["response"]
    scores = StepScorer(str(tmp_path / "prm"), want="process").step_scores([EQ.prompt], [response])[0]
    assert len(scores) == len(split_steps(response)) and all(0 < s < 1 for s in scores)
    assert learned_reward("process_min", str(tmp_path / "prm"))([response], [EQ.prompt]) == [pytest.approx(min(scores))]
    assert learned_reward("process_last", str(tmp_path / "prm"))([response], [EQ.prompt]) == [pytest.approx(scores[-1])]
    with pytest.raises(ValueError, match="supervision: process, and the outcome rewards need one with supervision: outcome"):
        learned_reward("outcome", str(tmp_path / "prm"))
    with pytest.raises(ValueError, match="is no scorer r1lab trained"):
        StepScorer(str(tiny_model_dir), want="process")


def test_a_reward_model_stage_is_wired_and_checked_when_the_config_loads():
    from r1lab.recipes.load import load_config

    cfg = load_config("r1-prm")
    assert cfg.stage_rl(cfg.stages[-1]).reward_model == "prm" and cfg.stages[1].supervision == "process"
    bad = {
        "rl.reward_model=null": "needs rl.reward_model",
        "rl.reward_model=base-samples": "not an earlier reward-model stage",
        "stages.prm.supervision=outcome": "read process scores, and stage prm trains a scorer with supervision: outcome",
        "stages.prm.data=[rl]": "refers to 'rl', which is not",
        "stages.rl.init=prm": "makes a reward model, not a policy",
    }
    for override, message in bad.items():
        with pytest.raises(ConfigError, match=message):
            load_config("r1-prm", [override])
    load_config("r1-prm", ["stages.prm.supervision=outcome", "rl.rewards={outcome: 1.0, accuracy: 0.0}"])


def test_a_scorer_given_by_path_is_checked_before_any_model_work(tiny_model_dir, tmp_path):
    from r1lab.models.io import save_model
    from r1lab.recipes.load import load_config
    from r1lab.recipes.preflight import check_run

    for path in ("/nonexistent/prm", str(tiny_model_dir)):  # no directory; a model that is no scorer
        with pytest.raises(ConfigError, match=r"stages.rl.rl.reward_model: .* is not a process scorer r1lab trained"):
            check_run(load_config("r1-prm", [f"rl.reward_model={path}"]))
    model, tokenizer = _scorer(tiny_model_dir, tmp_path)
    save_model(model, tokenizer, tmp_path / "prm", {"scorer": "process"})
    check_run(load_config("r1-prm", [f"rl.reward_model={tmp_path / 'prm'}"]))


@pytest.mark.slow
def test_r1_prm_runs_end_to_end_and_logs_the_learned_reward_beside_the_truth(tmp_path):
    from helpers import MICRO

    from r1lab.ui.cli import main

    for name, extra in (("prm", []), ("orm", ["stages.prm.supervision=outcome", "rl.rewards={outcome: 1.0, accuracy: 0.0}"])):
        out = tmp_path / name
        assert main(["run", "r1-prm", "--out", str(out), *MICRO, "stages.base-samples.prompts=24", "sft.epochs=1",
                     *extra]) == 0
        meta = json.loads((out / "prm" / "final" / "r1lab.json").read_text())
        assert meta["scorer"] == ("outcome" if name == "orm" else "process")
        rows = [json.loads(line) for line in (out / "rl" / "metrics.jsonl").read_text().splitlines()]
        learned = "reward/outcome" if name == "orm" else "reward/process_min"
        assert all(learned in r and "accuracy" in r for r in rows if "reward" in r)
        assert any("eval_step_accuracy" in json.loads(line) for line in (out / "prm" / "metrics.jsonl").read_text().splitlines())


def test_samples_where_the_learned_reward_and_the_truth_disagree_are_kept():
    from types import SimpleNamespace

    from r1lab.rl.metrics import step_samples
    from r1lab.rl.rollouts import Scored

    responses = ["right, judged right", "wrong, judged right", "right, judged wrong", "wrong, judged wrong"]
    seen = Scored(rollout=None, examples=[EQ] * 4, responses=responses, rewards=torch.tensor([0.9, 0.8, 0.1, 0.2]),
                  per_fn={"process_min": [0.9, 0.8, 0.1, 0.2], "accuracy": [1.0, 0.0, 1.0, 0.0]})
    rows = step_samples("rl", 7, seen, SimpleNamespace(group_size=2, log_samples=4))
    assert [r["response"] for r in rows if not r.get("disagree")] == [responses[0], responses[2]]  # a group's first
    hacked = [r for r in rows if r.get("disagree")]
    assert [(r["response"], r["learned_reward"], r["correct"]) for r in hacked] == [
        ("wrong, judged right", 0.8, False), ("right, judged wrong", 0.1, True)]
    del seen.per_fn["process_min"]  # the rule reward alone: nothing to disagree with
    assert not any(r.get("disagree") for r in step_samples("rl", 7, seen, SimpleNamespace(group_size=2, log_samples=4)))
