"""Performance profiles (Dolan and Moré, 2002, as AlgoPerf reports them) and the geometric
mean speed-up over a baseline policy.

``scores`` is a table with one row per problem (a workload, or a study of one tuning) and
one column per policy, each cell a score where lower is better (a time to target); a
policy that failed the problem scores infinity. A policy's profile is, for each ratio
``tau >= 1``, the fraction of problems on which its score is within ``tau`` times the best
score any policy got on that problem: where it starts at ``tau = 1`` is how often it wins,
and how fast it rises is how close it stays when it does not.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter


def ratios(scores: pd.DataFrame) -> pd.DataFrame:
    """Each score over the best of its problem (row); infinity where the policy failed, or
    where every policy failed the problem."""
    values = scores.to_numpy(dtype=float)
    best = np.min(np.where(np.isfinite(values) & (values > 0), values, np.inf), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = values / best[:, None]
    r[~np.isfinite(values) | ~np.isfinite(best)[:, None]] = np.inf
    return pd.DataFrame(r, index=scores.index, columns=scores.columns)


def profile(scores: pd.DataFrame, taus: np.ndarray | list[float]) -> pd.DataFrame:
    """``rho[tau, policy]``: the fraction of problems on which the policy is within ``tau``
    times the best."""
    r = ratios(scores).to_numpy()
    rho = (r[None, :, :] <= np.asarray(taus, dtype=float)[:, None, None]).mean(axis=1)
    return pd.DataFrame(rho, index=pd.Index(taus, name="tau"), columns=scores.columns)


def geomean_speedup(scores: pd.DataFrame, baseline: str) -> dict[str, tuple[float, int]]:
    """Per policy, the geometric mean over problems of ``baseline's score / its score``
    (above 1: faster than the baseline), over the problems both finished, and how many
    those were (NaN with none)."""
    if baseline not in scores.columns:
        raise KeyError(baseline)
    out: dict[str, tuple[float, int]] = {}
    base = scores[baseline].to_numpy(dtype=float)
    for policy in scores.columns:
        own = scores[policy].to_numpy(dtype=float)
        ok = np.isfinite(base) & np.isfinite(own) & (base > 0) & (own > 0)
        n = int(ok.sum())
        out[str(policy)] = (
            float(np.exp(np.mean(np.log(base[ok] / own[ok])))) if n else math.nan,
            n,
        )
    return out


def plot(scores: pd.DataFrame, path: str | Path, *, title: str, problems: str) -> Path:
    """The profiles as a step plot over a log ratio axis, saved to ``path`` (PNG)."""
    r = ratios(scores).to_numpy()
    finite = r[np.isfinite(r)]
    top = max(2.0, float(finite.max()) * 1.2) if finite.size else 2.0
    taus = np.unique(np.concatenate([[1.0, top], finite[finite <= top]]))
    rho = profile(scores, taus)
    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    styles = ["-", "--", "-.", ":"]
    for i, policy in enumerate(scores.columns):
        ax.step(taus, rho[policy], where="post", lw=2, ls=styles[(i // 10) % 4], label=str(policy))
    ax.set_xscale("log")
    ax.set_xlim(1.0, top)
    # labelled ratios (a log axis within one decade has one major tick, at 1)
    ticks = [t for t in (1, 1.25, 1.5, 2, 3, 4, 5, 7, 10, 20, 50, 100, 1000) if t <= top]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("tau: score within tau times the best on the problem")
    ax.set_ylabel(f"fraction of {problems}")
    ax.set_title(f"{title} ({len(scores)} {problems})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
              fontsize=8, frameon=False)  # fmt: skip
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path
