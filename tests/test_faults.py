"""Fault injection: every way issue 13 saw a run train garbage or get lost, reproduced, with the behaviour
now expected. Fast tests use the untrained tiny model (EchoTask + the digits reward, as test_trainer does);
the CLI runs and the kill -9 trials are marked slow."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import EchoTask, digits, metrics_rows, rl_config, train
from rich.console import Console

from r1lab.config import ConfigError
from r1lab.data.example import Example
from r1lab.engines import make_engine
from r1lab.models.io import load_model, load_tokenizer, save_model
from r1lab.recipes.load import load_config, validate
from r1lab.recipes.rundir import check_run_dir, record_run
from r1lab.rewards.registry import REWARD_FUNCTIONS, Rewards
from r1lab.store import checkpoint
from r1lab.store.logs import append_jsonl, read_jsonl
from r1lab.store.runlock import RunLockedError, run_lock
from r1lab.train.guards import DivergedError
from r1lab.ui.cli import main

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def rewards(monkeypatch):
    monkeypatch.setitem(REWARD_FUNCTIONS, "digits", lambda task, **_: digits)
    monkeypatch.setitem(REWARD_FUNCTIONS, "one", lambda task, **_: (lambda response, example=None, **__: 1.0))


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same(a, b):
    return all(torch.equal(a[n], b[n]) for n in a)


# ---------------------------------------------------------------- divergence guards


def test_infinite_rewards_skip_every_update_and_stop_the_run(tiny, tmp_path):
    model, tokenizer = tiny
    before = _params(model)
    cfg = rl_config(steps=5, prompts_per_step=2, group_size=2, checkpoint_every=1, rewards={"one": 1e308, "digits": 1e308})
    with pytest.raises(DivergedError, match="3 steps in a row had a non-finite (reward|loss)"):
        train(model, tokenizer, cfg, tmp_path)
    assert [r["skipped_steps"] for r in metrics_rows(tmp_path)] == [1, 2, 3]
    assert _same(before, _params(model))  # no update was made from an infinite reward
    assert checkpoint.latest(tmp_path) is None  # and no checkpoint of a bad step was written


def test_nan_loss_is_skipped_and_the_good_checkpoint_is_kept(tiny, tmp_path):
    from r1lab.rl.loop import train_rl

    model, tokenizer = tiny
    cfg = rl_config(steps=6, prompts_per_step=2, group_size=4, checkpoint_every=1, max_bad_steps=2, beta=0.0)
    poisoned = []

    def nan_logits(module, args, output):  # the training passes (with grad) once poisoned; sampling runs without
        if poisoned and torch.is_grad_enabled():
            output.logits = output.logits * float("nan")
        return output

    model.register_forward_hook(nan_logits)
    with pytest.raises(DivergedError, match="non-finite (loss|gradient norm)"):
        train_rl(model, tokenizer, EchoTask(), cfg, tmp_path, engine=make_engine("torch", model, tokenizer), template="r1-zero",
                 system="", report=lambda row: poisoned.append(row["step"]) if row["step"] == 2 else None)  # after step 2
    good = checkpoint.latest(tmp_path)
    rows = metrics_rows(tmp_path)
    bad_steps = [r["step"] for r in rows if r["skipped_steps"] > 0]
    assert bad_steps == [3, 4] and good is not None and int(good.name[5:]) == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the weights never saw a NaN gradient


def test_sft_nan_loss_stops_without_writing_final(tiny, tmp_path, monkeypatch):
    import r1lab.sft.train as sft
    from r1lab.config import SFTConfig

    model, tokenizer = tiny
    monkeypatch.setattr(sft, "accumulate_gradients", lambda *a, **k: (float("nan"), 10))
    cfg = SFTConfig(epochs=1, batch_size=2, micro_batch_size=2, warmup_steps=0, eval_fraction=0, max_bad_steps=2)
    examples = [{"prompt": f"Compute {i} + {i}", "completion": str(2 * i)} for i in range(8)]
    with pytest.raises(DivergedError, match="sft"):
        sft.train_sft(model, tokenizer, examples, cfg, tmp_path)
    assert not (tmp_path / "final").exists() and checkpoint.latest(tmp_path) is None


def test_entropy_and_kl_explosions_warn():
    from r1lab.train.guards import ExplosionWatch

    watch = ExplosionWatch(entropy_max=2.0, kl_max=1.0)
    assert watch({"entropy": 1.0, "kl": 0.1}) == []
    assert [w.split()[0] for w in watch({"entropy": 3.0, "kl": 5.0})] == ["entropy", "KL"]
    untrained = ExplosionWatch(entropy_max=2.0, kl_max=None)  # near uniform from the start: nothing to explode
    assert untrained({"entropy": 3.0}) == [] and untrained({"entropy": 3.0}) == []


# ---------------------------------------------------------------- checkpoints


@pytest.fixture
def four_steps(tiny_model_dir, tmp_path):
    """A 4-step run checkpointed every step (step-3 and step-4 kept), and its final weights."""
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    cfg = rl_config(steps=4, prompts_per_step=2, group_size=4, checkpoint_every=1)
    run = tmp_path / "run"
    train(model, tokenizer, cfg, run)
    return run, cfg, _params(model), metrics_rows(run)


def _resume(tiny_model_dir, run, cfg):
    model, tokenizer = load_model(str(tiny_model_dir), device="cpu", dtype="fp32")
    train(model, tokenizer, cfg, run)
    return _params(model)


@pytest.mark.parametrize("damage", ["truncate-state", "truncate-weights", "garbage-pointer", "delete-latest-dir",
                                    "delete-pointer"])
def test_damaged_latest_checkpoint_falls_back_to_the_intact_one(four_steps, tiny_model_dir, damage, caplog):
    run, cfg, final, rows = four_steps
    root = run / "checkpoints"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000003", "step-000004"]
    step4 = root / "step-000004"
    if damage.startswith("truncate"):
        name = "trainer_state.pt" if damage == "truncate-state" else "model.safetensors"
        data = (step4 / name).read_bytes()
        (step4 / name).write_bytes(data[: len(data) // 2])
    elif damage == "garbage-pointer":
        (root / "latest").write_bytes(b"\x00\xffnot a checkpoint")
    elif damage == "delete-latest-dir":
        import shutil

        shutil.rmtree(step4)
    else:
        (root / "latest").unlink()
    # step 4 is lost (or its pointer is): resuming uses step 3, reruns step 4 and lands where the first run did
    expect = "step-000004" if damage in ("garbage-pointer", "delete-pointer") else "step-000003"
    assert checkpoint.latest(run).name == expect
    assert (root / "latest").read_text() == expect  # the pointer is rebuilt from the directory
    (root / "latest").write_text("step-000004")  # as it was
    if expect == "step-000003":
        # metrics still hold step 4's row: the resumed run cuts it and logs step 4 once
        assert "damaged" in caplog.text or "not a checkpoint" in caplog.text
        again = _resume(tiny_model_dir, run, cfg.model_copy(update={"steps": 4}))
        assert [r["step"] for r in metrics_rows(run)] == [1, 2, 3, 4]
        assert _same(final, again)
        assert [r["reward"] for r in metrics_rows(run)] == [r["reward"] for r in rows]


def test_restart_from_step_zero_clears_the_previous_attempts_logs(tiny, tmp_path):
    """Killed at step 6 before the first checkpoint (checkpoint_every=10): the re-run starts from step 0 and
    the log must read 1..N, not 1..6, 1..N."""
    model, tokenizer = tiny
    append_jsonl(tmp_path / "metrics.jsonl", [{"stage": "rl", "step": s, "reward": 0.0} for s in range(1, 7)])
    append_jsonl(tmp_path / "samples.jsonl", [{"stage": "rl", "step": s} for s in range(1, 7)])
    train(model, tokenizer, rl_config(steps=3, prompts_per_step=2, group_size=2, checkpoint_every=10), tmp_path)
    assert [r["step"] for r in metrics_rows(tmp_path)] == [1, 2, 3]
    assert {json.loads(line)["step"] for line in (tmp_path / "samples.jsonl").read_text().splitlines()} <= {1, 2, 3}


# ---------------------------------------------------------------- disk errors


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_checkpoint_write_error_is_plain_and_leaves_no_temp_dir(tiny, tmp_path, monkeypatch, code):
    model, tokenizer = tiny
    checkpoint.save(tmp_path, 1, model, tokenizer, {"step": 1})

    def fail(*a, **k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OSError, match="writing checkpoint .*step-000002: (no space left on device|read-only file system)"):
        checkpoint.save(tmp_path, 2, model, tokenizer, {"step": 2})
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000001"]  # no .tmp left, step 1 intact
    assert checkpoint.latest(tmp_path).name == "step-000001"


def test_final_model_and_log_write_errors_are_plain(tiny, tmp_path, monkeypatch):
    model, tokenizer = tiny

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(model), "save_pretrained", full)
    with pytest.raises(OSError, match="writing model .*final: no space left on device"):
        save_model(model, tokenizer, tmp_path / "final")
    assert list(tmp_path.iterdir()) == []
    from r1lab.recipes.run import write_json_atomic

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError, match="writing state .*state.json: no space left"):
        write_json_atomic(tmp_path / "state.json", {"stages": {}})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr("builtins.open", full)
    with pytest.raises(OSError, match="writing log .*metrics.jsonl: no space left"):
        append_jsonl(tmp_path / "metrics.jsonl", [{"step": 1}])


def test_cli_reports_a_full_disk_without_a_traceback(monkeypatch, capsys, tmp_path):
    from r1lab.disk import writing
    from r1lab.ui import cli

    def run_on_a_full_disk(args):
        with writing("checkpoint", tmp_path / "x"):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(cli.COMMANDS, "run", run_on_a_full_disk)  # the public command table: `r1lab run` runs this
    assert main(["run", "r1-zero", "--out", str(tmp_path)]) == 2
    assert "no space left on device" in capsys.readouterr().err


# ---------------------------------------------------------------- run directory


def test_run_lock_refuses_a_second_holder_naming_its_pid(tmp_path):
    held = f"in use by another r1lab process \\(pid {os.getpid()}\\)"
    with run_lock(tmp_path), pytest.raises(RunLockedError, match=held), run_lock(tmp_path):
        pass
    with run_lock(tmp_path):  # released on exit
        pass


def test_run_lock_held_by_another_process_and_released_by_its_death(tmp_path, capsys):
    code = f"from r1lab.store.runlock import run_lock; import time\nwith run_lock({str(tmp_path)!r}):\n print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(TESTS.parent)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["run", "r1-zero", "--out", str(tmp_path), "rl.steps=1"]) == 2
        assert f"pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run_lock(tmp_path):  # kill -9 released it: no stale lock
        pass


def _file_task(tmp_path, n=12):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"Compute {i} + {i}", "answer": str(2 * i)}) + "\n" for i in range(n)))
    return path


def test_changed_data_file_is_refused_on_resume_unless_allowed(tmp_path):
    data = _file_task(tmp_path)
    cfg = validate({"task": str(data)})
    run = tmp_path / "run"
    run.mkdir()
    check_run_dir(run, cfg)
    record_run(run, cfg)
    check_run_dir(run, cfg)  # same data: resumes
    data.write_text(data.read_text().replace("Compute 3 + 3", "Compute 3 + 4"))
    with pytest.raises(ConfigError, match=f"changed since this run started: {data}"):
        check_run_dir(run, cfg)
    check_run_dir(run, validate({"task": str(data)}, overrides=["data.allow_changed=true"]))  # not a config change


def test_failed_start_leaves_nothing_that_blocks_the_corrected_command(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["run", "r1-zero", "--out", str(run), "model=/nonexistent/model", "task=" + str(_file_task(tmp_path)),
                 "data.test_size=4"]) == 2
    assert not (run / "config.yaml").exists() and not (run / "state.json").exists()
    check_run_dir(run, validate({"task": str(tmp_path / "qa.jsonl")}, overrides=["data.test_size=4"]))


# ---------------------------------------------------------------- input checks


def test_rl_at_temperature_zero_is_refused_naming_the_field():
    with pytest.raises(ConfigError, match="rl.sampling.temperature.*RL needs temperature > 0"):
        load_config("r1-zero", ["sampling.temperature=0"])
    with pytest.raises(ConfigError, match="temperature > 0"):
        load_config("r1-zero", ["rl.sampling.temperature=0"])
    load_config("r1-zero", ["eval.sampling.temperature=0"])  # greedy evaluation is fine


@pytest.mark.parametrize("value", ["0.75", None, float("nan"), float("inf"), 1j, [1.0]])
def test_a_reward_that_is_not_a_real_number_scores_zero_with_a_warning(monkeypatch, caplog, value):
    monkeypatch.setitem(REWARD_FUNCTIONS, "odd", lambda task, **_: (lambda response, example=None, **__: value))
    totals, raw = Rewards({"odd": 1.0}, EchoTask())(["a", "b"], EchoTask().examples("train")[:2], [{}, {}])
    assert totals == [0.0, 0.0] and raw["odd"] == [0.0, 0.0]
    assert "reward 'odd' failed" in caplog.text


@pytest.mark.parametrize("value", [True, 1, 0.5, __import__("numpy").float32(0.25)])
def test_real_rewards_are_used(monkeypatch, value):
    monkeypatch.setitem(REWARD_FUNCTIONS, "ok", lambda task, **_: (lambda response, example=None, **__: value))
    totals, _ = Rewards({"ok": 1.0}, EchoTask())(["a"], EchoTask().examples("train")[:1], [{}])
    assert totals == [float(value)]


@pytest.mark.parametrize("answer", ["1" + "+1" * 1000, "(" * 5000 + "1" + ")" * 5000, "9" * 100_000, "1*" * 50_000 + "1"])
def test_countdown_scorer_survives_hostile_answers(answer):
    from r1lab.tinyworld.problems import score

    example = Example(id="c", prompt="Make 7 from 1 2 4", answer="1+2+4", meta={"kind": "countdown", "numbers": [1, 2, 4],
                                                                               "target": 7})
    assert score(answer, example) == 0.0


class _Model:
    config = SimpleNamespace(max_position_embeddings=160)


class _Engine:
    """Streams a fixed answer; the second question raises in generation (a bad line must not end chat)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.model, self.prompts, self.fail_next = tokenizer, _Model(), [], False

    def stream(self, prompt, sampling):
        self.prompts.append(prompt)
        if "boom" in prompt:
            raise ValueError("generation failed")
        yield "<think>x</think> <answer>4</answer>"


