"""The GRPO family and PPO (RLConfig.algorithm): hand-computed advantages and losses, then short runs."""

import copy
import math

import pytest
import torch
from helpers import EchoTask, digits, metrics_rows, rl_config, train

from r1lab.config import ConfigError, RLConfig, SamplingConfig
from r1lab.engines import make_engine
from r1lab.recipes.load import load_config
from r1lab.rewards.registry import REWARD_FUNCTIONS, Rewards
from r1lab.rl import algorithms as alg
from r1lab.rl import ppo
from r1lab.rl.batch import Batch
from r1lab.rl.ppo import ValueModel
from r1lab.rl.rollouts import PromptStream, sample_step
from r1lab.rl.step import rl_step

ALGORITHMS = list(alg.ALGORITHMS)


# ---------------------------------------------------------------------------------------------
# Advantages


def test_every_algorithm_has_a_loss_and_an_advantage():
    for name, record in alg.ALGORITHMS.items():
        assert callable(record.loss), name
    assert [n for n, r in alg.ALGORITHMS.items() if r.needs_value_model] == ["ppo"]  # ppo's come from GAE
    assert [n for n, r in alg.ALGORITHMS.items() if r.resample_zero_spread] == ["dapo"]


def test_group_family_advantages_hand_computed():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert torch.allclose(alg.leave_one_out_advantages(rewards, 4), torch.tensor([2, -2, -2, 2]) / 3)
    assert torch.allclose(alg.group_mean_advantages(rewards, 4), torch.tensor([0.5, -0.5, -0.5, 0.5]))
    s = 0.5 / (math.sqrt(1 / 3) + 1e-4)  # grpo: unbiased std of [1, 0, 0, 1] is sqrt(1/3)
    for name in ("grpo", "dapo", "gspo"):
        assert torch.allclose(alg.ALGORITHMS[name].advantages(rewards, 4), torch.tensor([s, -s, -s, s]), atol=1e-6)


def test_rloo_baseline_excludes_the_sample_itself():
    rewards = torch.tensor([3.0, 0.0, 0.0, 2.0, 2.0, 2.0])  # G = 3
    adv = alg.leave_one_out_advantages(rewards, 3)
    assert torch.allclose(adv, torch.tensor([3.0, -1.5, -1.5, 0.0, 0.0, 0.0]))  # 3 - (0+0)/2; 0 - (3+0)/2


def test_reinforce_pp_normalises_over_the_batch_not_the_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    adv = alg.batch_advantages(rewards, 4)
    std = math.sqrt((6 * 0.25**2 + 2 * 0.75**2) / 7)  # batch mean 0.75, unbiased std
    expected = torch.tensor([0.25, -0.75, -0.75, 0.25, 0.25, 0.25, 0.25, 0.25]) / (std + 1e-4)
    assert torch.allclose(adv, expected, atol=1e-6)
    assert (adv[4:] > 0).all()  # an all-equal group still gets a signal: no group baseline


# ---------------------------------------------------------------------------------------------
# PPO pieces


def test_token_rewards_pay_at_the_last_token_minus_kl():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    kl = torch.tensor([[0.1, 0.2, 0.3, 5.0], [0.4, 5.0, 5.0, 5.0]])
    out = ppo.token_rewards(torch.tensor([2.0, -1.0]), mask, kl, beta=0.5)
    assert torch.allclose(out, torch.tensor([[-0.05, -0.1, 2 - 0.15, 0.0], [-1 - 0.2, 0.0, 0.0, 0.0]]))
    assert torch.equal(ppo.token_rewards(torch.tensor([2.0, -1.0]), mask), torch.tensor([[0, 0, 2.0, 0], [-1.0, 0, 0, 0]]))


