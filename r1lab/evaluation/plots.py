"""Metric curves of a run: read per stage from metrics.jsonl's rows, smoothed, and drawn to run_dir/plots/*.png."""

from __future__ import annotations

import math
from pathlib import Path

# The object-oriented Figure API draws with Agg without touching pyplot's global backend,
# so this works headless and doesn't change the backend of a notebook that imports it.
from matplotlib.figure import Figure

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
# Episodes with tools (rl.tools): how often they call, whether the calls work, how many turns, and whether calling pays.
TOOL_PANELS = [("episodes that call a tool", ["tool_call_rate"]), ("calls that work", ["tool_success_frac"]),
               ("turns per episode", ["turns_mean"]), ("accuracy", ["accuracy_calling", "accuracy_not_calling", "accuracy"])]
# R1-Zero's three pictures side by side (the paper's Figures 2-3 and the reflection it describes).
STORY = [("accuracy", ["accuracy", "eval_pass@1"]), ("response length (tokens)", ["completion_len_mean", "eval_length"]),
         ("reflection rate", ["reflection_rate", "eval_reflection"])]


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


def pays_from(rows: list[dict]) -> dict[str, int | None]:
    """{stage: the step from which episodes that call a tool stay right more often than those that do not
    (smoothed accuracy_calling above accuracy_not_calling at every later step), None if they never do}."""
    calling, plain = metric_series(rows, "accuracy_calling"), metric_series(rows, "accuracy_not_calling")
    out = {}
    for stage in calling.keys() & plain.keys():
        both = sorted(set(calling[stage][0]) & set(plain[stage][0]))
        if not both:
            continue
        a = dict(zip(calling[stage][0], calling[stage][1]))
        b = dict(zip(plain[stage][0], plain[stage][1]))
        gaps = smooth([a[x] - b[x] for x in both])
        out[stage] = next((x for i, x in enumerate(both) if all(g > 0 for g in gaps[i:])), None)
    return out


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


def write_plots(metrics: list[dict], plots: Path) -> list[str]:
    """Draws every plot the metrics have data for into the folder `plots`; returns their names, in page order."""
    plots.mkdir(exist_ok=True)
    reward_keys = sorted({k for r in metrics for k in r if k.startswith("reward/")})
    made = []
    for name, title, ylabel, keys in PLOTS:
        keys = [k2 for k in keys for k2 in (reward_keys if k == "reward/*" else [k])]
        if _plot(plots / f"{name}.png", title, ylabel, metrics, keys):
            made.append(name)
    story = "Accuracy, thinking and reflection over RL (dots: training samples; held-out: eval_*)"
    if _plot_panels(plots / "r1-zero.png", metrics, STORY, story):
        made.append("r1-zero")
    if _plot_panels(plots / "health.png", metrics, PANELS, "Optimisation health"):
        made.append("health")
    tool_rows = [{**r, "tool_success_frac": 1 - r["tool_error_frac"]} for r in metrics if "tool_error_frac" in r]
    if _plot_panels(plots / "tools.png", tool_rows, TOOL_PANELS, "Tools: calls, their success, turns, and what calling pays"):
        made.append("tools")
    for name in [p[0] for p in PLOTS] + ["r1-zero", "health", "tools"]:
        if name not in made:  # a stale plot from an earlier report would contradict this one
            (plots / f"{name}.png").unlink(missing_ok=True)
    return made
