"""Build the comparison report from traces alone: summary.csv, PNG plots, report.html."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the object API: no pyplot, no global backend

from hybridsgd.errors import ConfigError
from hybridsgd.report import tuning
from hybridsgd.trace import Trace

PLOTS = (
    "loss_vs_time.png",
    "accuracy_vs_time.png",
    "loss_vs_updates.png",
    "accuracy_vs_updates.png",
    "time_to_target.png",
    "staleness.png",
    "arrival_order.png",
    "timeline.png",
)
_RUN = re.compile(r"^(?P<label>.+)-s(?P<seed>\d+)$")


def _runs(out: Path) -> dict[str, list[tuple[int, Trace]]]:
    """Traces grouped by policy label, seeds in order."""
    root = out / "runs"
    if not root.is_dir():
        raise ConfigError("report", f"{out} has no runs/ directory: run `hybridsgd compare` first")
    groups: dict[str, list[tuple[int, Trace]]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        m = _RUN.match(d.name)
        if m is None or not (d / "summary.json").is_file():
            continue
        groups.setdefault(m["label"], []).append((int(m["seed"]), Trace.read(d)))
    if not groups:
        raise ConfigError("report", f"no run directories with a summary.json under {root}")
    order_file = out / "policies.txt"  # the order the comparison was asked in
    order = order_file.read_text().split() if order_file.is_file() else []
    labels = [x for x in order if x in groups] + sorted(x for x in groups if x not in order)
    return {k: sorted(groups[k], key=lambda t: t[0]) for k in labels}


def summary_rows(groups: dict[str, list[tuple[int, Trace]]]) -> pd.DataFrame:
    """One row per policy and seed, recomputed from the trace tables."""
    rows = []
    for label, runs in groups.items():
        for seed, t in runs:
            g, u, e = t.gradients, t.updates, t.evals
            target = t.summary.get("target_accuracy")
            hit = e[e.accuracy >= target] if target is not None else e.iloc[0:0]
            end = float(u.time.max()) if len(u) else 0.0
            workers = int(t.summary["workers"])
            busy = float((g.end_time.clip(upper=end) - g.start_time).clip(lower=0).sum())
            applied = g[g.fate == "applied"]
            rows.append(
                {
                    "policy": label,
                    "seed": seed,
                    "final_loss": float(e.loss.iloc[-1]),
                    "final_accuracy": float(e.accuracy.iloc[-1]),
                    "time_to_target": float(hit.time.iloc[0]) if len(hit) else np.nan,
                    "updates": len(u),
                    "applied": int((g.fate == "applied").sum()),
                    "dropped": int((g.fate == "dropped").sum()),
                    "cancelled": int((g.fate == "cancelled").sum()),
                    "mean_staleness": float(applied.staleness.mean()) if len(applied) else np.nan,
                    "idle_fraction": max(0.0, 1.0 - busy / (workers * end)) if end > 0 else np.nan,
                    "end_time": end,
                }
            )
    return pd.DataFrame(rows)


def _band(ax, curves: list[tuple[np.ndarray, np.ndarray]], label: str) -> None:
    """Mean and min-max band over seeds, on the x range every seed covers."""
    hi = min(x.max() for x, _ in curves)
    grid = np.linspace(0.0, hi, 200)
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    line = ax.plot(grid, ys.mean(axis=0), label=label)[0]
    if len(curves) > 1:
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.2)


def _curves(groups, out: Path, metric: str, axis: str) -> None:
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for label, runs in groups.items():
        curves = [(t.evals[axis].to_numpy(float), t.evals[metric].to_numpy(float)) for _, t in runs]
        if all(np.isfinite(c[1]).any() for c in curves):
            _band(ax, curves, label)
    ax.set_xlabel("simulated time" if axis == "time" else "updates (versions)")
    ax.set_ylabel(f"test {metric}")
    if metric == "loss":
        ax.set_yscale("log")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:  # e.g. accuracy on a task without it (quadratic)
        ax.text(0.5, 0.5, f"no {metric} in these runs", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / f"{metric}_vs_{'time' if axis == 'time' else 'updates'}.png", dpi=100)


def _time_to_target(summary: pd.DataFrame, out: Path) -> None:
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    by = summary.groupby("policy", sort=False).time_to_target
    mean, lo, hi = by.mean(), by.min(), by.max()
    xs = np.arange(len(mean))
    ax.bar(xs, mean.fillna(0), yerr=[(mean - lo).fillna(0), (hi - mean).fillna(0)], capsize=4)
    for x, n in zip(xs, by.count(), strict=True):
        if n == 0:
            ax.text(float(x), 0, "not reached", ha="center", va="bottom", fontsize=8, rotation=90)
    ax.set_xticks(xs, mean.index, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("simulated time to target accuracy")
    fig.tight_layout()
    fig.savefig(out / "time_to_target.png", dpi=100)


def _staleness(groups, out: Path) -> None:
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    for label, runs in groups.items():
        s = np.concatenate(
            [t.gradients[t.gradients.fate == "applied"].staleness.to_numpy() for _, t in runs]
        )
        if len(s):
            ax.hist(
                s,
                bins=list(np.arange(s.max() + 2) - 0.5),
                histtype="step",
                density=True,
                label=label,
            )
    ax.set_xlabel("staleness of applied gradients (versions)")
    ax.set_ylabel("fraction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "staleness.png", dpi=100)


def _arrival_order(groups, out: Path) -> None:
    """Chen et al.'s plot: time from a round's start until its k-th gradient arrives."""
    fig = Figure(figsize=(7, 3.8))
    ax = fig.subplots()
    shown = False
    for label, runs in groups.items():
        offsets: list[np.ndarray] = []
        for _, t in runs:
            g = t.gradients[t.gradients.fate != "cancelled"]
            for _, rnd in g.groupby("read_version"):
                if len(rnd) >= 2 and rnd.start_time.nunique() == 1:  # a lockstep round
                    offsets.append(np.sort((rnd.end_time - rnd.start_time.iloc[0]).to_numpy()))
        if len(offsets) < 10:
            continue  # no rounds to speak of (asynchronous policies)
        k_max = max(len(o) for o in offsets)
        mean = [np.mean([o[k] for o in offsets if len(o) > k]) for k in range(k_max)]
        ax.plot(np.arange(1, k_max + 1), mean, marker="o", ms=3, label=label)
        shown = True
    if not shown:
        ax.text(
            0.5,
            0.5,
            "no policy with rounds in this comparison",
            ha="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("k (k-th gradient of a round to arrive)")
    ax.set_ylabel("mean time since the round started")
    if shown:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "arrival_order.png", dpi=100)


def _timeline(groups, out: Path) -> None:
    """What each worker did early in the first run of each policy: computing work that was
    applied (green) or wasted (red); gaps are waiting."""
    n = len(groups)
    fig = Figure(figsize=(8, 1.4 + 1.6 * n))
    axes = fig.subplots(n, 1, squeeze=False)
    # one window for all: long enough for the slowest policy to make a few updates
    window = max(
        float(t.updates.time.iloc[min(len(t.updates), 6) - 1]) if len(t.updates) else 1.0
        for t in (runs[0][1] for runs in groups.values())
    )
    for ax, (label, runs) in zip(axes[:, 0], groups.items(), strict=True):
        t = runs[0][1]
        g = t.gradients[(t.gradients.start_time < window) & (t.gradients.worker < 16)]
        for fate, colour in (
            ("applied", "tab:green"),
            ("dropped", "tab:red"),
            ("cancelled", "tab:red"),
            ("pending", "tab:gray"),
        ):
            part = g[g.fate == fate]
            ax.barh(
                part.worker,
                (part.end_time.clip(upper=window) - part.start_time),
                left=part.start_time,
                color=colour,
                height=0.7,
                edgecolor="white",
                linewidth=0.3,
            )
        ax.set_xlim(0, window)
        ax.set_ylabel(label, fontsize=8)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel(
        "simulated time (green: applied, red: cancelled or dropped, gaps: waiting)"
    )
    fig.tight_layout()
    fig.savefig(out / "timeline.png", dpi=100)


def build_report(out: str | Path) -> Path:
    """(Re)build summary.csv, the plots and report.html under ``out`` from its runs/."""
    out = Path(out)
    groups = _runs(out)
    summary = summary_rows(groups)
    tuned = tuning.read(out)  # a tuning (hybridsgd tune): its choices and sensitivity plots
    extra = ""
    if tuned is not None:
        table, record = tuned
        summary = tuning.with_settings(summary, record)
        names = tuning.sensitivity_plots(out, table, record)
        extra = tuning.section(record, _figures(out, names))
    summary.to_csv(out / "summary.csv", index=False)
    for metric in ("loss", "accuracy"):
        for axis in ("time", "version"):
            _curves(groups, out, metric, axis)
    _time_to_target(summary, out)
    _staleness(groups, out)
    _arrival_order(groups, out)
    _timeline(groups, out)
    _html(out, groups, summary, extra)
    return out / "report.html"


def mean_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per policy: means over seeds (time to target over the seeds that reached it)."""
    cols = [
        "final_loss",
        "final_accuracy",
        "time_to_target",
        "updates",
        "applied",
        "dropped",
        "cancelled",
        "mean_staleness",
        "idle_fraction",
    ]
    table = summary.groupby("policy", sort=False)[cols].mean()
    table.insert(2, "reached", summary.groupby("policy", sort=False).time_to_target.count())
    return table


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _figures(out: Path, names) -> str:
    return "\n".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{_b64(out / name)}">'
        f"<figcaption>{name}</figcaption></figure>"
        for name in names
    )


def _html(out: Path, groups, summary: pd.DataFrame, extra: str = "") -> None:
    first = next(iter(groups.values()))[0][1].summary
    cfg = first.get("config", {})
    desc = (
        f"task {first['task']}, {first['workers']} workers, compute "
        f"{cfg.get('timing', {}).get('compute', '?')}, "
        f"target accuracy {first.get('target_accuracy')}, "
        f"{len(next(iter(groups.values())))} seed(s) per policy"
    )
    images = _figures(out, PLOTS)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hybridsgd comparison</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
img{{max-width:100%}}</style></head>
<body><h1>hybridsgd comparison</h1><p>{html.escape(desc)}</p>
<h2>Summary (mean over seeds)</h2>{mean_table(summary).to_html(float_format=lambda v: f"{v:.4g}")}
{images}
{extra}
<h2>Every run</h2>{summary.to_html(index=False, float_format=lambda v: f"{v:.4g}")}
</body></html>"""
    (out / "report.html").write_text(page)
