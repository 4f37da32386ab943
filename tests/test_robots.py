"""Continuous control: Gaussian policies, same-start groups and restored states on MuJoCo robots, branching
GRPO, the env presets, and a short PPO run on Pendulum that must improve."""

import json
import sys

import numpy as np
import pytest
import torch
from torch.distributions import AffineTransform, Normal, TanhTransform, TransformedDistribution

from r1lab.config import ControlConfig
from r1lab.errors import ConfigError
from r1lab.gym.envs import make_env, reset_envs, restore, snapshot
from r1lab.gym.episodes import play
from r1lab.gym.grpo import BranchingGRPO
from r1lab.gym.policies import GaussianPolicy, ObsNorm
from r1lab.gym.run import run_control

pytest.importorskip("mujoco")
pytestmark = pytest.mark.usefixtures("one_thread")

LOW, HIGH = np.array([-1.0, -3.0]), np.array([1.0, 2.0])


def gaussian(squash: str) -> GaussianPolicy:
    torch.manual_seed(0)
    policy = GaussianPolicy(4, LOW, HIGH, [16], False, squash)
    with torch.no_grad():
        policy.log_std.copy_(torch.tensor([-0.3, 0.4]))
    return policy


def test_gaussian_logprob_and_entropy_match_torch_distributions():
    policy = gaussian("clip")
    obs = torch.randn(64, 4)
    u, logp = policy.sample(obs)
    mean = policy.mean_net(obs)
    reference = Normal(mean, policy.log_std.exp())
    assert torch.allclose(logp, reference.log_prob(u).sum(-1), atol=1e-5)
    new_logp, entropy = policy.logp_entropy(obs, u)
    assert torch.allclose(new_logp, logp, atol=1e-5)
    assert torch.allclose(entropy, reference.entropy().sum(-1), atol=1e-5)
    actions = policy.env_actions(u * 10)  # far outside the box: clipped into it
    assert (actions >= LOW - 1e-6).all() and (actions <= HIGH + 1e-6).all() and (actions == LOW).any()


def test_tanh_squashing_corrects_the_logprob():
    policy = gaussian("tanh")
    obs = torch.randn(64, 4)
    u, logp = policy.sample(obs)
    mean = policy.mean_net(obs)
    squashed = TransformedDistribution(Normal(mean, policy.log_std.exp()), [
        TanhTransform(), AffineTransform(torch.tensor((HIGH + LOW) / 2, dtype=torch.float32),
                                         torch.tensor((HIGH - LOW) / 2, dtype=torch.float32))])
    actions = torch.as_tensor(policy.env_actions(u))
    assert torch.allclose(logp, squashed.log_prob(actions).sum(-1), atol=1e-3)
    assert ((actions > torch.tensor(LOW)) & (actions < torch.tensor(HIGH))).all()
    # far in the tails tanh saturates; the correction stays finite where log(1 - tanh(u)^2) would be log(0)
    far = torch.full((1, 2), 30.0)
    assert torch.isfinite(policy.log_prob(mean[:1], far)).all()


def test_obs_norm_tracks_the_moments_and_is_saved():
    norm, rng = ObsNorm(3, True), np.random.default_rng(0)
    batches = [rng.normal(5, 2, size=(n, 3)) for n in (1, 7, 100)]
    for b in batches:
        norm(b, update=True)
    seen = np.concatenate(batches)
    assert np.allclose(norm.mean.numpy(), seen.mean(0), atol=1e-3) and np.allclose(norm.var.numpy(), seen.var(0), rtol=1e-2)
    assert set(norm.state_dict()) == {"mean", "var", "count"}
    assert norm(seen).mean().abs() < 0.05 and (norm(seen * 1e6).abs() <= 10).all()


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Reacher-v5", "HalfCheetah-v5"])
def test_same_start_groups_share_qpos_and_qvel(env_id):
    envs = [make_env(env_id) for _ in range(4)]
    reset_envs(envs, [7, 7, 7, 8])
    qpos = [e.unwrapped.data.qpos.copy() for e in envs]
    qvel = [e.unwrapped.data.qvel.copy() for e in envs]
    assert all(np.array_equal(qpos[0], q) for q in qpos[1:3]) and all(np.array_equal(qvel[0], v) for v in qvel[1:3])
    assert not np.array_equal(qpos[0], qpos[3])


@pytest.mark.parametrize("env_id", ["Hopper-v5", "Pendulum-v1", "MountainCarContinuous-v0", "Acrobot-v1"])
def test_restored_state_replays_the_same_future(env_id):
    env, twin = make_env(env_id), make_env(env_id)
    env.reset(seed=1)
    twin.reset(seed=99)
    for _ in range(5):
        env.step(env.action_space.sample())
    snap = snapshot(env)
    actions = [env.action_space.sample() for _ in range(10)]
    after = [env.step(a)[:2] for a in actions]
    first_obs = restore(twin, snap)
    replay = [twin.step(a)[:2] for a in actions]
    assert all(np.allclose(o1, o2) and r1 == r2 for (o1, r1), (o2, r2) in zip(after, replay))
    assert first_obs.shape == env.observation_space.shape


