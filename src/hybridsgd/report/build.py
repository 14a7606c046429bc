"""Build the comparison report from traces alone: summary.csv, PNG plots, report.html."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the object API: no pyplot, no global backend

from hybridsgd.errors import ConfigError
from hybridsgd.policies import REGISTRY
from hybridsgd.report import tuning
from hybridsgd.report.verdict import lead
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
                    "target_accuracy": np.nan if target is None else float(target),
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


_SPARE = ("#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e7969c", "#6b6ecf", "#b5cf6b")
_DASHES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P")
_HATCHES = ("", "//", "..", "xx")


def styles(groups) -> dict[str, dict[str, Any]]:
    """Per label: colour by policy (each declares its own in the registry; a policy of your
    own without one gets a spare colour), then line style and marker by its rank among the
    labels of that policy, so twelve policies with three backup variants are still twelve
    distinct lines."""
    out: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    spare = iter(_SPARE * 4)
    extra: dict[str, str] = {}
    for label, runs in groups.items():
        fam = _family(runs[0][1])
        own = REGISTRY[fam].colour if fam in REGISTRY else ""
        if own:
            extra[fam] = own
        elif fam not in extra:
            extra[fam] = next(spare)
        rank = seen.get(fam, 0)
        seen[fam] = rank + 1
        out[label] = {
            "color": extra[fam],
            "linestyle": _DASHES[rank % len(_DASHES)],
            "marker": _MARKERS[(rank // len(_DASHES)) % len(_MARKERS)],
            "hatch": _HATCHES[rank % len(_HATCHES)],  # bars
        }
    return out


def _family(t: Trace) -> str:
    return str(t.summary.get("config", {}).get("policy", {}).get("name", t.summary.get("policy")))


def _figure(height: float = 4.2) -> tuple[Figure, Any]:
    fig = Figure(figsize=(9, height), layout="constrained")
    return fig, fig.subplots()


def _legend(ax) -> None:
    """Beside the axes, never over the data (tests/report/test_plots.py checks)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            fontsize=8,
            frameon=False,
            ncols=2 if len(handles) > 16 else 1,
        )


def _band(ax, curves: list[tuple[np.ndarray, np.ndarray]], label: str, style, z: float) -> None:
    """Mean and min-max band over seeds, on the x range every seed covers; a marker ends
    each line, so a short one (a policy that made few updates) stays visible."""
    hi = min(x.max() for x, _ in curves)
    grid = np.linspace(0.0, hi, 200)
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    mean = ys.mean(axis=0)
    ax.plot(grid, mean, label=label, color=style["color"], linestyle=style["linestyle"],
            marker=style["marker"], markevery=[len(grid) - 1], ms=5, lw=1.6, zorder=z)  # fmt: skip
    if len(curves) > 1:
        ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=style["color"], alpha=0.15,
                        lw=0, zorder=z - 0.5)  # fmt: skip


