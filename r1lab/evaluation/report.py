"""Turn a run directory into one self-contained page (run_dir/report.html), with the plots of evaluation/plots.py."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path

from r1lab.evaluation.plots import (
    fastest_rise,
    is_number,
    metric_series,
    pays_from,
    write_plots,
)
from r1lab.store.logs import read_jsonl
from r1lab.tinyworld.aha import aha_sample, is_aha

SAMPLES_PER_STEP = 3


def format_number(v) -> str:
    """An int with thousands separators, a float with 4 significant digits."""
    return f"{v:,}" if isinstance(v, int) else f"{v:.4g}"


def format_duration(s) -> str:
    """Seconds as "42s", "3m 05s" or "1h 02m"; "" for a non-number."""
    if not is_number(s):
        return ""
    s = int(round(s))
    return f"{s // 3600}h {s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m {s % 60:02d}s" if s >= 60 else f"{s}s"


def _model_table(summary: dict, path: Path) -> str:
    """The paper-style table: every model of the run (base, stages, student) measured the same way."""
    rows = summary.get("table") or []
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: field 'table' must be a list of objects")
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in columns)
    body = "".join("<tr>" + "".join(f"<td>{format_number(r[k]) if is_number(r.get(k)) else html.escape(str(r.get(k, '–')))}</td>"
                                    for k in columns) + "</tr>" for r in rows)
    return f"<h2>Models</h2><table><tr>{head}</tr>{body}</table>"


def _base_html(summary: dict) -> str:
    """The base model's check honesty, as measured when it was built (tiny world): a decorative one explains a
    run whose length and reflection did not grow."""
    checks = summary.get("base_checks")
    if not isinstance(checks, dict) or not isinstance(checks.get("text"), str):
        return ""
    style = "" if checks.get("honest") else ' style="color:#b00"'
    return f"<h2>The base</h2><p{style}>The base model has {html.escape(checks['text'])}.</p>"


def _eval_table(summary: dict, path: Path) -> str:
    stages = summary.get("stages", [])
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise ValueError(f"{path}: field 'stages' must be a list of objects")
    evals = [s.get(w) for s in stages for w in ("eval_before", "eval_after") if isinstance(s.get(w), dict)]
    if not evals:
        return ""
    # pass@1, then the other pass@k / cons@k scores, then k and n, then whatever else is numeric
    keys = sorted({k for e in evals for k, v in e.items() if is_number(v)},
                  key=lambda k: (k != "pass@1", not k.startswith(("pass@", "cons@")), k not in ("k", "n"), k))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in ["stage", "steps", "time", "eval", *keys])
    body = []
    for s in stages:
        cells = [html.escape(str(s.get("name", ""))), format_number(s["steps"]) if is_number(s.get("steps")) else "",
                 format_duration(s.get("wall_seconds"))]
        whens = [w for w in ("before", "after") if isinstance(s.get(f"eval_{w}"), dict)] or ["–"]
        for w in whens:
            e = s.get(f"eval_{w}", {})
            vals = [format_number(e[k]) if is_number(e.get(k)) else "–" for k in keys]
            body.append("<tr>" + "".join(f"<td>{c}</td>" for c in [*cells, w, *vals]) + "</tr>")
            cells = ["", "", ""]  # stage info once, on its first row
    return f"<h2>Evaluation</h2><table><tr>{head}</tr>{''.join(body)}</table>"


def render_response(text: str, thinking: bool = False) -> str:
    """HTML of a completion with every character shown as text (tags too), the <think> part dimmed."""
    out, cls = [], "think" if thinking else ""
    for part in re.split(r"(</?think>|</?answer>|<tool>.*?</tool>|<result>.*?</result>)", text, flags=re.S):
        if not part:
            continue
        if part in ("<think>", "<answer>"):
            cls = part[1:-1]
        esc = html.escape(part)
        if part.startswith(("<tool>", "<result>")):  # a call and the tool's result, apart from the thinking
            out.append(f'<span class="{part[1:part.index(">")]}">{esc}</span>')
            continue
        out.append(f'<span class="{cls}">{esc}</span>' if cls else esc)
        if part in ("</think>", "</answer>"):
            cls = ""
    return "".join(out)


def _sample_html(r: dict) -> str:
    prompt, response = str(r.get("prompt", "")), str(r.get("response", ""))
    # r1-zero prompts end in "<think>": show the pre-filled tag so the response reads whole.
    if prompt.rstrip().endswith("<think>") and not response.lstrip().startswith("<think>"):
        response = "<think>" + response
    ok = {True: "✓ correct", False: "✗ wrong"}.get(r.get("correct"), "")
    reward = f"reward {format_number(r['reward'])}" if is_number(r.get("reward")) else ""
    ref = f"reference: {r['answer']}" if "answer" in r else ""
    meta = " · ".join(p for p in (ok, reward, ref) if p)
    return (f'<div class="sample"><div class="meta">{html.escape(meta)}</div>'
            f"<details><summary>prompt</summary><pre>{html.escape(prompt)}</pre></details>"
            f"<pre>{render_response(response)}</pre></div>")


def _aha_html(metrics: list[dict], samples: list[dict]) -> str:
    """R1-Zero's story in one paragraph: where accuracy rose fastest, and the first sample that caught its own mistake."""
    parts = []
    for stage, (steps, values) in metric_series(metrics, "accuracy").items():
        if (rise := fastest_rise(steps, values)) is not None:
            parts.append(f"<p>{html.escape(stage)}: training accuracy rose fastest at step {rise[0]} "
                         f"(smoothed, {10 * rise[1]:+.3f} per 10 steps).</p>")
    first = aha_sample(samples)
    if first is not None:
        found = sum(is_aha(r) for r in samples)
        parts.append(f"<p>The aha sample: the first logged completion that re-checks, finds its own mistake, corrects "
                     f"it and is right, at {html.escape(str(first.get('stage', 'run')))} step {first.get('step')} "
                     f"({found} of {len(samples)} logged samples do so).</p>{_sample_html(first)}")
    elif samples:
        parts.append("<p>No logged completion re-checks, finds its own mistake and ends right.</p>")
    return "<h2>The aha moment</h2>" + "".join(parts) if parts else ""


