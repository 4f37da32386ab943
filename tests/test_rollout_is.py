"""Rollout/train mismatch correction (rl.rollout_is): the trainer's own old log-probs and truncated
importance weights, for engines whose log-probs are not the trainer's (vLLM)."""

import dataclasses
import math

import pytest
import torch
from helpers import digits, metrics_rows, rl_config, train

from r1lab.config import RLConfig, SamplingConfig
from r1lab.engines import make_engine
from r1lab.rewards.registry import REWARD_FUNCTIONS
from r1lab.rl.algorithms import grpo_loss, gspo_loss
from r1lab.rl.batch import Batch
from r1lab.rl.step import rollout_importance_weights


@pytest.fixture(autouse=True)
def digits_reward(monkeypatch):
    monkeypatch.setitem(REWARD_FUNCTIONS, "digits", lambda task, **_: digits)


def _batch(model, tokenizer):
    rollout = make_engine("torch", model, tokenizer, seed=0).generate(["Compute 1 + 1", "Compute 2 + 2"],
                                                                      SamplingConfig(max_new_tokens=6), n=4)
    return Batch.from_rollout(rollout, torch.zeros(8), tokenizer.pad_token_id)


@pytest.mark.parametrize("mode", ["truncate", "mask"])
def test_importance_weights_use_the_trainers_logprobs_and_cap(tiny, mode):
    model, tokenizer = tiny
    exact = _batch(model, tokenizer)
    mask = exact.completion_mask.bool()
    shift = torch.zeros_like(exact.sampling_logprobs)
    shift[0, 0], shift[1, 0] = math.log(3), -math.log(3)  # the sampler: 3x too likely, 3x too unlikely
    sampled = Batch(**{**exact.__dict__, "sampling_logprobs": exact.sampling_logprobs + shift * mask})
    cfg = RLConfig(group_size=4, rollout_is=mode, rollout_is_cap=2.0, sampling=SamplingConfig(max_new_tokens=6))
    corrected, stats = rollout_importance_weights(sampled, model, cfg, mode)
    # the old log-probs are the trainer's own, not the sampler's it was given
    torch.testing.assert_close(corrected.old_logprobs * mask, exact.sampling_logprobs * mask, atol=1e-5, rtol=1e-5)
    w = corrected.is_weights
    low, high = (1 / 3, 2.0) if mode == "truncate" else (1.0, 0.0)  # ratios 1/3 and 3, cap 2
    assert w[0, 0].item() == pytest.approx(low, rel=1e-4) and w[1, 0].item() == pytest.approx(high, abs=1e-6)
    others = mask.clone()
    others[0, 0] = others[1, 0] = False
    torch.testing.assert_close(w[others], torch.ones(int(others.sum())), atol=1e-4, rtol=1e-4)
    assert (w[~mask] == 0).all()
    assert stats["rollout_logp_diff_max"] == pytest.approx(math.log(3), rel=1e-4)
    assert stats["rollout_is_capped_frac"] == pytest.approx(1 / int(mask.sum()))


def test_losses_are_weighted_per_token():
    logprobs, old = torch.zeros(2, 3, requires_grad=True), torch.zeros(2, 3)
    mask, adv = torch.tensor([[1, 1, 0], [1, 1, 1]]), torch.tensor([1.0, -1.0])
    weights = torch.tensor([[2.0, 2.0, 0.0], [0.5, 0.5, 0.5]])
    plain, _ = grpo_loss(logprobs, old, adv, mask)
    weighted, _ = grpo_loss(logprobs, old, adv, mask, is_weights=weights)
    assert plain.item() == pytest.approx((-1 + 1) / 2) and weighted.item() == pytest.approx((-2 + 0.5) / 2)
    seq, _ = gspo_loss(logprobs, old, adv, mask, is_weights=weights)  # gspo: the sequence's mean weight
    assert seq.item() == pytest.approx((-2 + 0.5) / 2)


class InexactEngine:
    """The torch engine, declaring its rollouts' log-probs not the trainer's (as vLLM's are not)."""

    def __init__(self, engine):
        self.engine, self.tokenizer = engine, engine.tokenizer

    def generate(self, *args, **kwargs):
        return dataclasses.replace(self.engine.generate(*args, **kwargs), exact_logprobs=False)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_auto_corrects_only_an_inexact_engine(tiny_model_dir, tmp_path):
    from r1lab.models.io import load_model

    model, tok = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    train(model, tok, rl_config(steps=2), tmp_path / "inexact", engine=InexactEngine(make_engine("torch", model, tok)))
    rows = metrics_rows(tmp_path / "inexact")
    assert all(r["rollout_logp_diff_max"] < 1e-4 and r["rollout_is_capped_frac"] == 0 for r in rows)  # same kernels here
    assert all(r["sync_time"] >= 0 for r in rows)
    model, tok = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    train(model, tok, rl_config(steps=2), tmp_path / "exact")
    assert all("rollout_logp_diff_max" not in r for r in metrics_rows(tmp_path / "exact"))
