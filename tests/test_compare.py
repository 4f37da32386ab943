"""`r1lab compare` and `r1lab control` through the CLI, with micro budgets."""

import json

import pytest
from helpers import MICRO

from r1lab.experiments.compare import CompareSpec, load_spec, read_curves, time_to_threshold
from r1lab.ui.cli import main


def test_time_to_threshold_uses_the_smoothed_curve():
    rows = [{"step": i + 1, "wall_seconds": 2.0 * (i + 1), "accuracy": a}
            for i, a in enumerate([0.0, 0.0, 1.0, 0.0, 0.0, 0.6, 0.6, 0.6, 0.6, 0.6])]
    # window 5: the lone 1.0 at step 3 smooths to 0.2; step 7's window still holds a 0 (0.48);
    # step 8's is all plateau (0.6)
    assert time_to_threshold(rows, "accuracy", 0.5) == (8, 16.0)
    assert time_to_threshold(rows, "accuracy", 0.9) == (None, None)
    assert time_to_threshold(rows, "accuracy", None) == (None, None)


def test_held_out_curve_on_one_step_axis_across_stages(tmp_path):
    rows = [{"stage": "a", "step": 0, "eval_pass@1": 0.2}, {"stage": "a", "step": 1, "step_time": 2.0, "accuracy": 0.1},
            {"stage": "a", "step": 2, "step_time": 2.0, "accuracy": 0.3, "eval_pass@1": 0.7},
            {"stage": "b", "step": 0, "eval_pass@1": 0.1}, {"stage": "b", "step": 1, "step_time": 3.0, "eval_pass@1": 0.9}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    curves = read_curves("recipe", tmp_path)
    assert [r["step"] for r in curves] == [0, 1, 2, 2, 3]  # stage b's step 0 is where a ended
    assert [r["wall_seconds"] for r in curves] == [0.0, 2.0, 4.0, 4.0, 7.0]
    points = [r for r in curves if "eval_pass@1" in r]
    assert time_to_threshold(points, "eval_pass@1", 0.4) == (2, 4.0)  # smoothed: 0.33 at step 0, 0.475 at step 2


def test_shipped_specs_load_and_bad_ones_are_named(tmp_path):
    spec = load_spec("ppo-vs-grpo", ["rl.steps=5"])
    assert list(spec.variants) == ["grpo", "ppo-lam0.95", "ppo-lam1.0"] and spec.overrides[-1] == "rl.steps=5"
    assert load_spec("cartpole").kind == "control" and "dapo" in load_spec("grpo-family").variants
    aha = load_spec("aha-ablation")
    assert aha.metric == "eval_pass@1" and aha.variants["no-careful-styles"] == ["pretrain.careful_styles=false"]
    with pytest.raises(ValueError, match="unknown comparison 'nope'"):
        load_spec("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("compare: x\nvariants: {}\n")
    with pytest.raises(ValueError, match="variants"):
        load_spec(str(bad))
    with pytest.raises(ValueError):
        CompareSpec(compare="x", variants={"../up": []})


@pytest.mark.slow
def test_compare_recipe_variants(tiny_model_dir, tmp_path, capsys):
    spec = tmp_path / "algos.yaml"
    spec.write_text("compare: algos\nrecipe: r1-zero\nthreshold: 0.5\n"
                    "variants:\n  grpo: []\n  ppo-lam1: [rl.algorithm=ppo, rl.lam=1.0]\n")
    micro = [o for o in MICRO if not o.startswith(("model=", "pretrain."))]
    out = tmp_path / "cmp"
    assert main(["compare", str(spec), "--out", str(out), f"model={tiny_model_dir}", *micro]) == 0
    result = json.loads((out / "compare.json").read_text())
    assert [r["variant"] for r in result["table"]] == ["grpo", "ppo-lam1"]
    for row in result["table"]:
        assert 0.0 <= row["pass@1"] <= 1.0 and row["wall_seconds"] > 0
    ppo_metrics = (out / "ppo-lam1" / "metrics.jsonl").read_text()
    assert "value_loss" in ppo_metrics and "value_loss" not in (out / "grpo" / "metrics.jsonl").read_text()
    assert (out / "report.html").exists() and (out / "plots" / "accuracy.png").exists()
    assert main(["compare", str(spec), "--out", str(out), f"model={tiny_model_dir}", *micro, "rl.algorithm=nope"]) == 2
    assert "rl.algorithm" in capsys.readouterr().err


@pytest.mark.slow
def test_control_command_and_control_compare(tmp_path, capsys):
    budget = ["max_env_steps=600", "eval_every=300", "eval_episodes=2", "groups=2", "group_size=2", "num_envs=2",
              "rollout_steps=32"]
    out = tmp_path / "ctl"
    assert main(["control", "--algo", "grpo", "--env", "CartPole-v1", "--out", str(out), *budget]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert {"final_mean_return", "env_steps", "wall_seconds"} <= set(summary) and summary["algo"] == "grpo"
    assert main(["control", "--algo", "ppo", "--env", "Pendulum-v9", "--out", str(tmp_path / "x")]) == 2
    assert "Pendulum-v9" in capsys.readouterr().err

    cmp = tmp_path / "cmp"
    assert main(["compare", "cartpole", "--out", str(cmp), *budget]) == 0
    result = json.loads((cmp / "compare.json").read_text())
    assert [r["variant"] for r in result["table"]] == ["grpo", "ppo"]
    assert all(r["env_steps"] > 0 for r in result["table"])
    assert (cmp / "plots" / "return_steps.png").exists() and (cmp / "plots" / "return_time.png").exists()