def test_chat_survives_bad_bytes_overlong_lines_and_a_failing_generation(tiny_model_dir):
    from r1lab.api.terminal_chat import chat

    tokenizer = load_tokenizer(str(tiny_model_dir))
    engine = _Engine(tokenizer)
    lines = [UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"), "caf\udce9 2 + 2?", "x" * 200_000,
             "1 2 3 " * 100, "boom", "2 + 2?"]

    def input_fn(prompt=""):
        if not lines:
            raise EOFError
        line = lines.pop(0)
        if isinstance(line, Exception):
            raise line
        return line

    console = Console(record=True, width=200)
    chat(str(tiny_model_dir), input_fn=input_fn, console=console, engine=engine)
    text = console.export_text()
    assert "not valid text" in text and "200,026 characters; this model reads at most 160 tokens" in text and "shorten it" in text
    assert "could not answer that: generation failed" in text and "bye" in text
    assert len(engine.prompts) == 3 and "caf? 2 + 2?" in engine.prompts[0] and "2 + 2?" in engine.prompts[-1]


# ---------------------------------------------------------------- whole runs (slow)


def _recipe(tmp_path, tiny_model_dir) -> Path:
    recipe = tmp_path / "micro.yaml"
    recipe.write_text(textwrap.dedent(f"""
        recipe: micro
        model: {tiny_model_dir}
        task: {_file_task(tmp_path)}
        data: {{test_size: 4}}
        sampling: {{max_new_tokens: 8}}
        rl: {{steps: 3, prompts_per_step: 2, group_size: 2, checkpoint_every: 1}}
        eval: {{k: 1}}
        stages: [{{name: zero, kind: rl}}]
        """))
    return recipe


