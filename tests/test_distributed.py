"""Several processes for real: torch.distributed.run starts 2 ranks (gloo, CPU) of tests/dist_driver.py
(train_rl on the tiny model) or of `r1lab run`, and the results are compared with one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from r1lab.engines import make_engine
from r1lab.ui.cli import main

REPO = Path(__file__).resolve().parent.parent
DRIVER = REPO / "tests" / "dist_driver.py"
# 16 prompts x 4 samples: minibatches of 32 rows drawn over both ranks' rows, so the ranks' shares are uneven
SETTINGS = ["seed=3", "steps=3", "prompts_per_step=16", "group_size=4", "minibatch_size=32", "micro_batch_size=8", "mu=2",
            "lr=1e-3", "checkpoint_every=2", "seed_per_prompt=true"]
ALGORITHMS = {"grpo": [], "ppo": ["algorithm=ppo", "beta=0.05"]}  # ppo: a sharded value model, a whole reference


def launch(args: list, nproc: int, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python [-m torch.distributed.run --nproc-per-node N] ARGS` in a fresh process group of its own."""
    torchrun = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *torchrun, *map(str, args)], env=env, capture_output=True, text=True, check=False,
                          timeout=timeout)


def train(model_dir, run_dir, settings: list, nproc: int) -> subprocess.CompletedProcess:
    done = launch([DRIVER, model_dir, run_dir, *settings], nproc)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def weights(run_dir: Path, step: int = 3) -> dict:
    return load_file(run_dir / "checkpoints" / f"step-{step:06d}" / "model.safetensors")


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module", params=list(ALGORITHMS))
def runs(request, tiny_model_dir, tmp_path_factory):
    """The same 3 steps of 16 prompts, by 1 process and by 2 ranks of 8 prompts each."""
    root = tmp_path_factory.mktemp(f"dist-{request.param}")
    settings = SETTINGS + ALGORITHMS[request.param]
    train(tiny_model_dir, root / "one", settings, nproc=1)
    train(tiny_model_dir, root / "two", settings, nproc=2)
    return request.param, settings, root


@pytest.mark.slow
def test_two_ranks_train_the_same_parameters_as_one_process(runs, tiny_model_dir):
    _, _, root = runs
    start, one, two = load_file(tiny_model_dir / "model.safetensors"), weights(root / "one"), weights(root / "two")
    for name in one:
        assert not torch.equal(one[name], start[name]), name  # every parameter trained
        torch.testing.assert_close(two[name], one[name], atol=1e-5, rtol=0)
    # Per-prompt seeds: the same completions whatever the split; the losses and gradient norms are the
    # one-process ones (normalised over all ranks, gradients summed, the global norm clipped).
    for a, b in zip(metrics(root / "one"), metrics(root / "two"), strict=True):
        assert (a["reward"], a["completion_len_mean"]) == (b["reward"], b["completion_len_mean"])
        for key in ("loss", "grad_norm", "entropy", "trained_frac"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
    shards = root / "two" / "checkpoints" / "step-000003" / "sharded"
    assert sorted(p.name for p in shards.iterdir()) == [".metadata", "__0_0.distcp", "__1_0.distcp"]


@pytest.mark.slow
@pytest.mark.parametrize("runs", ["ppo"], indirect=True)  # ppo's also resumes a sharded value model and a reference
def test_killed_ranks_resume_and_finish_as_an_uninterrupted_run(runs, tiny_model_dir):
    _, settings, root = runs
    run = root / "killed"
    killed = launch([DRIVER, tiny_model_dir, run, *settings, "die_in_step=3"], nproc=2)  # rank 1 SIGKILLed in step 3
    assert killed.returncode != 0
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-000002"
    assert [r["step"] for r in metrics(run)] == [1, 2]

    resumed = train(tiny_model_dir, run, settings, nproc=2)
    assert "resuming rl from step-000002" in resumed.stderr + resumed.stdout
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]
    straight, after = weights(root / "two"), weights(run)
    for name in straight:
        torch.testing.assert_close(after[name], straight[name], atol=1e-6, rtol=0)
    for a, b in zip(metrics(root / "two"), metrics(run), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6) and b["reward"] == a["reward"]

    # Its optimizer shards and random states are per rank: one process may not take the run over.
    refused = launch([DRIVER, tiny_model_dir, run, *[s for s in settings if not s.startswith("steps=")], "steps=4"], nproc=1)
    assert refused.returncode != 0 and "written by 2 process(es)" in refused.stderr


