"""Turn a run directory into plots (run_dir/plots/*.png) and one self-contained page (run_dir/report.html)."""

from __future__ import annotations

import base64
import html
import json
import math
import re
import warnings
from pathlib import Path

# The object-oriented Figure API draws with Agg without touching pyplot's global backend,
# so this works headless and doesn't change the backend of a notebook that imports it.
from matplotlib.figure import Figure

from r1lab.config import REFLECTION_PHRASES
from r1lab.data.format import extract_answer

# file name, title, y label, metric keys ("reward/*" expands to every reward function). The eval_* keys
# are the held-out evaluations during RL (eval.every): R1-Zero's pictures are of those, not of training samples.
PLOTS = [
    ("reward", "Reward (total and per function)", "mean reward", ["reward", "reward/*"]),
    ("accuracy", "Accuracy: training samples, format rate, held-out pass@1", "fraction of completions",
     ["accuracy", "format_rate", "eval_pass@1"]),
    ("length", "Response length: training samples and held-out", "tokens", ["completion_len_mean", "eval_length"]),
    ("reflection", "Reflection rate: training samples and held-out", "fraction with reflection words",
     ["reflection_rate", "eval_reflection"]),
]
PANELS = [(k, [k]) for k in ("kl", "clip_frac", "entropy", "zero_std_frac")]  # different scales: one small panel each
# R1-Zero's three pictures side by side (the paper's Figures 2-3 and the reflection it describes).
STORY = [("accuracy", ["accuracy", "eval_pass@1"]), ("response length (tokens)", ["completion_len_mean", "eval_length"]),
         ("reflection rate", ["reflection_rate", "eval_reflection"])]
SAMPLES_PER_STEP = 3


