"""The report's tuning part, from ``tune.csv`` and ``tune.json`` (``hybridsgd tune``): the
chosen settings in summary.csv, one sensitivity plot per policy, the warnings."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hybridsgd.errors import ConfigError


def read(out: Path) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The tuning's runs and record, or ``None`` for a plain comparison."""
    table, record = out / "tune.csv", out / "tune.json"
    if not record.is_file():
        return None
    try:
        return pd.read_csv(table), json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(str(record), f"cannot be read ({exc}): rerun hybridsgd tune") from None


def keys(record: dict[str, Any]) -> list[str]:
    """The tuned keys: the grid's, or those a tuning by studies drew for any policy."""
    if record["grid"]:
        return list(record["grid"])
    return list(dict.fromkeys(k for c in record["chosen"].values() for k in c["settings"]))


def with_settings(summary: pd.DataFrame, record: dict[str, Any]) -> pd.DataFrame:
    """summary.csv with each policy's chosen settings as columns (``optimizer.lr``, ...)."""
    out = summary.copy()
    for key in keys(record):
        out[key] = [record["chosen"].get(p, {}).get("settings", {}).get(key) for p in out.policy]
    return out


def sensitivity_plots(out: Path, table: pd.DataFrame, record: dict[str, Any]) -> list[str]:
    """``sensitivity_<policy>.png``: the objective (mean over seeds) against the first
    numeric grid key (the lr when it is gridded), one line per value of the other keys;
    diverged points are crosses on the top edge. A tuning by studies: every trial, one
    colour per study, against the lr."""
    if record.get("studies"):
        return _trial_plots(out, table, record)
    grid: dict[str, list] = record["grid"]
    keys = list(grid)
    x_key = "optimizer.lr" if "optimizer.lr" in grid else keys[0]
    others = [k for k in keys if k != x_key]
    names = []
    for label, runs in table.groupby("policy", sort=False):
        fig = Figure(figsize=(8, 3.8), layout="constrained")
        ax = fig.subplots()
        means = runs.groupby(keys, sort=False).agg(
            objective=("objective", "mean"), diverged=("diverged", "any")
        )
        means = means.reset_index()
        finite = means.objective[np.isfinite(means.objective)]
        top = float(finite.max()) * 1.5 if len(finite) else 1.0
        groups = means.groupby(others, sort=False) if others else [((), means)]
        for value, part in groups:
            part = part.sort_values(x_key)
            name = ", ".join(
                f"{k.split('.')[-1]}={v}"
                for k, v in zip(
                    others, value if isinstance(value, tuple) else (value,), strict=True
                )
            )
            ok = np.isfinite(part.objective) & ~part.diverged
            line = ax.plot(part[x_key][ok], part.objective[ok], "o-", label=name or None)[0]
            bad = part[~ok]
            if len(bad):
                ax.plot(
                    bad[x_key], [top] * len(bad), "x", color=line.get_color(), markersize=9,
                    label=f"{name + ': ' if name else ''}diverged / missed",
                )  # fmt: skip
        chosen = record["chosen"].get(str(label), {}).get("settings", {})
        if x_key in chosen and isinstance(chosen[x_key], int | float):
            ax.axvline(chosen[x_key], color="0.5", ls="--", lw=1, label="chosen")
        if all(isinstance(v, int | float) and v > 0 for v in grid[x_key]):
            ax.set_xscale("log")
            if all(isinstance(v, int) and not isinstance(v, bool) for v in grid[x_key]):
                # a count (worker.steps, policy.backups): its values as plain ticks
                ax.set_xticks(sorted(set(grid[x_key])), [str(v) for v in sorted(set(grid[x_key]))])
                ax.minorticks_off()
        title = f"{label}: validation objective against {x_key}"
        names.append(
            _save(fig, ax, out, str(label), record, finite, x_key, " (mean over seeds)", title)
        )
    return names


def _save(fig, ax, out: Path, label: str, record, finite, x_key: str, per: str, title: str) -> str:
    """Axes labels, scale, legend; ``sensitivity_<label>.png`` written; its name."""
    if record["objective"] == "final-loss" and len(finite) and float(finite.min()) > 0:
        ax.set_yscale("log")
    ax.set_xlabel(x_key)
    what = "final validation loss" if record["objective"] == "final-loss" else "time to target"
    ax.set_ylabel(what + per)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              fontsize=8, frameon=False)  # fmt: skip
    name = f"sensitivity_{label}.png"
    fig.savefig(out / name, dpi=100)
    return name


