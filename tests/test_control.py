import json

import numpy as np
import pytest
import torch

from r1lab.config import ControlConfig
from r1lab.gym.envs import make_env, reset_envs
from r1lab.gym.episodes import run_episodes
from r1lab.gym.policies import CategoricalPolicy
from r1lab.gym.ppo import rollout_gae
from r1lab.gym.run import run_control
from r1lab.rl.algorithms import group_advantages
from r1lab.rl.ppo import value_loss

# A few iterations, cheap evaluations: each run takes well under a second.
TINY = dict(num_envs=2, rollout_steps=32, groups=2, group_size=3, max_env_steps=200, eval_every=100, eval_episodes=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny MLPs: one thread is several times faster


def rows(path):
    return [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]


def test_group_advantages_zero_for_equal_returns_and_hand_values():
    returns = torch.tensor([10.0, 10.0, 10.0, 10.0, 1.0, 2.0, 3.0, 4.0])  # two groups of G=4
    adv = group_advantages(returns, 4)
    assert torch.equal(adv[:4], torch.zeros(4))
    std = (5 / 3) ** 0.5  # unbiased: sum of squared deviations 5, over G-1 = 3
    expected = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / (std + 1e-4)
    assert torch.allclose(adv[4:], expected, atol=1e-6)


def test_gae_hand_computed_with_done():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])  # (T=3, E=2)
    values = torch.tensor([[0.5, 0.0], [0.4, 0.0], [0.3, 0.0]])
    dones = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # env 0's episode ends at t=1
    adv, ret = rollout_gae(rewards, values, dones, torch.tensor([0.2, 1.0]), gamma, lam)
    # env 0: t2 = 1 + .9*.2 - .3 = .88; t1 = 1 - .4 (done: no bootstrap, no carry) = .6;
    #        t0 = (1 + .9*.4 - .5) + .9*.8*.6 = .86 + .432
    # env 1: t2 = 1 + .9*1 = 1.9; t1 = .72 * 1.9; t0 = .72^2 * 1.9
    expected = torch.tensor([[1.292, 0.72**2 * 1.9], [0.6, 0.72 * 1.9], [0.88, 1.9]])
    assert torch.allclose(adv, expected, atol=1e-6)
    assert torch.allclose(ret, expected + values)


def test_value_clipping_loss_hand_check():
    """The critic's loss as control's PPO calls it: no mask, the mean over the minibatch."""
    new = torch.tensor([2.0, 0.0], requires_grad=True)
    old, returns = torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0])
    # 0: unclipped (2-3)^2 = 1, clipped (1.5-3)^2 = 2.25 -> 2.25; 1: unclipped 9, clipped (0.5-3)^2 = 6.25 -> 9
    loss, stats = value_loss(new, old, returns, 0.5)
    assert loss.item() == pytest.approx(0.5 * (2.25 + 9) / 2) and stats["value_clip_frac"] == 0.5
    loss.backward()
    assert new.grad[0] == 0  # moved past the clip towards the target: no further push
    assert new.grad[1] == pytest.approx(0.5 * 2 * (0 - 3) / 2)
    assert value_loss(new, old, returns, None)[0].item() == pytest.approx(0.5 * (1 + 9) / 2)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_group_resets_share_the_initial_state(env_id):
    envs = [make_env(env_id) for _ in range(6)]
    seeds = np.repeat([11, 12], 3)  # groups of G=3
    obs = reset_envs(envs, seeds)
    assert (obs[:3] == obs[0]).all() and (obs[3:] == obs[3]).all()
    assert not np.array_equal(obs[0], obs[3])
    # the episodes GRPO trains on start there too
    torch.manual_seed(0)
    _, batch = run_episodes(CategoricalPolicy(obs.shape[1], envs[0].action_space.n, [8], False), envs, seeds)
    first = {int(e): batch["obs"][i].numpy() for i, e in reversed(list(enumerate(batch["episode"])))}
    assert all(np.array_equal(first[i], obs[i]) for i in range(6))


def test_unknown_env_raises_naming_it(tmp_path):
    with pytest.raises(ValueError, match="Ant-v5") as err:
        ControlConfig(env="Ant-v5")
    assert "env" in str(err.value) and "CartPole-v1" in str(err.value)
    with pytest.raises(ValueError, match="NoSuchEnv-v0"):
        run_control(ControlConfig.model_construct(**{**ControlConfig().model_dump(), "env": "NoSuchEnv-v0"}), tmp_path)
    with pytest.raises(ValueError, match="epochs"):
        ControlConfig(epochs=0)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_tiny_run_writes_summary_and_metrics(tmp_path, algo, env_id):
    summary = run_control(ControlConfig(algo=algo, env=env_id, **TINY), tmp_path)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved == summary
    for key in ("final_mean_return", "final_eval_mode", "env_steps", "wall_seconds", "algo", "env", "seed", "config",
                "reached_target", "time_to_target_s", "stop_reason"):
        assert key in saved, key
    assert (saved["algo"], saved["env"], saved["config"]["algo"]) == (algo, env_id, algo)
    assert saved["final_eval_mode"] == "sample" and saved["env_steps"] >= 200
    log = rows(tmp_path)
    assert [r["iteration"] for r in log] == list(range(1, len(log) + 1))
    assert all({"env_steps", "wall_seconds", "mean_return", "policy_loss", "entropy"} <= set(r) for r in log)
    assert "eval_return" in log[-1]
    assert ("value_loss" in log[0]) == (algo == "ppo") and ("zero_std_frac" in log[0]) == (algo == "grpo")
    assert (tmp_path / "policy.pt").exists()


def test_seeded_runs_repeat(tmp_path):
    cfg = ControlConfig(algo="grpo", **TINY)
    a, b = (run_control(cfg, tmp_path / name) for name in "ab")
    strip = lambda rs: [{k: v for k, v in r.items() if k != "wall_seconds"} for r in rs]  # noqa: E731
    assert strip(rows(tmp_path / "a")) == strip(rows(tmp_path / "b"))
    assert a["final_mean_return"] == b["final_mean_return"]


@pytest.mark.parametrize("algo,steps", [("ppo", 8192), ("grpo", 16_000)])
def test_short_cartpole_training_improves(tmp_path, algo, steps):
    """About a second each: from ~20 (random) the mean return per iteration roughly triples (seed 0)."""
    run_control(ControlConfig(algo=algo, seed=0, max_env_steps=steps, eval_every=10**6, eval_episodes=1), tmp_path)
    log = rows(tmp_path)
    first, last = log[0]["mean_return"], log[-1]["mean_return"]
    assert first < 30 and last > 2 * first, (first, last)