@pytest.mark.slow
def test_cli_diverged_run_exits_nonzero_without_final(tmp_path, tiny_model_dir, capsys):
    run = tmp_path / "run"
    recipe = _recipe(tmp_path, tiny_model_dir)
    # the probe used accuracy + format; an untrained model earns neither, so digits (and a constant) stand in
    assert main(["run", str(recipe), "--out", str(run), "rl.rewards={one: 1.0e308, digits: 1.0e308}"]) == 2
    assert "diverged" in capsys.readouterr().err
    assert not (run / "zero" / "final").exists() and not (run / "final").exists()
    # corrected on a new directory, the same recipe runs; a failed start (bad model) then the fix on one --out works
    fixed = tmp_path / "fixed"
    assert main(["run", str(recipe), "--out", str(fixed), "model=/nonexistent/model"]) == 2
    assert main(["run", str(recipe), "--out", str(fixed)]) == 0
    assert (fixed / "final" / "config.json").exists() and (fixed / "data.json").exists()


KILL_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
from helpers import digits, rl_config, train
from r1lab.models.io import load_model
from r1lab.rewards.registry import REWARD_FUNCTIONS
REWARD_FUNCTIONS["digits"] = lambda task, **_: digits
model, tokenizer = load_model({model!r}, device="cpu", dtype="fp32")
train(model, tokenizer, rl_config(steps=8, prompts_per_step=2, group_size=4, checkpoint_every=1), sys.argv[1])
torch.save({{n: p.detach() for n, p in model.named_parameters()}}, sys.argv[1] + "/params.pt")
"""


def _kill_trials(tmp_path, script: str, rows_of, trials: int = 4, seed: int = 13, started=lambda out: True):
    """Runs `script OUT` once whole, then `trials` times killed (-9) at a random moment after started(OUT) holds, and
    run again to the end: every resumed run's rows_of(OUT) must equal the whole run's. Returns (reference, trials)."""
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent), "R1LAB_CACHE": str(tmp_path / "cache")}

    def run(out, kill_after=None) -> tuple[int, float]:
        """(exit code, seconds from started(out) to the end)."""
        proc = subprocess.Popen([sys.executable, str(path), str(out)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        while proc.poll() is None and not started(out):
            time.sleep(0.02)
        t0 = time.time()
        if kill_after is not None:
            try:
                proc.wait(timeout=kill_after)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        return proc.wait(), time.time() - t0

    reference = tmp_path / "reference"
    assert run(reference)[0] == 0
    expected = rows_of(reference)
    code, duration = run(tmp_path / "timing")
    assert code == 0
    rng, outs = random.Random(seed), []
    for trial in range(trials):
        out = tmp_path / f"trial-{trial}"
        run(out, kill_after=rng.uniform(0.3, 1.0) * duration)
        assert run(out)[0] == 0, f"trial {trial}: the resumed run failed"
        assert rows_of(out) == [pytest.approx(row, rel=1e-5, abs=1e-6) for row in expected], f"trial {trial}"
        outs.append(out)
    return reference, outs


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_matches_the_uninterrupted_run(tmp_path, tiny_model_dir):
    keys = ("step", "reward", "loss", "grad_norm", "completion_len_mean")

    def rows_of(out):
        return [{k: r.get(k) for k in keys} for r in metrics_rows(out)]

    reference, trials = _kill_trials(tmp_path, KILL_SCRIPT.format(tests=str(TESTS), model=str(tiny_model_dir)), rows_of)
    want = torch.load(reference / "params.pt")
    for out in trials:
        got = torch.load(out / "params.pt")
        for name in want:  # as test_trainer's resume test: equal up to float summation order
            torch.testing.assert_close(want[name], got[name], atol=1e-5, rtol=1e-5, msg=f"{out.name}: {name}")


TOOLS_KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from helpers import MICRO
from r1lab.ui.cli import main
sys.exit(main(["run", "r1-tools", "--out", sys.argv[1], *MICRO, "stages.traces.prompts=96", "sft.epochs=3",
               "sft.batch_size=16", "sft.micro_batch_size=16", "rl.steps=6", "rl.checkpoint_every=1",
               "sampling.max_new_tokens=48", "pretrain.steps=30"]))
"""


