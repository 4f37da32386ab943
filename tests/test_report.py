import json

import pytest

from r1lab.evaluation.plots import fastest_rise, smooth
from r1lab.evaluation.report import render_response, write_report
from r1lab.store.logs import read_jsonl
from r1lab.tinyworld.aha import aha_sample, corrects_itself

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
    for name in ("reward", "accuracy", "length", "reflection", "r1-zero", "health"):
        data = (run_dir / "plots" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
    page = out.read_text()
    assert page.count('src="data:image/png;base64,') == 6
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
    from r1lab.evaluation.plots import metric_series

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
    p.write_text(json.dumps({"a": "x\u2028y\x85z"}, ensure_ascii=False) + "\n", encoding="utf-8")  # as append_jsonl writes
    assert read_jsonl(p) == [{"a": "x\u2028y\x85z"}]  # line separators inside a string don't split the row


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


def _sample(step, response, correct):
    return {"stage": "r1-zero", "step": step, "prompt": "User: Compute 47 + 38 - 26. Assistant: <think>",
            "response": response, "correct": correct, "answer": "59"}


def test_aha_sample_is_the_first_self_correction_that_ends_right():
    decorative = " 47 + 38 = 75. check 47 + 30 = 77, 77 + 8 = 75 ok. then 75 - 26 = 49. </think> <answer> 49 </answer>"
    wrong_end = (" 47 + 38 = 75. check 47 + 30 = 77, 77 + 8 = 85, not 75. wait, recheck 47 + 38 = 85. then 85 - 26 = 69."
                 " </think> <answer> 69 </answer>")
    confirms = " 47 + 38 = 85. check 47 + 30 = 77, 77 + 8 = 85 ok. then 85 - 26 = 59. </think> <answer> 59 </answer>"
    aha = (" 47 + 38 = 75. 验算 47 + 30 = 77, 77 + 8 = 85, 不是 75. 等等, 再算 47 + 38 = 85. 然后 85 - 26 = 59."
           " </think> <answer> 59 </answer>")
    no_phrase = " 47 + 38 = 75. 47 + 38 = 85. then 85 - 26 = 59. </think> <answer> 59 </answer>"
    assert not corrects_itself(decorative)  # a "check" that finds nothing (here: copies the wrong sum)
    assert corrects_itself(wrong_end) and corrects_itself(aha)
    assert not corrects_itself(confirms) and not corrects_itself(no_phrase)  # nothing wrong / no re-check
    samples = [_sample(1, decorative, False), _sample(2, confirms, True), _sample(3, no_phrase, True),
               _sample(4, wrong_end, False), _sample(9, aha, True), _sample(7, aha.replace("75", "65"), True)]
    assert aha_sample(samples)["step"] == 7  # by step, not by order in the file
    assert aha_sample(samples[:5])["step"] == 9
    assert aha_sample(samples[:4]) is None


def test_a_rejected_estimate_corrected_by_an_honest_check_is_an_aha():
    """The tiny world's aha: the first estimate is wrong, the check shows it (every equation right), then the
    response tries again and ends on another answer."""
    aha = (" x is about 6. check 7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7, too small. wait, try 7: 7 * 7 = 49, 49 + 23 = 72,"
           " 72 - 72 = 0 ok. </think> <answer> 7 </answer>")
    mixed = aha.replace("x is about", "x大约是").replace("check", "验算").replace("wait", "等等")
    dishonest = aha.replace("42 + 23 = 65", "42 + 23 = 61")  # the check that rejected 6 was itself wrong
    lucky = " x is about 6. 7 * 6 = 42, 42 + 23 = 65. </think> <answer> 7 </answer>"  # no re-check between
    first_right = " x is about 7. check 7 * 7 = 49, 49 + 23 = 72, 72 - 72 = 0 ok. </think> <answer> 7 </answer>"
    too_big = aha.replace("x is about 6. check 7 * 6 = 42, 42 + 23 = 65, 72 - 65 = 7, too small. wait, try 7",
                          "x is about 8. check 7 * 8 = 56, 56 + 23 = 79, 72 - 79 = -7, too big. wait, try 7")
    assert corrects_itself(too_big) and not corrects_itself(too_big.replace("= -7", "= 7"))  # a wrong difference
    assert corrects_itself(aha) and corrects_itself(mixed)
    assert not corrects_itself(dishonest) and not corrects_itself(lucky) and not corrects_itself(first_right)


def test_fastest_rise_is_where_the_smoothed_curve_climbs_most():
    import math

    steps = list(range(1, 201))
    values = [1 / (1 + math.exp(-(s - 120) / 10)) + 0.05 * (-1) ** s for s in steps]  # noisy logistic, steepest at 120
    step, slope = fastest_rise(steps, values)
    assert abs(step - 120) <= 5 and slope > 0.015
    assert fastest_rise(steps, [0.5 - 0.001 * s for s in steps]) is None  # never rises
    assert fastest_rise([1, 2], [0.0, 1.0]) is None


def test_report_shows_held_out_curves_and_the_aha_moment(tmp_path):
    rows = [{"stage": "r1-zero", "step": 0, "eval_pass@1": 0.3, "eval_length": 40.0, "eval_reflection": 0.05}]
    for step in range(1, 41):
        rows.append({"stage": "r1-zero", "step": step, "accuracy": 0.3 + 0.5 * (step > 20), "completion_len_mean": 40 + step,
                     "reflection_rate": 0.01 * step})
        if step % 10 == 0:
            rows[-1].update({"eval_pass@1": 0.3 + 0.01 * step, "eval_length": 40.0 + step, "eval_reflection": 0.01 * step})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    aha = (" 47 + 38 = 75. check 47 + 30 = 77, 77 + 8 = 85, not 75. wait, recheck 47 + 38 = 85. then 85 - 26 = 59."
           " </think> <answer> 59 </answer>")
    (tmp_path / "samples.jsonl").write_text(json.dumps(_sample(13, aha, True)))
    page = write_report(tmp_path).read_text()
    import re

    assert re.search(r"rose fastest at step (19|20|21|22) ", page) and "at r1-zero step 13" in page and "wait, recheck 47 + 38 = 85" in page


def test_tool_runs_get_their_curves_the_step_calling_pays_and_an_episode(tmp_path):
    from r1lab.evaluation.plots import pays_from

    rows = []
    for step in range(1, 41):  # calling pays from step 21 on: before, episodes that call are right less often
        calling, plain = (0.3, 0.5) if step <= 20 else (0.9, 0.4)
        rows.append({"stage": "tools-rl", "step": step, "accuracy": 0.5, "tool_call_rate": step / 40, "tool_error_frac": 0.1,
                     "turns_mean": 1.5, "accuracy_calling": calling, "accuracy_not_calling": plain})
    assert 15 <= pays_from(rows)["tools-rl"] <= 21  # the smoothed gap turns positive around the change, and stays
    assert pays_from([{**r, "accuracy_calling": 0.1} for r in rows])["tools-rl"] is None
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    episode = ("<think> x is about 4. check <tool>calculator(59 - (7 * 4 + 38))</tool><result>-7</result> too big. "
               "wait, try 3: <tool>calculator(59 - (7 * 3 + 38))</tool><result>0</result> ok. </think> <answer> 3 </answer>")
    (tmp_path / "samples.jsonl").write_text(json.dumps({"stage": "tools-rl", "step": 40, "prompt": "Solve 7 * x + 38 = 59",
                                                        "response": episode, "correct": True}) + "\n")
    page = write_report(tmp_path).read_text()
    assert (tmp_path / "plots" / "tools.png").exists()
    assert "<h2>Tools</h2>" in page and "from step" in page
    assert '<span class="tool">&lt;tool&gt;calculator(59 - (7 * 3 + 38))&lt;/tool&gt;</span>' in page
    assert '<span class="result">&lt;result&gt;0&lt;/result&gt;</span>' in page