def test_branch_continuations_start_from_the_trajectory_states():
    cfg = ControlConfig(algo="grpo-branch", env="Hopper-v5", groups=2, group_size=3, branch_every=4, horizon=5, seed=0)
    agent = BranchingGRPO(cfg)
    n, returns, stats = agent.iteration()
    assert len(returns) == 2 and stats["branch_states"] >= 2
    assert n > stats["branch_env_steps"]  # the trajectories' steps count too
    assert stats["branch_env_steps"] <= stats["branch_states"] * 3 * 5
    # the same mechanics, checked directly: G continuations from one saved state start where the trajectory was
    trunk = make_env("Hopper-v5")
    _, b = play(agent.actor, [trunk], reset_envs([trunk], [3]), snapshot_every=4)
    (t, snap), = b["snapshots"][0][1:2]
    envs = [make_env("Hopper-v5") for _ in range(3)]
    for e in envs:
        e.reset(seed=0)
    starts = np.stack([restore(e, snap) for e in envs])
    assert t == 4 and (starts == starts[0]).all()
    assert all(np.array_equal(e.unwrapped.data.qpos, snap[0][0]) for e in envs)


def test_env_presets_fill_only_what_the_user_left():
    hopper = ControlConfig(env="Hopper-v5", lr=1e-4)
    assert (hopper.num_envs, hopper.rollout_steps, hopper.epochs, hopper.normalize, hopper.anneal_lr) == (1, 2048, 10, True, True)
    assert hopper.lr == 1e-4 and hopper.max_env_steps == 300_000
    assert ControlConfig().normalize is False  # CartPole keeps its own defaults
    again = ControlConfig.model_validate(hopper.model_dump())
    assert again == hopper


def test_missing_mujoco_is_named(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mujoco", None)
    with pytest.raises(ConfigError, match=r"r1lab\[mujoco\]"):
        run_control(ControlConfig(env="Hopper-v5"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("algo", ["ppo", "grpo", "grpo-branch"])
def test_tiny_robot_runs_write_policy_and_summary(tmp_path, algo):
    cfg = ControlConfig(algo=algo, env="InvertedPendulum-v5", num_envs=2, rollout_steps=64, minibatches=2, epochs=1,
                        groups=2, group_size=3, branch_every=5, horizon=5, max_env_steps=300, eval_every=10**6,
                        eval_episodes=2)
    summary = run_control(cfg, tmp_path)
    state = torch.load(tmp_path / "policy.pt")
    assert {"log_std", "obs_norm.mean", "obs_norm.var", "low", "high"} <= set(state)
    assert state["obs_norm.count"] > 1  # the statistics were updated in training, and saved
    assert summary["env_steps"] >= 300 and json.loads((tmp_path / "summary.json").read_text()) == summary


def test_video_writes_a_gif_of_the_policy(tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    from r1lab.gym.video import write_gif

    policy = GaussianPolicy(4, np.array([-3.0]), np.array([3.0]), [8], False, "clip")
    path = write_gif(policy, "InvertedPendulum-v5", tmp_path / "policy.gif", max_frames=10)
    frames = imageio.mimread(path)
    assert len(frames) >= 2 and np.asarray(frames[0]).std() > 0  # a picture, not a blank
    assert not list(tmp_path.glob("*.partial"))


def test_short_ppo_run_on_pendulum_improves(tmp_path):
    """PPO with Pendulum's preset, 24k steps: from about -1200 (random torques) the return per iteration rises
    (seed 0: to about -300 by 30k steps)."""
    cfg = ControlConfig(algo="ppo", env="Pendulum-v1", seed=0, max_env_steps=24_576, eval_every=10**6, eval_episodes=1)
    run_control(cfg, tmp_path)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = np.mean([r["mean_return"] for r in log[:3] if r["mean_return"] is not None])
    last = np.mean([r["mean_return"] for r in log[-3:] if r["mean_return"] is not None])
    assert last > first + 300, (first, last)


def test_cli_control_video_and_compare_env(tmp_path, capsys):
    from r1lab.ui.cli import main

    tiny = ["max_env_steps=200", "eval_every=1000000", "eval_episodes=1", "groups=1", "group_size=2", "branch_every=5",
            "horizon=5", "epochs=1", "minibatches=1"]
    assert main(["control", "--algo", "grpo-branch", "--env", "InvertedPendulum-v5", "--out", str(tmp_path / "c"),
                 "--video", *tiny]) == 0
    assert (tmp_path / "c" / "policy.gif").exists() and '"grpo-branch"' in capsys.readouterr().out
    assert main(["compare", "robot", "--env", "InvertedPendulum-v5", "--out", str(tmp_path / "cmp"), *tiny,
                 "num_envs=1", "rollout_steps=100"]) == 0
    report = (tmp_path / "cmp" / "report.html").read_text()
    assert report.count("data:image/gif") == 3 and "train_return_last5" in report
    assert main(["compare", "ppo-vs-grpo", "--env", "Hopper-v5", "--out", str(tmp_path / "x")]) == 2
    assert "--env" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_missing_renderer_is_named_before_training(monkeypatch, tmp_path):
    import r1lab.gym.video as video

    def no_gl(env_id, render=False):
        raise RuntimeError("EGL: no display")

    monkeypatch.setattr(video, "make_env", no_gl)
    with pytest.raises(ConfigError, match="MUJOCO_GL=egl"):
        run_control(ControlConfig(env="InvertedPendulum-v5", video=True), tmp_path / "run")
    assert not (tmp_path / "run").exists()