@pytest.mark.slow
def test_kill_9_during_a_tool_run_then_resume_gives_the_same_curve(tmp_path):
    """The r1-tools recipe (traces, SFT, GRPO with tools) in miniature, killed at random moments of its RL stage and
    resumed: the RL stage's metrics, tool calls included, are the uninterrupted run's."""
    keys = ("step", "reward", "loss", "completion_len_mean", "tool_calls_mean", "tool_error_frac", "masked_token_frac")

    def rows_of(out):
        rows = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("stage") == "tools-rl" and "reward" in r]
        return [{k: r.get(k) for k in keys} for r in rows]

    # killed in the RL stage (the one with tools): from its first metrics row on
    reference, _ = _kill_trials(tmp_path, TOOLS_KILL_SCRIPT.format(tests=str(TESTS)), rows_of, trials=2,
                                started=lambda out: (out / "tools-rl" / "metrics.jsonl").exists())
    rows = read_jsonl(reference / "metrics.jsonl")
    assert sum(r.get("tool_calls_mean", 0) for r in rows) > 0  # the episodes did call tools: the resume covers them
    meta = json.loads((reference / "final" / "r1lab.json").read_text())
    assert meta["tools"] == ["r1lab.tools:calculator", "r1lab.tinyworld.lookup:search"] and meta["max_turns"] == 4
    tokenizer = load_tokenizer(str(reference / "final"))
    assert all(len(tokenizer(t, add_special_tokens=False)["input_ids"]) == 1 for t in ("<tool>", "</result>", "search"))


