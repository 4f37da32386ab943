"""Tokens a tool wrote into an episode are read, never trained: with a loss mask, every loss of rl/algorithms.py
gives them no ratio, no KL and no gradient (change what is known about them and nothing moves)."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from r1lab.config import RLConfig, SamplingConfig
from r1lab.engines import make_engine
from r1lab.rl.algorithms import ALGORITHMS
from r1lab.rl.batch import Batch
from r1lab.rl.logprobs import forward_logprobs
from r1lab.rl.step import rl_step, score

REWARDS = torch.tensor([1.0, 0, 0, 1, 0, 0.5, 1, 0])


def _batch(model, tokenizer) -> Batch:
    rollout = make_engine("torch", model, tokenizer, seed=0).generate(["Compute 1 + 1", "Compute 2 + 2"],
                                                                      SamplingConfig(max_new_tokens=8), n=4)
    loss_mask = rollout.completion_mask.clone()
    loss_mask[:, 2:5] = 0  # tokens 2-4 of every row: a tool's result, read by the policy but not written by it
    return Batch.from_rollout(replace(rollout, loss_mask=loss_mask), REWARDS, tokenizer.pad_token_id)


def _loss_and_grads(model, batch: Batch, name: str, ref_shift=0.0):
    algorithm = ALGORITHMS[name]
    cfg = RLConfig(algorithm=name, group_size=4, beta=0.04, sampling=SamplingConfig(max_new_tokens=8))
    policy = copy.deepcopy(model)
    scored, _ = score(batch, algorithm, cfg, policy=policy, ref=copy.deepcopy(model))
    scored = replace(scored, ref_logprobs=scored.ref_logprobs + ref_shift)
    logprobs = forward_logprobs(policy, scored, 1.0)  # (N, T)
    logprobs.retain_grad()
    loss, _ = algorithm.loss(logprobs, scored.old_logprobs, scored.advantages, scored.trained_mask, beta=0.04,
                             ref_logprobs=scored.ref_logprobs, num_sequences=len(batch), max_tokens=8,
                             num_tokens=scored.trained_mask.sum())
    loss.backward()
    return loss.detach(), logprobs.grad, [p.grad.clone() for p in policy.parameters()]


@pytest.mark.parametrize("name", [n for n, a in ALGORITHMS.items() if not a.needs_value_model])
def test_tool_result_tokens_have_no_ratio_no_kl_and_no_gradient(tiny, name):
    model, tokenizer = tiny
    batch = _batch(model, tokenizer)
    masked = (batch.completion_mask == 1) & (batch.loss_mask == 0)
    assert masked.any()
    loss, logprob_grads, grads = _loss_and_grads(model, batch, name)
    assert (logprob_grads[masked] == 0).all() and (logprob_grads[batch.loss_mask == 1] != 0).any()
    # What is known of those tokens changes: their old log-probs (the ratio's denominator) and the reference's
    # (the KL term) move far; the loss and every gradient do not.
    moved = replace(batch, sampling_logprobs=batch.sampling_logprobs - 3.0 * masked)
    loss_moved, _, grads_moved = _loss_and_grads(model, moved, name, ref_shift=2.0 * masked)
    assert torch.equal(loss, loss_moved)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_moved))


def test_a_step_with_tool_results_trains_and_ppo_refuses_them(tiny):
    model, tokenizer = tiny
    batch = _batch(model, tokenizer)
    for name in ("grpo", "dapo"):
        policy = copy.deepcopy(model)
        cfg = RLConfig(algorithm=name, group_size=4, sampling=SamplingConfig(max_new_tokens=8))
        stats = rl_step(policy, torch.optim.SGD(policy.parameters(), lr=0.1), batch, cfg, ALGORITHMS[name])
        assert torch.isfinite(torch.tensor(stats["loss"]))
    with pytest.raises(ValueError, match="ppo's GAE"):
        score(batch, ALGORITHMS["ppo"], RLConfig(algorithm="ppo", group_size=4), policy=model, value_model=object())
