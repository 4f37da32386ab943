"""log.report_to: each tracker's own reader finds the metrics.jsonl rows, the config and the final table, offline, in
RUN/trackers/; a resumed run continues its tracker runs; a missing or unknown tracker fails at load."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import metrics_rows

from r1lab.config import ConfigError, ControlConfig
from r1lab.recipes.load import load_config, validate_control
from r1lab.recipes.rundir import check_run_dir, record_run
from r1lab.ui.cli import main

BIN = Path(sys.executable).parent  # the venv's wandb and trackio commands


def by_step(points) -> dict:
    """{step: value}, a step logged twice (before a kill and again after the resume) keeping its later value."""
    return {step: value for step, value in points}


def jsonl(run: Path, stage: str, key: str) -> dict:
    return {r["step"]: r[key] for r in metrics_rows(run) if r["stage"] == stage and key in r}


def tensorboard(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def wandb_records(run: Path) -> list[list[dict]]:
    """Each attempt's records (offline-run-* folders, oldest first), read by wandb's own `wandb leet inspect`."""
    files = sorted((run / "trackers" / "wandb").glob("offline-run-*/run-*.wandb"))
    return [[json.loads(line) for line in subprocess.run([BIN / "wandb", "leet", "inspect", "--json", str(f)], check=True,
                                                         capture_output=True, text=True, timeout=120).stdout.splitlines()]
            for f in files]


def trackio(run: Path, what: str, *args) -> dict:
    """trackio's own CLI on the run's database (another process: trackio fixes its directory at import)."""
    env = {**os.environ, "TRACKIO_DIR": str(run / "trackers" / "trackio")}
    command = ["list", "runs"] if what == "runs" else ["get", what, *args, "--run", run.name]
    out = subprocess.run([BIN / "trackio", *command, "--project", "r1lab", "--json"], env=env, check=True, capture_output=True,
                         text=True, timeout=120)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_rl_and_sft_stages_reach_every_tracker_across_a_resume(tiny_model_dir, tmp_path, monkeypatch, offline_trackers,
                                                               one_thread):
    recipe = tmp_path / "chain.yaml"
    recipe.write_text(f"""
model: {tiny_model_dir}
data: {{test_size: 3}}
sampling: {{max_new_tokens: 8}}
rl: {{steps: 4, prompts_per_step: 2, group_size: 2, checkpoint_every: 2}}
sft: {{epochs: 1, batch_size: 2, micro_batch_size: 2, warmup_steps: 0, eval_fraction: 0}}
eval: {{k: 1}}
log: {{report_to: [tensorboard, wandb, trackio]}}
stages:
  - {{name: zero, kind: rl}}
  - name: traces
    kind: generate
    init: zero
    k: 2
    prompts: 4
    filters: {{require_correct: false, require_format: false, require_summary: false, min_language_share: null,
               max_repetition: null, drop_truncated: false}}
  - {{name: tuned, kind: sft, init: base, data: [traces]}}
