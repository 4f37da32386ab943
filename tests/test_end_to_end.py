"""The whole R1-Zero recipe through the CLI, with a micro budget: pretrain -> eval -> GRPO -> eval -> report."""

import json

import pytest
from helpers import MICRO

from r1lab.ui.cli import main


@pytest.mark.slow
def test_r1_zero_cli_micro_run_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("R1LAB_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["run", "r1-zero", "--out", str(run), *MICRO]) == 0

    summary = json.loads((run / "summary.json").read_text())
    assert summary["recipe"] == "r1-zero" and summary["task"] == "tinyworld" and summary["wall_seconds"] > 0
    stage = summary["stages"][0]
    assert stage["steps"] == 3 and stage["wall_seconds"] > 0
    for key in ("eval_before", "eval_after"):
        assert stage[key]["k"] == 2 and stage[key]["n"] == 4 and 0.0 <= stage[key]["pass@1"] <= 1.0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (run / "report.html").stat().st_size > 1000
    # The micro base's checks were judged when it was built: decorative after 6 steps, and the run says so.
    checks = summary["base_checks"]
    assert checks["problems"] == 4 and checks["honest"] is False and "DECORATIVE" in checks["text"]
    assert "The base model has DECORATIVE checks" in (run / "report.html").read_text()
    assert "has DECORATIVE checks" in capsys.readouterr().err
    for plot in ("reward", "accuracy", "length", "reflection"):
        assert (run / "plots" / f"{plot}.png").exists()
    assert (run / "final" / "config.json").exists() and (run / "final" / "tokenizer.json").exists()
    cached = list((tmp_path / "cache").glob("tinyworld-*"))
    assert len(cached) == 1 and (cached[0] / "r1lab.json").exists()

    # Same command again: everything is done, nothing is redone, the summary is unchanged.
    before = (run / "metrics.jsonl").read_text()
    assert main(["run", "r1-zero", "--out", str(run), *MICRO]) == 0
    assert (run / "metrics.jsonl").read_text() == before
    assert json.loads((run / "summary.json").read_text())["stages"][0]["eval_after"] == stage["eval_after"]

    # A different config on the same directory is refused rather than mixed in.
    assert main(["run", "r1-zero", "--out", str(run), *MICRO, "rl.lr=1e-3"]) == 2
    assert "different config" in capsys.readouterr().err

    # The trained model evaluates through the CLI like any HF model.
    out = tmp_path / "eval.json"
    assert main(["eval", str(run / "final"), "--task", "tinyworld", "--k", "2", "--n", "3", "--max-new-tokens", "8",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["n"] == 3


@pytest.mark.slow
def test_multi_stage_recipe_chains_rl_generate_sft_and_skips_finished_stages(tiny_model_dir, tmp_path):
    recipe = tmp_path / "chain.yaml"
    recipe.write_text(f"""
recipe: chain
model: {tiny_model_dir}
data: {{test_size: 3}}
sampling: {{max_new_tokens: 8}}
rl: {{steps: 2, prompts_per_step: 2, group_size: 2}}
sft: {{epochs: 1, batch_size: 4, micro_batch_size: 2, warmup_steps: 0}}
eval: {{k: 2}}
stages:
  - {{name: zero, kind: rl}}
  - name: traces
    kind: generate
    init: zero
    k: 2
    prompts: 4
    filters: {{require_correct: false, require_format: false, require_summary: false, min_language_share: null,
               max_repetition: null, drop_truncated: false}}
  - {{name: sft-student, kind: sft, init: base, data: [traces]}}
""")
    run = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["zero", "sft-student"]
    zero, student = summary["stages"]
    assert student["init"] == "base" and student["eval_before"] == zero["eval_before"]  # both start from the base
    assert summary["data"][0]["name"] == "traces" and summary["data"][0]["samples"] == 8
    assert len((run / "traces" / "samples.jsonl").read_text().splitlines()) == 8
    assert (run / "final").resolve() == (run / "sft-student" / "final").resolve()
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and "final" in p.parts}
    assert main(["run", str(recipe), "--out", str(run)]) == 0  # finished stages are not redone
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def test_generate_and_sft_commands(tiny_model_dir, tmp_path, capsys):
    traces = tmp_path / "traces.jsonl"
    assert main(["generate", str(tiny_model_dir), "--task", "tinyworld", "--n", "3", "--k", "2",
                 "--max-new-tokens", "8", "--out", str(traces), "data.test_size=4"]) == 0
    rows = [json.loads(line) for line in traces.read_text().splitlines()]
    assert len(rows) == 6 and all("kept" in r and "reasons" in r and "scores" in r for r in rows)

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Compute {i} + 1", "completion": f"<think> {i} + 1 = {i + 1}. </think> "
                                                   f"<answer> {i + 1} </answer>"}) + "\n" for i in range(12)))
    out = tmp_path / "sft"
    assert main(["sft", str(tiny_model_dir), "--data", str(pairs), "--out", str(out), "epochs=1", "batch_size=4",
                 "micro_batch_size=2", "eval_fraction=0.25"]) == 0
    assert (out / "final" / "config.json").exists() and len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert main(["sft", str(tiny_model_dir), "--data", str(pairs), "--out", str(out), "epochz=1"]) == 2
    assert "sft.epochz: unknown field" in capsys.readouterr().err