def _tools_html(metrics: list[dict], samples: list[dict]) -> str:
    """Episodes with tools: the step from which calling pays, and the last logged episode whose calls led it right."""
    parts = [f"<p>{html.escape(stage)}: episodes that call a tool are right more often than those that do not "
             + (f"from step {step} on (smoothed).</p>" if step is not None else "at no step from which it lasts.</p>")
             for stage, step in pays_from(metrics).items()]
    called = [r for r in samples if "<tool>" in str(r.get("response", "")) and r.get("correct")]
    if called:
        r = called[-1]
        parts.append(f"<p>An episode ({html.escape(str(r.get('stage', 'run')))} step {r.get('step')}): calls in blue, the "
                     f"tools' results in green.</p>{_sample_html(r)}")
    return "<h2>Tools</h2>" + "".join(parts) if parts else ""


def _samples_html(samples: list[dict]) -> str:
    by_stage: dict[str, list[dict]] = {}
    for r in samples:
        by_stage.setdefault(str(r.get("stage", "run")), []).append(r)
    parts = []
    for stage, rows in by_stage.items():
        steps = sorted({r.get("step") for r in rows if is_number(r.get("step"))}) or [None]
        for step in dict.fromkeys([steps[0], steps[-1]]):  # first and last logged step, once if equal
            parts.append(f"<h3>{html.escape(stage)} · step {step}</h3>")
            parts += [_sample_html(r) for r in [r for r in rows if r.get("step") == step][:SAMPLES_PER_STEP]]
    return "<h2>Samples</h2>" + "".join(parts) if parts else ""


CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{border-bottom:1px solid #ddd;margin-top:2rem}.sub{color:#666}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}td,th{padding:.25rem .7rem;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;display:block;margin:1rem 0}
.sample{border:1px solid #e3e3e3;border-radius:6px;padding:.6rem .8rem;margin:.8rem 0}.meta{font-size:.9rem;color:#555}
pre{white-space:pre-wrap;word-break:break-word;max-height:24rem;overflow:auto;margin:.4rem 0;font-size:.85rem}
.think{color:#999;font-style:italic}.answer{font-weight:600}.tool{color:#1565c0;font-style:normal}
.result{color:#2e7d32;background:#eef7ee;font-style:normal}summary{cursor:pointer;color:#666;font-size:.85rem}"""


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def write_report(run_dir: str | Path) -> Path:
    """Reads metrics.jsonl, samples.jsonl and summary.json (any may be missing); writes plots/*.png and report.html."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory '{run_dir}' does not exist")
    files = {n: run_dir / n for n in ("metrics.jsonl", "samples.jsonl", "summary.json")}
    if not any(p.exists() for p in files.values()):
        raise FileNotFoundError(f"'{run_dir}' has none of metrics.jsonl, samples.jsonl, summary.json: is it a run directory?")
    metrics = read_jsonl(files["metrics.jsonl"]) if files["metrics.jsonl"].exists() else []
    samples = read_jsonl(files["samples.jsonl"]) if files["samples.jsonl"].exists() else []
    summary = _load_json(files["summary.json"]) if files["summary.json"].exists() else {}

    plots = run_dir / "plots"
    made = write_plots(metrics, plots)

    title = " · ".join(str(summary[k]) for k in ("recipe", "model", "task") if summary.get(k)) or run_dir.name
    sub = f"total time {format_duration(summary.get('wall_seconds'))} · " if is_number(summary.get("wall_seconds")) else ""
    imgs = "".join(f'<img alt="{n}" src="data:image/png;base64,'
                   f'{base64.b64encode((plots / f"{n}.png").read_bytes()).decode()}">' for n in made)
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style>'
            f'</head><body><h1>{html.escape(title)}</h1><p class="sub">{html.escape(sub)}{html.escape(str(run_dir))}</p>'
            f"{_base_html(summary)}{_model_table(summary, files['summary.json'])}{_eval_table(summary, files['summary.json'])}{'<h2>Training</h2>' + imgs if imgs else ''}"
            f"{_aha_html(metrics, samples)}{_tools_html(metrics, samples)}{_samples_html(samples)}</body></html>")
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