def smooth(values: list[float], window: int | None = None) -> list[float]:
    """Centered moving average over `window` points (default ~1/10 of the run), cut short near the ends.

    Centered rather than an exponential average: plots are drawn after the fact, and an EMA lags a trend.
    """
    n = len(values)
    window = max(1, n // 10) if window is None else window
    if window < 1:
        raise ValueError(f"smooth: window must be >= 1, got {window}")
    h = window // 2
    csum = [0.0]
    for v in values:
        csum.append(csum[-1] + v)
    return [(csum[min(n, i + h + 1)] - csum[max(0, i - h)]) / (min(n, i + h + 1) - max(0, i - h)) for i in range(n)]


def fastest_rise(steps: list, values: list[float], window: int | None = None) -> tuple[int, float] | None:
    """(step, slope per step) where the smoothed curve rises fastest: the centred difference across one
    smoothing window, so a single lucky step does not count. None with fewer than 3 points or no rise."""
    n = len(values)
    if n < 3:
        return None
    window = max(3, n // 10) if window is None else window
    s, h = smooth(values, window), max(1, window // 2)
    slopes = [((s[min(n - 1, i + h)] - s[max(0, i - h)]) / (steps[min(n - 1, i + h)] - steps[max(0, i - h)]), steps[i])
              for i in range(n)]
    slope, step = max(slopes, key=lambda t: t[0])
    return (step, slope) if slope > 0 else None


_EQUATION = re.compile(r"(\d+) ([-+*]) (\d+) = (-?\d+)")


_CANDIDATE = re.compile(r"(?:about|大约是|try|试) (-?\d+)")


def _true_value(a: str, op: str, b: str) -> int:
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]


def corrects_itself(response: str, phrases=REFLECTION_PHRASES) -> bool:
    """Whether a response finds its own mistake by re-checking and puts it right. Either of:
    - it writes a wrong equation ("47 + 38 = 75"), then a reflection phrase, then the same equation right;
    - its first candidate answer ("x is about 6") is not its final answer, a reflection phrase comes
      between, and every equation it wrote is right: the check that rejected the candidate was honest.
    A check that only confirms ("check ... ok") finds nothing and does not count."""
    low = response.lower()

    def phrase_after(pos: int) -> int | None:
        seen = [i for i in (low.find(p.lower(), pos) for p in phrases) if i >= 0]
        return min(seen) if seen else None

    equations = list(_EQUATION.finditer(response))
    for wrong in equations:
        a, op, b, got = wrong.groups()
        true = _true_value(a, op, b)
        if int(got) == true or (start := phrase_after(wrong.end())) is None:
            continue
        if any(m.groups()[:3] == (a, op, b) and int(m.group(4)) == true for m in _EQUATION.finditer(response, start)):
            return True
    first, final = _CANDIDATE.search(response), extract_answer(response)
    return (first is not None and final is not None and first.group(1) != final.strip()
            and phrase_after(first.end()) is not None
            and all(int(m.group(4)) == _true_value(*m.groups()[:3]) for m in equations))


def aha_sample(samples: list[dict], phrases=REFLECTION_PHRASES) -> dict | None:
    """The first logged completion (by stage order, then step) that corrects itself and is right: R1-Zero's
    "aha moment", found in the run's own samples. None if no sample does."""
    stages = list(dict.fromkeys(str(r.get("stage", "run")) for r in samples))
    ordered = sorted(samples, key=lambda r: (stages.index(str(r.get("stage", "run"))),
                                             r["step"] if is_number(r.get("step")) else 0))
    return next((r for r in ordered if r.get("correct") is True and corrects_itself(str(r.get("response", "")), phrases)), None)


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file. A line that doesn't parse (a crash mid-write, perhaps followed by a resumed
    run appending to it) is skipped with a warning: a report of a crashed run is when you need it most.
    Bytes that aren't UTF-8 (a character cut in half) are replaced rather than fatal, for the same reason."""
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            warnings.warn(f"{path}:{i}: skipping a line that is not a JSON object (truncated write?): {line[:60]!r}")
            continue
        rows.append(row)
    return rows


def is_number(v) -> bool:
    """A finite int or float (not a bool, NaN or None): what can be plotted or formatted as a number."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def metric_series(rows: list[dict], key: str) -> dict[str, tuple[list, list]]:
    """{stage: (steps, values)} for one metric, skipping rows where it is missing or not a finite number.
    A step logged twice (a run resumed from a checkpoint) keeps its last value, so lines never run backwards."""
    by_stage: dict[str, dict] = {}
    for r in rows:
        if is_number(r.get(key)):
            d = by_stage.setdefault(str(r.get("stage", "run")), {})
            d[r["step"] if is_number(r.get("step")) else len(d) + 1] = r[key]
    return {st: (sorted(d), [d[x] for x in sorted(d)]) for st, d in by_stage.items()}


def _draw(ax, lines: list[tuple[str, int, int, list, list]]) -> None:
    """lines: (label, colour index, line-style index, steps, values)."""
    for label, c, ls, xs, ys in lines:
        ax.plot(xs, ys, "o", color=f"C{c % 10}", ms=2.5, alpha=0.35)  # raw values, faint
        ax.plot(xs, smooth(ys), ["-", "--", ":", "-."][ls % 4], color=f"C{c % 10}", lw=1.8, label=label)
    ax.grid(alpha=0.3)
    ax.set_xlabel("step (within stage)")


def _plot(path: Path, title: str, ylabel: str, rows: list[dict], keys: list[str]) -> bool:
    per_key = {k: metric_series(rows, k) for k in keys}
    per_key = {k: s for k, s in per_key.items() if s}
    if not per_key:
        return False
    stages = list(dict.fromkeys(st for s in per_key.values() for st in s))
    # One colour per metric and one line style per stage; a single metric gets one colour per stage.
    many = len(per_key) > 1
    lines = [(" · ".join([st] * (len(stages) > 1) + [k] * (many or len(stages) == 1)),
              ki if many else stages.index(st), stages.index(st) if many else 0, *xy)
             for ki, (k, s) in enumerate(per_key.items()) for st, xy in s.items()]
    fig = Figure(figsize=(7, 3.6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    _draw(ax, lines)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    fig.savefig(path)
    return True


def _plot_panels(path: Path, rows: list[dict], panels: list[tuple[str, list[str]]], title: str) -> bool:
    """One small panel per (title, metric keys), side by side; panels with no data are left out."""
    present = [(name, {k: s for k in keys if (s := metric_series(rows, k))}) for name, keys in panels]
    present = [(name, per_key) for name, per_key in present if per_key]
    if not present:
        return False
    fig = Figure(figsize=(2.9 * len(present), 2.8), dpi=110, layout="constrained")
    for i, (name, per_key) in enumerate(present):
        ax = fig.add_subplot(1, len(present), i + 1)
        lines = [(f"{st} · {k}" if len(s) > 1 else k, j, 0, *xy)
                 for j, (k, s) in enumerate(per_key.items()) for st, xy in s.items()]
        _draw(ax, lines)
        ax.set_title(name, fontsize=10)
        if len(lines) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.savefig(path)
    return True


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
    for part in re.split(r"(</?think>|</?answer>)", text):
        if not part:
            continue
        if part in ("<think>", "<answer>"):
            cls = part[1:-1]
        esc = html.escape(part)
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
        found = sum(corrects_itself(str(r.get("response", ""))) and r.get("correct") is True for r in samples)
        parts.append(f"<p>The aha sample: the first logged completion that re-checks, finds its own mistake, corrects "
                     f"it and is right, at {html.escape(str(first.get('stage', 'run')))} step {first.get('step')} "
                     f"({found} of {len(samples)} logged samples do so).</p>{_sample_html(first)}")
    elif samples:
        parts.append("<p>No logged completion re-checks, finds its own mistake and ends right.</p>")
    return "<h2>The aha moment</h2>" + "".join(parts) if parts else ""


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
.think{color:#999;font-style:italic}.answer{font-weight:600}summary{cursor:pointer;color:#666;font-size:.85rem}"""


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
    plots.mkdir(exist_ok=True)
    reward_keys = sorted({k for r in metrics for k in r if k.startswith("reward/")})
    made = []
    for name, title, ylabel, keys in PLOTS:
        keys = [k2 for k in keys for k2 in (reward_keys if k == "reward/*" else [k])]
        if _plot(plots / f"{name}.png", title, ylabel, metrics, keys):
            made.append(name)
    if _plot_panels(plots / "r1-zero.png", metrics, STORY, "Accuracy, thinking and reflection over RL (dots: training samples; held-out: eval_*)"):
        made.append("r1-zero")
    if _plot_panels(plots / "health.png", metrics, PANELS, "Optimisation health"):
        made.append("health")
    for name in [p[0] for p in PLOTS] + ["r1-zero", "health"]:
        if name not in made:  # a stale plot from an earlier report would contradict this one
            (plots / f"{name}.png").unlink(missing_ok=True)

    title = " · ".join(str(summary[k]) for k in ("recipe", "model", "task") if summary.get(k)) or run_dir.name
    sub = f"total time {format_duration(summary.get('wall_seconds'))} · " if is_number(summary.get("wall_seconds")) else ""
    imgs = "".join(f'<img alt="{n}" src="data:image/png;base64,'
                   f'{base64.b64encode((plots / f"{n}.png").read_bytes()).decode()}">' for n in made)
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style>'
            f'</head><body><h1>{html.escape(title)}</h1><p class="sub">{html.escape(sub)}{html.escape(str(run_dir))}</p>'
            f"{_base_html(summary)}{_model_table(summary, files['summary.json'])}{_eval_table(summary, files['summary.json'])}{'<h2>Training</h2>' + imgs if imgs else ''}"
            f"{_aha_html(metrics, samples)}{_samples_html(samples)}</body></html>")
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