OPEN = "{require_correct: false, require_format: false, require_summary: false, min_language_share: null, max_repetition: null, drop_truncated: false}"
SMALL_SFT = ["sft.batch_size=4", "sft.micro_batch_size=2", "sft.epochs=1", "sft.warmup_steps=0"]
SMALL_STUDENT = "student.pretrain={hidden_size: 16, intermediate_size: 32}"


def _micro_generate(*stages):
    return [f"stages.{s}.{field}" for s in stages for field in ("prompts=3", "k=2", f"filters={OPEN}")]


@pytest.mark.slow
def test_r1_recipe_micro_run_every_stage_then_skips_them(tmp_path, monkeypatch):
    monkeypatch.setenv("R1LAB_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    args = ["run", "r1", "--out", str(run), *MICRO, *SMALL_SFT, SMALL_STUDENT,
            *_micro_generate("cold-start-data", "rejection-sampling", "distill-data"), "stages.general-answers.prompts=3",
            "stages.reasoning-rl.rl.steps=2", "stages.all-scenario-rl.rl.steps=2"]
    assert main(args) == 0
    summary = json.loads((run / "summary.json").read_text())
    models = ["base", "r1-zero", "cold-start", "reasoning-rl", "rejection-sft", "all-scenario-rl", "student", "distilled-student"]
    assert [row["model"] for row in summary["table"]] == models
    for row in summary["table"]:
        assert {"pass@1", "pass@k", "cons@k", "format_rate", "language_consistency", "mean_length", "params",
                "tinyworld/general pass@1"} <= set(row)
    params = {row["model"]: row["params"] for row in summary["table"]}
    assert params["student"] == params["distilled-student"] < params["base"]
    assert [s["name"] for s in summary["stages"]] == models[1:6] + ["distilled-student"]
    assert all("pass@k" in s["eval_after"] and "cons@k" in s["eval_after"] for s in summary["stages"])
    assert {d["name"] for d in summary["data"]} == {"cold-start-data", "rejection-sampling", "general-answers", "distill-data"}
    assert (run / "final").resolve() == (run / "all-scenario-rl" / "final").resolve()  # the R1 model, not the student
    sft_rows = (run / "general-answers" / "samples.jsonl").read_text().splitlines()
    assert len(sft_rows) == 3 and all('"kept": true' in r for r in sft_rows)
    stage4 = [json.loads(line) for line in (run / "all-scenario-rl" / "metrics.jsonl").read_text().splitlines()]
    assert all("reward/language" in m for m in stage4) and any("reward/helpfulness" in m for m in stage4)
    assert "<h2>Models</h2>" in (run / "report.html").read_text()

    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.parent.name in ("final", "checkpoints")}
    assert main(args) == 0  # every stage and evaluation is done: nothing is redone
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


@pytest.mark.slow
def test_distill_vs_rl_and_distill_commands(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("R1LAB_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "dvr"
    assert main(["run", "distill-vs-rl", "--out", str(run), f"teacher={tiny_model_dir}", *MICRO, *SMALL_SFT, SMALL_STUDENT,
                 *_micro_generate("traces"), "rl.steps=1"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert [row["model"] for row in summary["table"]] == ["teacher", "student", "distilled", "rl-only"]
    assert (run / "final").resolve() == (run / "distilled" / "final").resolve()
    assert not list((tmp_path / "cache").glob("tinyworld-*/config.json")) or len(list((tmp_path / "cache").iterdir())) == 1  # no base built

    out = tmp_path / "distill"
    assert main(["distill", "--teacher", str(tiny_model_dir), "--student", str(tiny_model_dir), "--out", str(out),
                 *MICRO, *SMALL_SFT, *_micro_generate("traces")]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [row["model"] for row in summary["table"]] == ["teacher", "student", "distilled"]
    assert main(["distill", "--teacher", str(tmp_path / "nope"), "--out", str(tmp_path / "d2")]) == 2
    assert "teacher" in capsys.readouterr().err


@pytest.mark.slow
def test_held_out_evaluation_during_rl_leaves_training_unchanged(tmp_path, monkeypatch):
    """eval.every adds held-out rows (before step 1, every N steps, at the last) without touching what trains:
    the engine's random state is put back, so the training samples and the final weights are the same."""
    from safetensors.torch import load_file

    monkeypatch.setenv("R1LAB_CACHE", str(tmp_path / "cache"))
    assert main(["run", "r1-zero", "--out", str(tmp_path / "plain"), *MICRO]) == 0
    assert main(["run", "r1-zero", "--out", str(tmp_path / "evals"), *MICRO, "eval.every=2", "eval.every_n=3"]) == 0
    plain, evals = ([json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
                    for run in ("plain", "evals"))
    assert [r["step"] for r in evals if "eval_pass@1" in r] == [0, 2, 3]
    assert all(0.0 <= r["eval_pass@1"] <= 1.0 and r["eval_length"] > 0 and "eval_reflection" in r for r in evals if "eval_pass@1" in r)
    trained = [r for r in evals if r["step"] > 0]
    assert [(r["reward"], r["completion_len_mean"]) for r in trained] == [(r["reward"], r["completion_len_mean"]) for r in plain]
    a, b = (load_file(str(tmp_path / run / "final" / "model.safetensors")) for run in ("plain", "evals"))
    assert all((a[k] == b[k]).all() for k in a)