def test_gae_hand_computed():
    # row 0: 3 tokens, reward 1 at the end, V = [0.5, 0.6, 0.7]
    #   deltas: t2 = 1 - 0.7 = 0.3; t1 = 0.7 - 0.6 = 0.1; t0 = 0.6 - 0.5 = 0.1
    #   A2 = 0.3, A1 = 0.1 + 0.95 * 0.3 = 0.385, A0 = 0.1 + 0.95 * 0.385 = 0.46575
    # row 1: 2 tokens then padding (its value 9 must be ignored): A1 = 1 - 0.4 = 0.6, A0 = 0.2 + 0.95 * 0.6 = 0.77
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 0.4, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = ppo.token_gae(rewards, values, mask, gamma=1.0, lam=0.95)
    assert torch.allclose(adv, torch.tensor([[0.46575, 0.385, 0.3], [0.77, 0.6, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[0.96575, 0.985, 1.0], [0.97, 1.0, 0.0]]))
    # lam = 1, V = 0: the discounted reward-to-go
    adv, _ = ppo.token_gae(torch.tensor([[0.0, 0.0, 1.0]]), torch.zeros(1, 3), torch.ones(1, 3), gamma=0.5, lam=1.0)
    assert torch.allclose(adv, torch.tensor([[0.25, 0.5, 1.0]]))


def test_whiten_and_explained_variance():
    x, mask = torch.tensor([[1.0, 2.0, 7.0], [3.0, 100.0, 100.0]]), torch.tensor([[1, 1, 0], [1, 0, 0]])
    w = ppo.whiten(x, mask)
    assert float(alg.masked_mean(w, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(alg.masked_mean(w**2, mask)) == pytest.approx(1.0, abs=1e-5)
    assert (w[mask == 0] == 0).all()
    returns = torch.tensor([[1.0, 2.0, 3.0]])
    ones = torch.ones(1, 3)
    assert ppo.explained_variance(returns, returns, ones) == pytest.approx(1.0)
    assert ppo.explained_variance(torch.full((1, 3), 5.0), returns, ones) == pytest.approx(0.0)
    assert ppo.explained_variance(returns, torch.ones(1, 3), ones) is None  # constant returns: nothing to explain


def test_value_loss_clips_values_that_move_too_far():
    old = torch.zeros(1, 3)
    returns = torch.tensor([[1.0, 0.0, 4.0]])
    values = torch.tensor([[0.5, 0.1, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = ppo.value_loss(values, old, returns, value_clip=0.2, mask=mask)
    # token 0: unclipped (0.5-1)^2 = 0.25, clipped (0.2-1)^2 = 0.64 -> max 0.64; token 1: both 0.01
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.01) / 2)
    assert stats["value_clip_frac"] == pytest.approx(0.5)
    loss.backward()
    assert values.grad[0, 0] == 0.0  # the clipped branch won: no gradient pushes V further from old
    assert values.grad[0, 1].item() == pytest.approx(0.5 * 2 * 0.1 / 2)


# ---------------------------------------------------------------------------------------------
# Losses


def test_clip_range_defaults():
    A = alg.ALGORITHMS
    assert A["grpo"].clip_range() == (0.2, 0.2)
    assert A["dapo"].clip_range() == (0.2, 0.28)
    assert A["gspo"].clip_range() == (3e-4, 4e-4)
    assert A["dapo"].clip_range(eps=0.1) == (0.1, 0.28)
    assert A["ppo"].clip_range(eps=0.1) == (0.1, 0.1)
    assert A["gspo"].clip_range(1e-3, 2e-3) == (1e-3, 2e-3)


def test_loss_normalisation_across_completions_of_different_lengths():
    """A 1-token completion with A = +1 and a 3-token one with A = -1, ratio 1 everywhere."""
    logprobs, old = torch.zeros(2, 3), torch.zeros(2, 3)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, -1.0])
    grpo, _ = alg.grpo_loss(logprobs, old, adv, mask)
    dapo, _ = alg.token_level_loss(logprobs, old, adv, mask)
    dr, _ = alg.dr_grpo_loss(logprobs, old, adv, mask, max_tokens=4)
    assert grpo.item() == pytest.approx((-1 + 1) / 2)  # each completion's token mean counts once
    assert dapo.item() == pytest.approx((-1 + 3) / 4)  # every token counts once
    assert dr.item() == pytest.approx((-1 + 3) / (4 * 2))  # sum / (max_tokens * completions)
    # micro-batches: each row's share with the whole batch's normaliser adds up to the batch loss
    for loss_fn, full in ((alg.token_level_loss, dapo), (alg.dr_grpo_loss, dr), (alg.grpo_loss, grpo)):
        parts = [loss_fn(logprobs[i : i + 1], old[i : i + 1], adv[i : i + 1], mask[i : i + 1], num_tokens=4,
                         num_sequences=2, max_tokens=4)[0] for i in range(2)]
        assert sum(p.item() for p in parts) == pytest.approx(full.item())


def test_dapo_clip_higher_lets_a_positive_token_grow_further():
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[1.25]]))
    mask, adv = torch.ones(1, 1), torch.tensor([1.0])
    eps, eps_high = alg.ALGORITHMS["dapo"].clip_range()
    loss, stats = alg.token_level_loss(new, old, adv, mask, eps=eps, eps_high=eps_high)
    assert loss.item() == pytest.approx(-1.25) and stats["clip_frac"] == 0.0
    loss, stats = alg.token_level_loss(new, old, adv, mask, eps=0.2)
    assert loss.item() == pytest.approx(-1.2) and stats["clip_frac"] == 1.0