class _LongTask(EchoTask):
    def examples(self, split):
        return [*super().examples(split), Example(id="huge", prompt="x" * 2_000_000, answer="0"),
                Example(id="long", prompt="1 2 3 " * 60, answer="0")]


def test_prompts_longer_than_the_context_are_named_up_front(tiny_model_dir, caplog):
    from r1lab.data.limits import fit_context

    tokenizer = load_tokenizer(str(tiny_model_dir))
    common = {"template": "r1-zero", "system": ""}
    with pytest.raises(ValueError, match=r"2 train prompt\(s\) longer .*id 'huge' \(2,000,\d+ characters\), id 'long' "
                                         r"\(\d+ tokens\).*data.too_long=drop"):
        fit_context(_LongTask(), tokenizer, 160, 32, **common, splits=("train",))
    task = fit_context(_LongTask(), tokenizer, 160, 32, **common, mode="drop")
    assert [e.id for e in task.examples("train")] == [e.id for e in EchoTask().examples("train")]
    assert task.score("2", Example(id="1", prompt="", answer="2")) == 1.0 and "left out" in caplog.text
    assert fit_context(EchoTask(), tokenizer, 160, 32, **common).__class__ is EchoTask  # nothing over: unchanged
    with pytest.raises(ValueError, match="sampling.max_new_tokens=200 leaves no room"):
        fit_context(EchoTask(), tokenizer, 160, 200, **common)