@pytest.mark.slow
def test_two_ranks_in_bf16_gather_bf16_weights_and_train_fp32_masters(tiny_model_dir, tmp_path):
    """FSDP2's mixed precision (dist.shard): weights gathered in bf16, gradients reduced and the masters and
    AdamW's shards kept in fp32; the step is the one-process bf16 step up to bf16 rounding."""
    from torch.distributed.checkpoint import FileSystemReader

    settings = SETTINGS + ALGORITHMS["ppo"] + ["dtype=bf16"]  # ppo: a sharded value model with its fp32 head
    train(tiny_model_dir, tmp_path / "one", settings, nproc=1)
    train(tiny_model_dir, tmp_path / "two", settings, nproc=2)
    start, two = load_file(tiny_model_dir / "model.safetensors"), weights(tmp_path / "two")
    for name, w in two.items():
        assert w.dtype == torch.float32 and not torch.equal(w, start[name]), name  # norms too: fp32 masters
    a, b = metrics(tmp_path / "one")[0], metrics(tmp_path / "two")[0]  # step 1: the same samples from the same weights
    assert a["reward"] == b["reward"]
    for key in ("loss", "grad_norm"):
        assert b[key] == pytest.approx(a[key], rel=0.05), key
    shards = FileSystemReader(str(tmp_path / "two" / "checkpoints" / "step-000003" / "sharded")).read_metadata()
    optimizer = [m.properties.dtype for k, m in shards.state_dict_metadata.items() if k.startswith("optimizer") and
                 hasattr(m, "properties")]
    assert optimizer and set(optimizer) == {torch.float32}


@pytest.mark.slow
def test_r1lab_run_with_nproc_trains_on_two_ranks_and_rank_0_writes_the_run(tiny_model_dir, tmp_path, offline_trackers):
    recipe = tmp_path / "micro.yaml"
    recipe.write_text(f"""
model: {tiny_model_dir}
data: {{test_size: 2}}
sampling: {{max_new_tokens: 8}}
rl: {{steps: 2, prompts_per_step: 4, group_size: 2, checkpoint_every: 1}}
eval: {{k: 1}}
log: {{report_to: [tensorboard, wandb]}}
""")
    run = tmp_path / "run"
    done = launch(["-m", "r1lab", "run", recipe, "--out", run, "--nproc", "2"], nproc=1)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["step"] for r in metrics(run)] == [1, 2]
    assert (run / "final" / "model.safetensors").exists() and json.loads((run / "summary.json").read_text())["stages"]
    assert sorted(p.name for p in (run / "r1-zero" / "checkpoints" / "step-000002" / "sharded").iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp"]
    # rank 0 alone reports: one writer (an event file names its process), one wandb run, the steps of metrics.jsonl
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tensorboard = run / "trackers" / "tensorboard"
    assert len(list(tensorboard.glob("events.*"))) == len(list((tensorboard / "r1-zero").glob("events.*"))) == 1
    events = EventAccumulator(str(tensorboard / "r1-zero"))
    events.Reload()
    assert [s.step for s in events.Scalars("reward")] == [1, 2]
    assert len(list((run / "trackers" / "wandb").glob("offline-run-*/run-*.wandb"))) == 1


def test_nproc_that_does_not_split_the_prompts_fails_before_starting(tmp_path, capsys):
    assert main(["run", "r1-zero", "--out", str(tmp_path / "run"), "--nproc", "3", "rl.prompts_per_step=4"]) == 2
    assert "does not divide by 3" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_per_prompt_seeds_make_a_prompts_samples_independent_of_the_batch(tiny):
    """A prompt's completions depend on its seed only: not on the other prompts of the call (how prompts
    are batched or split over ranks), and not on the sampling path."""
    from r1lab.config import SamplingConfig

    model, tokenizer = tiny
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=12)
    together = make_engine("torch", model, tokenizer, seed=0).generate(["1 + 1", "7 x 3 ="], sampling, n=3, seeds=[11, 22])
    alone = make_engine("torch", model, tokenizer, seed=5).generate(["7 x 3 ="], sampling, n=3, seeds=[22])
    plain = make_engine("torch", model, tokenizer, seed=9, fast=False).generate(["7 x 3 ="], sampling, n=3, seeds=[22])
    assert together.texts[3:] == alone.texts == plain.texts
    torch.testing.assert_close(together.logprobs[3:, : alone.logprobs.size(1)], alone.logprobs)
    other = make_engine("torch", model, tokenizer, seed=0).generate(["7 x 3 ="], sampling, n=3, seeds=[23])
    assert other.texts != alone.texts
