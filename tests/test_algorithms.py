import math

import pytest
import torch

from r1lab.rl.algorithms import group_advantages, grpo_loss, kl_k3


def test_group_advantages_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0])
    adv = group_advantages(rewards, group_size=2)
    # group [1, 0]: mean 0.5, unbiased std sqrt(0.5) -> +-0.5 / 0.70711
    s = 0.5 / (math.sqrt(0.5) + 1e-4)
    assert torch.allclose(adv, torch.tensor([s, -s, -s, s, 0.0, 0.0]), atol=1e-6)


def test_group_advantages_three_members():
    adv = group_advantages(torch.tensor([3.0, 0.0, 0.0]), group_size=3)
    mean, std = 1.0, math.sqrt((4 + 1 + 1) / 2)
    assert torch.allclose(adv, torch.tensor([2 / (std + 1e-4), -1 / (std + 1e-4), -1 / (std + 1e-4)]), atol=1e-6)
    assert abs(float(adv.sum())) < 1e-5 and mean == 1.0


def test_kl_k3_values():
    lp, ref = torch.log(torch.tensor([0.5, 0.5])), torch.log(torch.tensor([0.25, 0.5]))
    kl = kl_k3(lp, ref)
    assert kl[0].item() == pytest.approx(0.5 - math.log(0.5) - 1, abs=1e-6)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)
    assert (kl_k3(torch.randn(100), torch.randn(100)) >= 0).all()


def _two_tokens(ratios, extra=0.0):
    old = torch.log(torch.tensor([[0.3, 0.4, 0.5]]))
    new = old + torch.log(torch.tensor([ratios + [7.0]]))  # the third token is padding: ignored
    return new.requires_grad_(), old, torch.tensor([[1, 1, 0]])


def test_grpo_loss_positive_advantage_clips_high_ratio():
    new, old, mask = _two_tokens([1.5, 0.9])
    loss, stats = grpo_loss(new, old, torch.tensor([1.0]), mask, eps=0.2)
    # token 1: min(1.5, 1.2) = 1.2; token 2: min(0.9, 0.9) = 0.9; mean over 2 tokens
    assert loss.item() == pytest.approx(-(1.2 + 0.9) / 2, abs=1e-6)
    assert stats["clip_frac"] == pytest.approx(0.5)
    loss.backward()
    # the clipped token has no gradient; the other gets -A * ratio / |o|
    assert new.grad[0, 0].item() == pytest.approx(0.0, abs=1e-7)
    assert new.grad[0, 1].item() == pytest.approx(-0.9 / 2, abs=1e-6)
    assert new.grad[0, 2].item() == 0.0


def test_grpo_loss_negative_advantage_and_clip_higher():
    new, old, mask = _two_tokens([1.5, 0.7])
    loss, _ = grpo_loss(new, old, torch.tensor([-1.0]), mask, eps=0.2)
    # token 1: min(-1.5, -1.2) = -1.5; token 2: min(-0.7, -0.8) = -0.8
    assert loss.item() == pytest.approx((1.5 + 0.8) / 2, abs=1e-6)
    new, old, mask = _two_tokens([1.5, 0.9])
    loss, _ = grpo_loss(new, old, torch.tensor([1.0]), mask, eps=0.2, eps_high=0.6)
    assert loss.item() == pytest.approx(-(1.5 + 0.9) / 2, abs=1e-6)


def test_grpo_loss_length_normalised_per_completion_and_kl():
    logprobs = torch.zeros(2, 3)
    old = torch.zeros(2, 3)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, 1.0])
    loss, _ = grpo_loss(logprobs, old, adv, mask)
    assert loss.item() == pytest.approx(-1.0)  # each completion's token mean is 1, whatever its length
    ref = torch.log(torch.full((2, 3), 0.5))
    loss_kl, stats = grpo_loss(logprobs, old, adv, mask, beta=0.1, ref_logprobs=ref)
    k3 = 0.5 - math.log(0.5) - 1
    assert loss_kl.item() == pytest.approx(-1.0 + 0.1 * k3, abs=1e-6)
    assert stats["kl"] == pytest.approx(k3, abs=1e-6)
    with pytest.raises(ValueError, match="ref_logprobs"):
        grpo_loss(logprobs, old, adv, mask, beta=0.1)
