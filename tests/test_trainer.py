import json

import pytest
import torch

from r1lab.rl import loop as trainer
from r1lab.config import RLConfig, SamplingConfig
from r1lab.models import load_model
from r1lab.rewards.registry import REWARD_FUNCTIONS
from r1lab.data.example import Example, Task


class EchoTask(Task):
    """Easy task for an untrained model: the reward below pays for digits, which the vocabulary has plenty of."""

    name = "easy"

    def examples(self, split):
        return [Example(id=str(i), prompt=f"Compute {i} + {i}", answer=str(2 * i)) for i in range(1, 9)]

    def score(self, answer, example):
        return float(answer == example.answer)


def digits(response, example=None, **_):
    return min(1.0, sum(c.isdigit() for c in response) / 6)


@pytest.fixture(autouse=True)
def digits_reward(monkeypatch):
    monkeypatch.setitem(REWARD_FUNCTIONS, "digits", lambda task, **_: digits)


def _cfg(**kw):
    base = dict(steps=12, prompts_per_step=4, group_size=8, lr=3e-2, schedule="constant", warmup_steps=0,
                sampling=SamplingConfig(temperature=1.0, max_new_tokens=8), rewards={"digits": 1.0},
                checkpoint_every=0, log_samples=1, micro_batch_size=16, minibatch_size=32)
    base.update(kw)
    return RLConfig(**base)


def _rows(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_grpo_raises_reward_and_changes_every_parameter(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = trainer.train_rl(model, tokenizer, EchoTask(), _cfg(), tmp_path, template="r1-zero", system="", seed=0)
    assert result["steps"] == 12
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p.detach(), before[n])]
    assert unchanged == []
    rows = _rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 13))
    first, last = sum(r["reward"] for r in rows[:3]) / 3, sum(r["reward"] for r in rows[-3:]) / 3
    assert last > first + 0.2, (first, last)
    for key in ("reward/digits", "completion_len_mean", "completion_len_max", "clip_frac", "kl", "entropy",
                "zero_std_frac", "reflection_rate", "language_consistency", "tokens_per_s", "step_time", "lr"):
        assert key in rows[0]
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-000012"


def test_kl_to_reference_is_logged_with_beta(tiny_model_dir, tmp_path):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    trainer.train_rl(model, tokenizer, EchoTask(), _cfg(steps=3, beta=0.1, mu=1, minibatch_size=32), tmp_path, template="r1-zero", system="")
    rows = _rows(tmp_path)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # one update per step: step 1 sees policy == reference
    assert rows[-1]["kl"] > 0


@pytest.mark.parametrize("algo", [{}, {"algorithm": "ppo", "beta": 0.05}], ids=["grpo", "ppo"])
def test_kill_and_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path, monkeypatch, algo):
    cfg = _cfg(steps=5, checkpoint_every=2, mu=2, minibatch_size=16, **algo)

    def fresh():
        return load_model(str(tiny_model_dir), device="cpu", dtype="fp32")

    straight = tmp_path / "straight"
    model_a, tok = fresh()
    trainer.train_rl(model_a, tok, EchoTask(), cfg, straight, template="r1-zero", system="", seed=3)

    resumed = tmp_path / "resumed"
    real_update, calls = trainer._update, {"n": 0}

    def crash_on_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed mid-step, after step 2's checkpoint
        return real_update(*args, **kwargs)

    monkeypatch.setattr(trainer, "_update", crash_on_step_3)
    model_b, tok = fresh()
    with pytest.raises(KeyboardInterrupt):
        trainer.train_rl(model_b, tok, EchoTask(), cfg, resumed, template="r1-zero", system="", seed=3)
    monkeypatch.setattr(trainer, "_update", real_update)
    model_c, tok = fresh()  # a new process: weights (and PPO's value model) come from the checkpoint
    trainer.train_rl(model_c, tok, EchoTask(), cfg, resumed, template="r1-zero", system="", seed=3)

    a, b = _rows(straight), _rows(resumed)
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
        from r1lab import checkpoint

        value_a = checkpoint.load_state(checkpoint.latest(straight))["value_model"]
        value_c = checkpoint.load_state(checkpoint.latest(resumed))["value_model"]
        assert value_a.keys() == value_c.keys() and "head.weight" in value_a
        for name in value_a:
            torch.testing.assert_close(value_a[name], value_c[name], atol=1e-5, rtol=1e-5, msg=name)


def test_checkpoint_write_is_atomic(tiny_model_dir, tmp_path, monkeypatch):
    """A kill while a checkpoint is being written leaves the previous one as `latest`."""
    from r1lab import checkpoint

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