def test_gspo_sequence_ratio_and_clip():
    old = torch.log(torch.tensor([[0.3, 0.4, 0.5], [0.3, 0.4, 0.5]]))
    token_ratios = torch.tensor([[1.5, 0.6, 7.0], [1.0002, 1.0, 1.0]])  # row 0's third token is padding
    new = (old + torch.log(token_ratios)).requires_grad_()
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    adv = torch.tensor([1.0, 1.0])
    loss, stats = alg.gspo_loss(new, old, adv, mask, eps=3e-4, eps_high=4e-4)
    # sequence ratios: geometric means of the token ratios over the completion
    s0, s1 = math.sqrt(1.5 * 0.6), (1.0002) ** (1 / 3)
    assert s0 < 1 - 3e-4  # 0.9487: for A > 0, min(s * A, clip(s) * A) = s * A, not clipped
    assert loss.item() == pytest.approx(-(s0 + s1) / 2, abs=1e-6)
    assert stats["clip_frac"] == 0.0
    token_ratios[1, 0] = 1.01  # s1 = 1.0033 > 1 + 4e-4: the whole sequence is clipped
    new = (old + torch.log(token_ratios)).requires_grad_()
    loss, stats = alg.gspo_loss(new, old, adv, mask, eps=3e-4, eps_high=4e-4)
    assert loss.item() == pytest.approx(-(s0 + 1.0004) / 2, abs=1e-6)
    assert stats["clip_frac"] == 0.5  # a share of sequences, not tokens
    loss.backward()
    assert (new.grad[1] == 0).all()  # a clipped sequence sends no gradient to any of its tokens
    # each token of sequence 0 gets -A * s0 / |o_0| / N
    assert torch.allclose(new.grad[0], torch.tensor([-s0 / 2 / 2, -s0 / 2 / 2, 0.0]), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The trainer


def digits_on_even_prompts(response, example=None, **_):
    """Odd prompts score 0 whatever the completion: their groups have no reward spread."""
    return digits(response) if int(example.id) % 2 == 0 else 0.0


@pytest.fixture(autouse=True)
def rewards(monkeypatch):
    monkeypatch.setitem(REWARD_FUNCTIONS, "digits", lambda task, **_: digits)
    monkeypatch.setitem(REWARD_FUNCTIONS, "even_digits", lambda task, **_: digits_on_even_prompts)
    monkeypatch.setitem(REWARD_FUNCTIONS, "zero", lambda task, **_: lambda response, example=None, **_: 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_raises_reward(tiny, tmp_path, algorithm):
    model, tokenizer = tiny
    train(model, tokenizer, rl_config(algorithm=algorithm), tmp_path)
    rows = metrics_rows(tmp_path)
    first, last = sum(r["reward"] for r in rows[:3]) / 3, sum(r["reward"] for r in rows[-3:]) / 3
    assert last > first + 0.2, (first, last)
    extra = {"dapo": ("groups_dropped", "resample_rounds"), "ppo": ("value_loss", "value_clip_frac", "explained_variance")}
    # Loss statistics exist where an update ran: DAPO skips a step whose groups all saturated the reward.
    updated = [r for r in rows if "loss" in r and "trained_frac" in r]
    assert len(updated) >= len(rows) // 2, [sorted(r) for r in rows]
    for key in ("loss", "entropy", "grad_norm", "advantage_abs", "trained_frac", *extra.get(algorithm, ())):
        assert math.isfinite(updated[-1][key]), key
    trained = [r for r in updated if r["trained_frac"] > 0]  # loss statistics exist where some row was trained
    assert trained and all(math.isfinite(trained[-1][key]) for key in ("clip_frac", "kl"))


def test_dynamic_sampling_keeps_only_groups_with_reward_spread(tiny):
    model, tokenizer = tiny
    cfg = rl_config(algorithm="dapo", rewards={"even_digits": 1.0}, max_resample_rounds=4)
    engine, stream = make_engine("torch", model, tokenizer, seed=0), PromptStream(EchoTask().examples("train"), 0)
    rewards = Rewards(cfg.rewards, EchoTask())
    for _ in range(3):
        seen, train_on, stats = sample_step(engine, stream, rewards, lambda e: e.prompt, cfg, resample_zero_spread=True)
        groups = train_on.rewards.view(-1, cfg.group_size)
        assert (groups.std(1) > 0).all()
        assert all(int(e.id) % 2 == 0 for e in train_on.examples)  # odd prompts never have spread
        if stats["resample_rounds"] < cfg.max_resample_rounds:  # found enough: a full batch
            assert groups.size(0) == cfg.prompts_per_step
        assert stats["groups_dropped"] >= 2 and len(seen.examples) > len(train_on.examples)
    _, plain, stats = sample_step(engine, stream, rewards, lambda e: e.prompt, cfg)  # grpo: one round, every group
    assert len(plain.examples) == cfg.prompts_per_step * cfg.group_size and stats == {}


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")  # no update, the schedule still moves
def test_dapo_stops_resampling_at_the_cap(tiny, tmp_path):
    model, tokenizer = tiny
    before = [p.detach().clone() for p in model.parameters()]
    cfg = rl_config(algorithm="dapo", steps=2, rewards={"zero": 1.0}, max_resample_rounds=2)
    train(model, tokenizer, cfg, tmp_path)
    rows = metrics_rows(tmp_path)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # nothing had spread: no update ran
    assert [r["resample_rounds"] for r in rows] == [2, 2]
    assert [r["groups_dropped"] for r in rows] == [12, 12]  # 3 rounds of 4 prompts


def _rollout(model, tokenizer):
    rollout = make_engine("torch", model, tokenizer, seed=0).generate(["Compute 1 + 1", "Compute 2 + 2"],
                                                                      SamplingConfig(max_new_tokens=6), n=4)
    rollout.completion_mask[0, 2:] = 0  # completions of different lengths
    rollout.completion_mask[5, 4:] = 0
    rollout.logprobs *= rollout.completion_mask
    return rollout


@pytest.mark.parametrize("algorithm", ["dapo", "ppo"])
def test_gradient_does_not_depend_on_micro_batch_size(tiny, algorithm):
    model, tokenizer = tiny
    rollout = _rollout(model, tokenizer)
    batch = Batch.from_rollout(rollout, torch.tensor([1.0, 0, 0, 1, 0, 0.5, 1, 0]), tokenizer.pad_token_id)
    steps = []
    for micro in (8, 3):
        policy = copy.deepcopy(model)
        value_model = ValueModel(policy) if algorithm == "ppo" else None
        cfg = RLConfig(algorithm=algorithm, group_size=4, minibatch_size=8, micro_batch_size=micro, max_grad_norm=1e9,
                       sampling=SamplingConfig(max_new_tokens=6))
        params = [p for m in (policy, value_model) if m is not None for p in m.parameters()]
        before = [p.detach().clone() for p in params]
        rl_step(policy, torch.optim.SGD(params, lr=1.0), batch, cfg, alg.ALGORITHMS[algorithm], value_model=value_model)  # SGD, lr 1: the step is -grad
        steps.append([p.detach() - b for p, b in zip(params, before)])
    for a, b in zip(*steps):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_config_algorithm_field():
    assert RLConfig().algorithm == "grpo" and RLConfig().eps is None  # None: the algorithm's clip range
    with pytest.raises(ConfigError, match="rl.algorithm: unknown algorithm 'trpo'"):
        load_config("r1-zero", ["rl.algorithm=trpo"])  # names are checked against ALGORITHMS when a config loads


@pytest.mark.parametrize("algorithm", ["grpo", "dr_grpo", "dapo", "gspo", "rloo"])
def test_zero_advantage_rows_are_skipped_and_the_step_is_unchanged(tiny, algorithm):
    """beta = 0: rows of zero-spread groups (advantage exactly 0) get no forward/backward pass, and the
    optimizer steps are the same as with every row trained. The reference trains every row: beta > 0
    against a reference model equal to the policy, whose KL term has value and gradient 0."""
    model, tokenizer = tiny
    rollout = _rollout(model, tokenizer)
    runs = []
    for beta in (0.0, 0.04):
        policy = copy.deepcopy(model)
        ref = copy.deepcopy(model) if beta else None
        opt = torch.optim.SGD(policy.parameters(), lr=0.1, momentum=0.9)  # linear in the gradient: no amplified rounding
        cfg = RLConfig(algorithm=algorithm, group_size=4, minibatch_size=8, micro_batch_size=3, beta=beta,
                       sampling=SamplingConfig(max_new_tokens=6))
        stats = []
        for rewards in ([1.0, 0, 0, 1, 0.5, 0.5, 0.5, 0.5], [0.5] * 8):  # then no spread at all: the momentum still moves
            if ref is not None:
                ref.load_state_dict(policy.state_dict())  # KL 0, and its gradient 0, at every update
            batch = Batch.from_rollout(rollout, torch.tensor(rewards), tokenizer.pad_token_id)
            stats.append(rl_step(policy, opt, batch, cfg, alg.ALGORITHMS[cfg.algorithm], ref=ref))
        runs.append(([p.detach().clone() for p in policy.parameters()], stats))
    (skipped, stats_skipped), (full, stats_full) = runs
    group0 = Batch.from_rollout(rollout, torch.zeros(8), tokenizer.pad_token_id).take(torch.arange(4))
    assert stats_skipped[0]["trained_frac"] == 0.5  # only the first group has spread
    # its 4 rows went in micro-batches of 3 and 1, each running the group's prompt once
    assert stats_skipped[0]["tokens_trained"] == int(group0.completion_mask.sum() + 2 * group0.prompt_mask.sum())
    assert stats_skipped[1]["trained_frac"] == 0.0 and stats_skipped[1]["loss"] == 0.0
    assert [s["trained_frac"] for s in stats_full] == [1.0, 1.0]
    moved = [not torch.equal(p, q) for p, q in zip(skipped, model.parameters())]
    assert all(moved)
    for a, b in zip(skipped, full):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