def _trial_plots(out: Path, table: pd.DataFrame, record: dict[str, Any]) -> list[str]:
    names = []
    for label, runs in table.groupby("policy", sort=False):
        fig = Figure(figsize=(8, 3.8), layout="constrained")
        ax = fig.subplots()
        ok = np.isfinite(runs.objective) & ~runs.diverged
        finite = runs.objective[ok]
        top = float(finite.max()) * 1.5 if len(finite) else 1.0
        for study, part in runs.groupby("study", sort=True):
            good = np.isfinite(part.objective) & ~part.diverged
            dots = ax.plot(part["optimizer.lr"][good], part.objective[good], "o",
                           label=f"study {study}")[0]  # fmt: skip
            if (~good).any():
                ax.plot(part["optimizer.lr"][~good], [top] * int((~good).sum()), "x",
                        color=dots.get_color(), markersize=9)  # fmt: skip
        chosen = record["chosen"].get(str(label), {}).get("settings", {})
        if "optimizer.lr" in chosen:
            ax.axvline(chosen["optimizer.lr"], color="0.5", ls="--", lw=1, label="chosen")
        ax.set_xscale("log")
        title = f"{label}: every trial (crosses: diverged or missed)"
        names.append(_save(fig, ax, out, str(label), record, finite, "optimizer.lr", "", title))
    return names


def study_scores(record: dict[str, Any]) -> pd.DataFrame:
    """A tuning by studies: each study's best score per policy (rows: studies)."""
    return pd.DataFrame(
        {p: c["best_per_study"] for p, c in record["chosen"].items()},
        index=pd.Index([f"study {s}" for s in range(record["studies"])], name="problem"),
    )


def profile_plot(out: Path, record: dict[str, Any]) -> tuple[str, str]:
    """A tuning by studies: ``profile.png`` across its studies, and a caption with the
    geometric-mean speed-up of each policy over the first."""
    from hybridsgd.report import profiles

    scores = study_scores(record)
    profiles.plot(scores, out / "profile.png", title="performance profile of the tuning",
                  problems="studies")  # fmt: skip
    base = str(scores.columns[0])
    speed = profiles.geomean_speedup(scores, base)
    said = "; ".join(
        f"{p} {s:.3g}x over {n} studies" if n else f"{p}: no study both finished"
        for p, (s, n) in speed.items()
        if p != base
    )
    return "profile.png", (
        "Performance profile across the studies: for each ratio tau, the fraction of studies "
        "in which a policy's best trial is within tau times the best policy's. Geometric-mean "
        f"speed-up over {base}: {said or 'no other policy'}."
    )


def section(record: dict[str, Any], images: str) -> str:
    """The report's tuning section: protocol, choices, warnings, sensitivity plots."""
    studies = bool(record.get("studies"))
    if studies:
        protocol = (
            "Each policy tuned on its own, in AlgoPerf's external-tuning shape: "
            f"{record['studies']} independent studies of {record['trials']} trials, each "
            "trial a point of the policy's search space drawn from a scrambled Sobol "
            "sequence, each study on its own seed; objective "
            f"{html.escape(record['objective'])} on a validation split of "
            f"{record['validation']:g} of the training set. A policy's score is the median "
            "over studies of its best trial (a trial that diverged, missed the target or "
            "learned nothing scores infinity). The best trial of the median study is rerun"
        )
        heads = ["policy", "chosen", "median of best", "best per study"]
    else:
        protocol = (
            f"Each policy tuned on its own: {record['seeds']} seed(s) per grid point, "
            f"objective {html.escape(record['objective'])} on a validation split of "
            f"{record['validation']:g} of the training set; the winners rerun"
        )
        heads = ["policy", "chosen", "objective"]

    def row(policy: str, c: dict[str, Any]) -> str:
        chosen = ", ".join(f"{k} = {v}" for k, v in c["settings"].items())
        cells = [chosen + (f" (study {c['study']})" if studies else ""), _fmt(c["objective"])]
        if studies:
            cells.append(", ".join(_fmt(v) for v in c["best_per_study"]))
        return (
            f"<tr><th>{html.escape(policy)}</th>"
            + "".join(f"<td>{html.escape(x)}</td>" for x in cells)
            + "</tr>"
        )

    rows = "".join(row(p, c) for p, c in record["chosen"].items())
    warn = "".join(f"<li>{html.escape(w)}</li>" for w in record["warnings"])
    return (
        f"<h2>Tuning</h2><p>{protocol} on {record['final_seeds']} fresh seed(s) on the whole "
        "training set, evaluated on the test set (the curves and tables above).</p>"
        "<table><tr>"
        + "".join(f"<th>{h}</th>" for h in heads)
        + f"</tr>{rows}</table>"
        + (f"<p><b>Warnings</b></p><ul>{warn}</ul>" if warn else "")
        + images
    )


def _fmt(v: float) -> str:
    return "diverged / never" if not math.isfinite(v) else f"{v:.4g}"