def _curves(groups, metric: str, axis: str) -> Figure:
    fig, ax = _figure()
    style = styles(groups)
    seeds = max(len(r) for r in groups.values())
    data = {}
    for label, runs in groups.items():
        curves = [(t.evals[axis].to_numpy(float), t.evals[metric].to_numpy(float)) for _, t in runs]
        if all(np.isfinite(c[1]).any() for c in curves):
            data[label] = curves
    # the shortest lines are drawn last, on top: a policy that made few updates is not hidden
    extent = {k: min(x.max() for x, _ in c) for k, c in data.items()}
    order = sorted(data, key=lambda k: -extent[k])
    for label in groups:
        if label in data:
            _band(ax, data[label], label, style[label], 2.0 + order.index(label))
    x_name = "simulated time" if axis == "time" else "updates"
    zoom = _zoom(data) if metric == "accuracy" else None
    if zoom is not None:  # the curves' ends differ by little near 1: zoom to them
        ax.set_ylim(*zoom)
    log = axis == "version" and data and max(extent.values()) > 8 * max(min(extent.values()), 1)
    if log:  # a policy that made 20 updates beside one that made 2,000 is still a line
        ax.set_xscale("symlog", linthresh=10.0)
    ax.set_xlabel(x_name + (" (log scale beyond 10)" if log else ""))
    ax.set_ylabel(f"test {metric}" + (" (zoomed: lower values leave the axes)" if zoom else ""))
    band = f"mean over {seeds} seeds, band min to max" if seeds > 1 else "one seed"
    ax.set_title(f"Test {metric} against {x_name} ({band})", fontsize=10)
    if metric == "loss":
        ax.set_yscale("log")
    if data:
        _legend(ax)
    else:  # e.g. accuracy on a task without it (quadratic)
        ax.text(0.5, 0.5, f"no {metric} in these runs", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    return fig


def _zoom(data: dict[str, list[tuple[np.ndarray, np.ndarray]]]) -> tuple[float, float] | None:
    """A y range for accuracy curves that shows where they differ: from a little below the
    lowest of the policies' final values to the highest value any reached. ``None`` when the
    data's own range is not much wider (nothing to gain)."""
    if not data:  # a task without accuracy (quadratic): nothing to zoom to
        return None
    ends = [float(np.nanmean([y[np.isfinite(y)][-1] for _, y in c])) for c in data.values()]
    values = np.concatenate([y[np.isfinite(y)] for c in data.values() for _, y in c])
    top = float(values.max())
    spread = max(top - min(ends), 0.02)
    low = max(min(ends) - 1.5 * spread, float(values.min()))
    if low - float(values.min()) < 0.5 * (top - float(values.min())):
        return None  # the zoom would keep more than half the range: leave the axes alone
    return low, top + 0.1 * spread


def _time_to_target(groups, summary: pd.DataFrame) -> Figure:
    """Horizontal bars: long policy names stay readable."""
    by = summary.groupby("policy", sort=False).time_to_target
    mean, lo, hi = by.mean(), by.min(), by.max()
    fig, ax = _figure(1.4 + 0.32 * len(mean))
    style = styles(groups)
    ys = np.arange(len(mean))[::-1]
    bars = ax.barh(ys, mean.fillna(0), xerr=[(mean - lo).fillna(0), (hi - mean).fillna(0)],
                   capsize=3, color=[style[k]["color"] for k in mean.index],
                   edgecolor="white")  # fmt: skip
    for bar, label in zip(bars, mean.index, strict=True):
        bar.set_hatch(style[label]["hatch"])
    seeds = by.size()
    for y, n, total, x in zip(ys, by.count(), seeds, hi.fillna(0), strict=True):
        if n < total:
            said = " not reached" if n == 0 else f"  reached by {n} of {total} seeds"
            ax.text(float(x), float(y), said, va="center", fontsize=8)
    ax.set_yticks(ys, mean.index, fontsize=8)
    ax.set_ylabel("policy")
    ax.set_xlabel("simulated time to the target accuracy (mean over the seeds that reached it)")
    target = next(iter(groups.values()))[0][1].summary.get("target_accuracy")
    ax.set_title(f"Time to {target:.0%} test accuracy" if target else "Time to target", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return fig


def _staleness(groups) -> Figure:
    """The CDF of applied gradients' staleness on a log axis: a few gradients of staleness
    250 no longer squash every policy into a spike at 0."""
    fig, ax = _figure()
    style = styles(groups)
    top = 1
    for label, runs in groups.items():
        s = np.concatenate(
            [t.gradients[t.gradients.fate == "applied"].staleness.to_numpy() for _, t in runs]
        )
        if len(s):
            values, counts = np.unique(s, return_counts=True)
            top = max(top, int(values[-1]))
            x = np.concatenate([[values[0]], values]).astype(float)
            y = np.concatenate([[0.0], np.cumsum(counts) / len(s)])
            st = style[label]
            name = f"{label} (always 0)" if int(values[-1]) == 0 else label
            ax.step(x, y, where="post", label=name, color=st["color"], linestyle=st["linestyle"])
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(-0.2, top * 1.2 + 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("staleness s of an applied gradient (versions behind; log scale)")
    ax.set_ylabel("fraction with staleness <= s")
    ax.set_title("Staleness of applied gradients (cumulative)", fontsize=10)
    _legend(ax)
    ax.grid(alpha=0.3)
    return fig


#: a policy is drawn in arrival_order.png when this share of its gradients belongs to
#: lockstep rounds (every worker of the round started from one version at one time)
ROUND_SHARE = 0.9


def _arrival_order(groups) -> Figure:
    """Chen et al.'s plot: time from a round's start until its k-th gradient arrives. Only
    policies that run in rounds: elsewhere workers start at different times, and the few
    "rounds" that happen to start together would draw a line that means nothing."""
    fig, ax = _figure()
    style = styles(groups)
    shown = False
    for label, runs in groups.items():
        offsets: list[np.ndarray] = []
        total = in_rounds = 0
        for _, t in runs:
            g = t.gradients[t.gradients.fate != "cancelled"]
            total += len(g)
            for _, rnd in g.groupby("read_version"):
                if len(rnd) >= 2 and rnd.start_time.nunique() == 1:  # a lockstep round
                    offsets.append(np.sort((rnd.end_time - rnd.start_time.iloc[0]).to_numpy()))
                    in_rounds += len(rnd)
        if len(offsets) < 10 or in_rounds < ROUND_SHARE * total:
            continue  # not a policy that runs in rounds
        k_max = max(len(o) for o in offsets)
        mean = [np.mean([o[k] for o in offsets if len(o) > k]) for k in range(k_max)]
        st = style[label]
        ax.plot(np.arange(1, k_max + 1), mean, marker=st["marker"], ms=3, label=label,
                color=st["color"], linestyle=st["linestyle"])  # fmt: skip
        shown = True
    if not shown:
        ax.text(0.5, 0.5, "no policy with rounds in this comparison", ha="center",
                transform=ax.transAxes)  # fmt: skip
    ax.set_xlabel("k (the k-th gradient of a round to arrive)")
    ax.set_ylabel("mean time since the round started")
    ax.set_title("When the k-th gradient of a round arrives (policies that run in rounds)",
                 fontsize=10)  # fmt: skip
    _legend(ax)
    ax.grid(alpha=0.3)
    return fig


TIMELINE_WORKERS = 16  # workers drawn per policy


#: jobs per worker each timeline panel shows (its window ends when the median worker starts
#: its next one)
TIMELINE_JOBS = 4


def _timeline(groups) -> Figure:
    """What each worker did early in the first run of each policy, on the policy's own time
    window (its first :data:`TIMELINE_JOBS` jobs per worker): applied work in two greens
    that alternate job by job (an asynchronous worker's back-to-back jobs stay apart), work
    cancelled or dropped in red; gaps are waiting. Thin lines mark the updates."""
    from matplotlib.patches import Patch

    n = len(groups)
    fig = Figure(figsize=(9, 1.2 + 1.25 * n), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)
    colours = {"dropped": "tab:red", "cancelled": "tab:red", "pending": "tab:gray"}
    greens = ("#2ca02c", "#98df8a")
    for ax, (label, runs) in zip(axes[:, 0], groups.items(), strict=True):
        t = runs[0][1]
        shown = min(int(t.summary["workers"]), TIMELINE_WORKERS)
        g = t.gradients[t.gradients.worker < shown].sort_values(["worker", "start_time"])
        nth = g.groupby("worker").start_time.nth(TIMELINE_JOBS)
        window = float(nth.median()) if len(nth) else float(g.end_time.max() if len(g) else 1)
        if not window > 0:
            window = float(g.end_time.max()) if len(g) and g.end_time.max() > 0 else 1.0
        g = g[g.start_time < window]
        job = g.groupby("worker").cumcount()  # each worker's jobs in order: 0, 1, 2, ...
        for fate in ("applied", *colours):
            part = g[g.fate == fate]
            colour = (
                [greens[k % 2] for k in job[g.fate == fate]] if fate == "applied"
                else colours[fate]
            )  # fmt: skip
            ax.barh(part.worker, (part.end_time.clip(upper=window) - part.start_time),
                    left=part.start_time, color=colour, height=0.7, edgecolor="white",
                    linewidth=0.6)  # fmt: skip
        times = t.updates.time[t.updates.time < window].to_numpy(float)
        ax.vlines(times, -0.6, shown - 0.4, colors="0.25", linewidth=0.4, alpha=0.5, zorder=3)
        ax.set_xlim(0, window)
        ax.set_ylim(-0.6, shown - 0.4)
        ax.set_yticks([0, shown - 1])
        ax.tick_params(axis="both", labelsize=7)
        ax.set_ylabel("worker", fontsize=8)
        of = f", workers 0-{shown - 1} of {t.summary['workers']}" if shown < t.summary[
            "workers"] else ""  # fmt: skip
        ax.set_title(f"{label} ({len(times)} updates{of})", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("simulated time (each panel its own window)")
    fig.suptitle(
        f"What each worker did in its first {TIMELINE_JOBS} jobs (gaps: waiting; "
        "lines: updates)", fontsize=10,
    )  # fmt: skip
    fig.legend(
        handles=[Patch(color=greens[0], label="applied (job by job: dark, light)"),
                 Patch(color="tab:red", label="cancelled or dropped"),
                 Patch(color="tab:gray", label="still running at the end")],
        loc="outside lower center", ncols=3, fontsize=8, frameon=False,
    )  # fmt: skip
    return fig


#: each plot of a comparison: its file, and the caption the report shows under it
CAPTIONS = {
    "loss_vs_time.png": "Test loss against simulated time: what a user waits for.",
    "accuracy_vs_time.png": "Test accuracy against simulated time.",
    "loss_vs_updates.png": "Test loss against updates: progress per update, whatever each "
    "cost. A line that stops early is a policy that made fewer updates in the same time.",
    "accuracy_vs_updates.png": "Test accuracy against updates.",
    "time_to_target.png": "Simulated time until the test accuracy first reached the target; "
    "error bars span the seeds.",
    "staleness.png": "Share of applied gradients whose staleness (versions between the "
    "one a worker read and the one its gradient updated) is at most s. For ssp and psp the "
    "bound s counts clock ticks between workers, not versions, so staleness can exceed it.",
    "arrival_order.png": "Mean time from the start of a round until its k-th gradient "
    "arrives (Chen et al. 2016), for policies whose workers start rounds together.",
    "timeline.png": "Each policy's first jobs, worker by worker, each panel on its own time "
    "window: green work was applied (alternating shades mark one job from the next), red "
    "was cancelled or dropped; gaps are waiting, and thin lines mark the updates.",
}


def plots(groups, summary: pd.DataFrame) -> dict[str, Figure]:
    """Every plot of a comparison (:data:`PLOTS`), as matplotlib figures."""
    figs = {
        f"{metric}_vs_{'time' if axis == 'time' else 'updates'}.png": _curves(groups, metric, axis)
        for metric in ("loss", "accuracy")
        for axis in ("time", "version")
    }
    figs["time_to_target.png"] = _time_to_target(groups, summary)
    figs["staleness.png"] = _staleness(groups)
    figs["arrival_order.png"] = _arrival_order(groups)
    figs["timeline.png"] = _timeline(groups)
    return {name: figs[name] for name in PLOTS}


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
        what = (
            "How {} scores on the validation split at each grid point; the dashed line is "
            "the chosen setting; crosses on the top edge diverged or never reached the target."
        )
        captions = {n: what.format(n[len("sensitivity_") : -len(".png")]) for n in names}
        if record.get("studies"):
            what = (
                "Every trial of {} on the validation split, one colour per study; the dashed "
                "line is the chosen lr; crosses on the top edge diverged or missed the target."
            )
            captions = {n: what.format(n[len("sensitivity_") : -len(".png")]) for n in names}
            name, caption = tuning.profile_plot(out, record)
            names, captions = [name, *names], {name: caption, **captions}
        extra = tuning.section(record, _figures(out, names, captions))
    summary.to_csv(out / "summary.csv", index=False)
    for name, fig in plots(groups, summary).items():
        fig.savefig(out / name, dpi=100)
    objective = tuned[1]["objective"] if tuned is not None else None
    _html(out, groups, summary, extra, lead(summary, objective, tuned=tuned is not None))
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


def _figures(out: Path, names, captions: dict[str, str] | None = None) -> str:
    captions = captions or {}
    return "\n".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{_b64(out / name)}">'
        f"<figcaption>{html.escape(captions.get(name, ''))} <code>{name}</code></figcaption>"
        "</figure>"
        for name in names
    )


def _html(out: Path, groups, summary: pd.DataFrame, extra: str = "", answer: str = "") -> None:
    first = next(iter(groups.values()))[0][1].summary
    cfg = first.get("config", {})
    desc = (
        f"task {first['task']}, {first['workers']} workers, compute "
        f"{cfg.get('timing', {}).get('compute', '?')}, "
        f"target accuracy {first.get('target_accuracy')}, "
        f"{len(next(iter(groups.values())))} seed(s) per policy"
    )
    images = _figures(out, PLOTS, CAPTIONS)
    number = lambda v: f"{v:.4g}"  # noqa: E731
    # the policy is a column of its own: an index would head the table with an empty row
    means = mean_table(summary).reset_index().to_html(index=False, float_format=number)
    every = summary.to_html(index=False, float_format=number)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>hybridsgd comparison</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}
table{{border-collapse:collapse}} td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
img{{max-width:100%}} .scroll{{overflow-x:auto;max-width:100%}}</style></head>
<body><h1>hybridsgd comparison</h1><p class="verdict"><b>{html.escape(answer)}</b></p>
<p>{html.escape(desc)}</p>
<h2>Summary (mean over seeds)</h2><div class="scroll">{means}</div>
{images}
{extra}
<h2>Every run</h2><div class="scroll">{every}</div>
</body></html>"""
    (out / "report.html").write_text(page)
