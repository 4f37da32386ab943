import json

import pytest

from r1lab.evaluation.report import read_jsonl, render_response, smooth, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics_rows():
    rows = []
    for stage, n in (("r1-zero", 12), ("rl", 8)):
        for step in range(1, n + 1):
            r = {"stage": stage, "step": step, "reward": 0.1 * step, "reward/accuracy": 0.05 * step,
                 "reward/format": 0.05 * step, "accuracy": min(1.0, 0.08 * step), "format_rate": 0.9,
                 "completion_len_mean": 40 + step, "completion_len_max": 90 + 2 * step, "reflection_rate": 0.01 * step,
                 "kl": 0.001 * step, "clip_frac": 0.02, "entropy": 1.5 - 0.05 * step, "lr": 1e-6}
            if step % 3 == 0:  # keys may be missing in some rows
                del r["reflection_rate"], r["kl"]
            if stage == "rl":
                del r["entropy"]
            rows.append(r)
    rows[4]["kl"] = float("nan")  # not plottable: skipped, not fatal
    return rows


@pytest.fixture
def run_dir(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    lines = [json.dumps(r) for r in _metrics_rows()]
    (d / "metrics.jsonl").write_text("\n".join(lines) + '\n{"stage": "rl", "step": 9, "rew')  # crash mid-write
    samples = [
        {"stage": "r1-zero", "step": 1, "prompt": "User: 2+2? Assistant: <think>", "response": " hmm </think> <answer> 5 </answer>",
         "reward": 0.0, "correct": False, "answer": "4"},
        {"stage": "r1-zero", "step": 12, "prompt": "User: 3+3? Assistant: <think>",
         "response": " 3+3 = 6 & 6<7 </think> <answer> 6 </answer><script>alert(1)</script>", "reward": 2.0,
         "correct": True, "answer": "6"},
        {"stage": "rl", "step": 8, "prompt": "p", "response": "<think> only thinking", "reward": 0.0, "correct": False, "answer": "x"},
    ]
    (d / "samples.jsonl").write_text("\n".join(json.dumps(s) for s in samples) + "\n")
    summary = {"recipe": "tinyworld-r1zero", "model": "tiny-llama", "task": "tinyworld", "wall_seconds": 125.0,
               "stages": [{"name": "r1-zero", "steps": 12, "wall_seconds": 100.0,
                           "eval_before": {"pass@1": 0.125, "k": 1, "n": 64, "format_rate": 0.5, "note": "text",
                                           "cons@4": 0.25, "samples": [{"prompt": "p"}]},
                           "eval_after": {"pass@1": 0.6875, "k": 1, "n": 64, "format_rate": 0.98}},
                          {"name": "rl", "steps": 8, "wall_seconds": 25.0, "eval_after": {"pass@1": 0.71875, "k": 1, "n": 64}}]}
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_full_report(run_dir):
    with pytest.warns(UserWarning, match=r"metrics.jsonl:21"):
        out = write_report(run_dir)
    assert out == run_dir / "report.html"
    for name in ("reward", "accuracy", "length", "reflection", "health"):
        data = (run_dir / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    page = out.read_text()
    assert page.count('src="data:image/png;base64,') == 5
    assert "tinyworld-r1zero" in page and "tiny-llama" in page
    for number in ("0.125", "0.6875", "0.7188", "64", "0.98"):
        assert f"<td>{number}</td>" in page
    assert "note" not in page and "<th>samples</th>" not in page  # non-numeric eval keys stay out of the table
    assert page.index("<th>pass@1</th>") < page.index("<th>cons@4</th>") < page.index("<th>k</th>") < page.index("<th>format_rate</th>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>" not in page
    assert '<span class="think">&lt;think&gt;</span>' in page  # pre-filled tag shown, as text, dimmed
    assert "6&lt;7" in page and "&amp;" in page
    assert '<span class="answer">&lt;answer&gt;</span>' in page
    assert "step 1" in page and "step 12" in page and "step 8" in page
    assert page.count("<td>before</td>") == 1  # the rl stage has no eval_before: no empty row


def test_metrics_only(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps({"stage": "s", "step": i, "reward": i}) for i in range(1, 4)))
    page = write_report(tmp_path).read_text()
    assert (tmp_path / "plots" / "reward.png").exists()
    assert not (tmp_path / "plots" / "length.png").exists()  # nothing to plot: no empty figure
    assert page.count("data:image/png") == 1 and "Evaluation" not in page and "Samples" not in page


def test_resumed_steps_keep_last_value_and_stale_plots_go(tmp_path):
    from r1lab.evaluation.report import metric_series

    rows = [{"stage": "s", "step": i, "reward": 0.0} for i in (1, 2, 3)] + [{"stage": "s", "step": 2, "reward": 1.0}]
    assert metric_series(rows, "reward") == {"s": ([1, 2, 3], [0.0, 1.0, 0.0])}
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "length.png").write_bytes(b"old")
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    write_report(tmp_path)
    assert not (tmp_path / "plots" / "length.png").exists()


def test_missing_or_empty_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        write_report(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        write_report(tmp_path)


def test_bad_summary_names_file_and_field(tmp_path):
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="summary.json"):
        write_report(tmp_path)
    (tmp_path / "summary.json").write_text('{"stages": 3}')
    with pytest.raises(ValueError, match="'stages'"):
        write_report(tmp_path)


def test_read_jsonl_skips_bad_lines(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"a": 1}\n\n[1, 2]\n{"a": 2}\n{"a"')
    with pytest.warns(UserWarning) as w:
        assert read_jsonl(p) == [{"a": 1}, {"a": 2}]
    assert len(w) == 2


def test_smooth():
    assert smooth([]) == []
    assert smooth([1.0, 2.0, 3.0, 4.0, 5.0], window=3) == pytest.approx([1.5, 2.0, 3.0, 4.0, 4.5])
    assert smooth([1.0, 5.0, 2.0], window=1) == [1.0, 5.0, 2.0]
    trend = [float(i) for i in range(100)]
    assert smooth(trend)[50] == pytest.approx(50.0)  # centered: no lag on a trend
    with pytest.raises(ValueError):
        smooth([1.0], window=0)


def test_render_response_escapes_everything():
    h = render_response("a<b <think>x</think> <answer>&</answer> <think2>", thinking=False)
    assert h == ('a&lt;b <span class="think">&lt;think&gt;</span><span class="think">x</span>'
                 '<span class="think">&lt;/think&gt;</span> <span class="answer">&lt;answer&gt;</span>'
                 '<span class="answer">&amp;</span><span class="answer">&lt;/answer&gt;</span> &lt;think2&gt;')
