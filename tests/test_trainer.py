import pytest
import torch
from helpers import InterruptedEngine, digits, metrics_rows, rl_config, train

from r1lab.engines import make_engine
from r1lab.models.io import load_model
from r1lab.rewards.registry import REWARD_FUNCTIONS


@pytest.fixture(autouse=True)
def digits_reward(monkeypatch):
    monkeypatch.setitem(REWARD_FUNCTIONS, "digits", lambda task, **_: digits)


def test_grpo_raises_reward_and_changes_every_parameter(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train(model, tokenizer, rl_config(), tmp_path)
    assert result["steps"] == 12
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert unchanged == []
    rows = metrics_rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 13))
    first, last = sum(r["reward"] for r in rows[:3]) / 3, sum(r["reward"] for r in rows[-3:]) / 3
    assert last > first + 0.2, (first, last)
    for key in ("reward/digits", "completion_len_mean", "completion_len_max", "clip_frac", "kl", "entropy",
                "zero_std_frac", "reflection_rate", "language_consistency", "tokens_per_s", "step_time", "lr"):
        assert key in rows[0]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-000012"


def test_kl_to_reference_is_logged_with_beta(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    train(model, tokenizer, rl_config(steps=3, beta=0.1, mu=1, minibatch_size=32), tmp_path)
    rows = metrics_rows(tmp_path)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # one update per step: step 1 sees policy == reference
    assert rows[-1]["kl"] > 0


@pytest.mark.parametrize("algo", [{}, {"algorithm": "ppo", "beta": 0.05}], ids=["grpo", "ppo"])
def test_kill_and_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path, algo):
    cfg = rl_config(steps=5, checkpoint_every=2, mu=2, minibatch_size=16, **algo)

    def fresh():
        return load_model(str(tiny_model_dir), device="cpu", dtype="fp32")

    straight = tmp_path / "straight"
    model_a, tok = fresh()
    train(model_a, tok, cfg, straight, seed=3)

    resumed = tmp_path / "resumed"
    model_b, tok = fresh()
    with pytest.raises(KeyboardInterrupt):  # killed in step 3, after step 2's checkpoint
        train(model_b, tok, cfg, resumed, seed=3, engine=InterruptedEngine(make_engine("torch", model_b, tok, seed=3), 3))
    model_c, tok = fresh()  # a new process: weights (and PPO's value model) come from the checkpoint
    train(model_c, tok, cfg, resumed, seed=3)

    a, b = metrics_rows(straight), metrics_rows(resumed)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5]
    keys = ("loss", "value_loss", "explained_variance", "kl") if algo else ("loss",)
    for ra, rb in zip(a, b):
        assert ra["reward"] == pytest.approx(rb["reward"], abs=1e-6)
        assert ra["completion_len_mean"] == rb["completion_len_mean"]
        for key in keys:
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), key
    for (name, pa), pc in zip(model_a.named_parameters(), model_c.parameters()):
        torch.testing.assert_close(pa, pc, atol=1e-5, rtol=1e-5, msg=name)
    if algo:
        from r1lab.store import checkpoint

        value_a = checkpoint.load_state(checkpoint.latest(straight))["value_model"]
        value_c = checkpoint.load_state(checkpoint.latest(resumed))["value_model"]
        assert value_a.keys() == value_c.keys() and "head.weight" in value_a
        for name in value_a:
            torch.testing.assert_close(value_a[name], value_c[name], atol=1e-5, rtol=1e-5, msg=name)


def test_checkpoint_write_is_atomic(tiny_model_dir, tmp_path, monkeypatch):
    """A kill while a checkpoint is being written leaves the previous one as `latest`."""
    from r1lab.store import checkpoint

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    checkpoint.save(tmp_path, 2, model, tokenizer, {"step": 2})

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 4, model, tokenizer, {"step": 4})
    monkeypatch.undo()
    assert checkpoint.latest(tmp_path).name == "step-000002"
    assert checkpoint.load_state(checkpoint.latest(tmp_path))["step"] == 2


def test_held_out_evaluation_rows_before_every_n_steps_and_at_the_end(tiny_model_dir, tmp_path):
    from helpers import EchoTask

    from r1lab.rl.loop import train_rl

    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    engine = make_engine("torch", model, tokenizer, seed=0)
    calls = []

    def held_out():
        calls.append(len(calls))
        return {"eval_pass@1": 0.1 * len(calls), "eval_length": 10.0, "eval_reflection": 0.0}

    train_rl(model, tokenizer, EchoTask(), rl_config(steps=5), tmp_path, engine=engine, template="r1-zero", system="",
             held_out=held_out, held_out_every=2)
    rows = metrics_rows(tmp_path)
    evals = [(r["step"], r["eval_pass@1"]) for r in rows if "eval_pass@1" in r]
    assert evals == [(0, pytest.approx(0.1)), (2, pytest.approx(0.2)), (4, pytest.approx(0.3)), (5, pytest.approx(0.4))]
    assert "reward" not in rows[0] and [r["step"] for r in rows[1:]] == [1, 2, 3, 4, 5]  # step 0: before training