""")
    run = tmp_path / "run"
    # Killed in step 4 of the rl stage (a reward of the user's own, called once per step, interrupts the 4th call):
    # steps 1-3 were reported, the checkpoint is step 2's, so 3 is reported again.
    (tmp_path / "killer.py").write_text(textwrap.dedent("""
        calls = 0
        def kill_at_4(completions, **kwargs):
            global calls
            calls += 1
            if calls == 4:
                raise KeyboardInterrupt
            return [0.0] * len(completions)
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "killer", raising=False)
    killer = ["rl.rewards.killer:kill_at_4=0.0"]
    assert main(["run", str(recipe), "--out", str(run), *killer]) == 130
    assert main(["run", str(recipe), "--out", str(run), *killer]) == 0

    reward, loss = jsonl(run, "zero", "reward"), jsonl(run, "tuned", "loss")
    assert sorted(reward) == [1, 2, 3, 4] and {1, 2} <= set(loss)  # the stages' steps overlap
    summary = json.loads((run / "summary.json").read_text())
    models = [row["model"] for row in summary["table"]]

    # TensorBoard: a folder per stage, x = the stage's step; step 3's first report is hidden by the resume's purge
    for stage, key, logged in (("zero", "reward", reward), ("tuned", "loss", loss)):
        scalars = tensorboard(run / "trackers" / "tensorboard" / stage).Scalars(key)
        assert [s.step for s in scalars] == sorted(logged)
        assert [s.value for s in scalars] == pytest.approx([logged[k] for k in sorted(logged)], rel=1e-6)
    texts = tensorboard(run / "trackers" / "tensorboard")
    config = texts.Tensors("config/text_summary")[-1].tensor_proto.string_val[0].decode()
    table = texts.Tensors("summary/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "report_to:" in config and "checkpoint_every: 2" in config
    assert all(f"| {m} |" in table for m in models)

    # wandb: one run id, an offline-run folder per attempt; the first closed as failed, each stage on its own step axis
    first, second = wandb_records(run)
    assert len({r["run"]["run_id"] for r in (*first, *second) if r["type"] == "run"}) == 1
    exits = [[r["exit"]["exit_code"] for r in records if r["type"] == "exit"] for records in (first, second)]
    assert exits == [[1], [0]]
    history = [r["history"]["item"] for r in (*first, *second) if r["type"] == "history"]
    assert [h["zero/step"] for h in history if "zero/reward" in h] == [1, 2, 3, 3, 4]  # step 3 from both attempts
    assert by_step((h["zero/step"], h["zero/reward"]) for h in history if "zero/reward" in h) == pytest.approx(reward)
    assert by_step((h["tuned/step"], h["tuned/loss"]) for h in history if "tuned/loss" in h) == pytest.approx(loss)
    started = next(r["run"] for r in second if r["type"] == "run")
    assert started["display_name"] == "run" and started["config"]["update"]["rl"]["checkpoint_every"] == 2
    assert any("summary" in r["summary"]["update"] for r in second if r["type"] == "summary")

    # trackio: the same run continued by the resume, <stage>/<metric> against the stage's step
    assert trackio(run, "runs")["runs"] == ["run"]
    for metric, logged in (("zero/reward", reward), ("tuned/loss", loss)):
        values = trackio(run, "metric", "--metric", metric)["values"]
        assert by_step((v["step"], v["value"]) for v in values) == pytest.approx(logged)
    assert trackio(run, "run")["config"]["rl"]["checkpoint_every"] == 2
    final = trackio(run, "metric", "--metric", "summary")["values"][-1]["value"]["_value"]
    assert [row["model"] for row in final] == models


def test_control_reports_each_iteration_and_starts_a_new_run_each_time(tmp_path, offline_trackers):
    from r1lab.gym.run import run_control

    cfg = ControlConfig(algo="grpo", groups=2, group_size=2, max_env_steps=300, eval_every=200, eval_episodes=2, hidden=[8],
                        log={"report_to": ["tensorboard", "wandb"]})
    out = tmp_path / "cartpole"
    for _ in range(2):  # control never resumes: the second run is a new one in each tracker
        summary = run_control(cfg, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    scalars = tensorboard(out / "trackers" / "tensorboard" / "control").Scalars("mean_return")
    assert {s.step: s.value for s in scalars} == pytest.approx({r["iteration"]: r["mean_return"] for r in rows})
    first, second = wandb_records(out)
    ids = {next(r["run"]["run_id"] for r in records if r["type"] == "run") for records in (first, second)}
    assert len(ids) == 2
    last = {k: v for r in second if r["type"] == "summary" for k, v in r["summary"]["update"].items()}
    assert last["control/mean_return"] == pytest.approx(rows[-1]["mean_return"]) and "summary" in last
    assert summary["env_steps"] >= 300


def test_sft_command_reports_its_steps_and_result(tiny_model_dir, tmp_path, offline_trackers, one_thread):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Compute {i} + 1", "completion": f"<answer> {i + 1} </answer>"}) + "\n"
                             for i in range(8)))
    out = tmp_path / "sft"
    assert main(["sft", str(tiny_model_dir), "--data", str(pairs), "--out", str(out), "epochs=1", "batch_size=2",
                 "micro_batch_size=2", "eval_fraction=0", "log.report_to=tensorboard"]) == 0
    events = tensorboard(out / "trackers" / "tensorboard" / "sft")
    assert {s.step: s.value for s in events.Scalars("loss")} == pytest.approx(jsonl(out, "sft", "loss"))
    table = tensorboard(out / "trackers" / "tensorboard").Tensors("summary/text_summary")[0].tensor_proto.string_val[0]
    assert b"| steps | epochs | train_loss |" in table


def test_nothing_is_imported_without_trackers(tmp_path):
    code = f"""
import sys
from pathlib import Path
from r1lab.recipes.load import load_config
from r1lab.store.logs import append_metrics
from r1lab.store.trackers import reporting
with reporting(load_config("r1-zero").log, Path({str(tmp_path)!r}), {{}}) as trackers:
    append_metrics(Path({str(tmp_path / "metrics.jsonl")!r}), {{"stage": "s", "step": 1, "reward": 0.5}})
    trackers.summary([{{"model": "base"}}])
print(sorted(m for m in ("wandb", "tensorboard", "trackio", "tensorboardX") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.stdout.strip() == "[]" and not (tmp_path / "trackers").exists()
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


def test_report_to_names_known_installed_trackers(monkeypatch):
    assert load_config("r1-zero", ["log.report_to=tensorboard,wandb,tensorboard"]).log.report_to == ["tensorboard", "wandb"]
    assert load_config("r1-zero", ["log.report_to=[trackio]"]).log.report_to == ["trackio"]
    with pytest.raises(ConfigError, match=r"log.report_to: unknown tracker 'wandbb' \(did you mean 'wandb'\?\): "
                                          "known trackers are wandb, tensorboard, trackio"):
        load_config("r1-zero", ["log.report_to=[wandbb]"])
    with pytest.raises(ConfigError, match="log.projekt: unknown field"):
        load_config("r1-zero", ["log.projekt=x"])
    monkeypatch.setitem(sys.modules, "trackio", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"trackio is not installed: pip install 'r1lab\[trackio\]'"):
        load_config("r1-zero", ["log.report_to=[tensorboard, trackio]"])
    with pytest.raises(ConfigError, match="trackio is not installed"):
        validate_control({"log": {"report_to": ["trackio"]}})


def test_a_resume_may_change_where_a_run_reports(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    record_run(run, load_config("r1-zero"))
    check_run_dir(run, load_config("r1-zero", ["log.report_to=[tensorboard]", "log.project=other", "log.run_name=x"]))
    with pytest.raises(ConfigError, match="different config"):
        check_run_dir(run, load_config("r1-zero", ["rl.lr=1e-3"]))
