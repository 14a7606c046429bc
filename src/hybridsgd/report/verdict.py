"""The answer of a comparison in one paragraph: the winner on the declared objective, its
margin over the runner-up with a 95% confidence interval paired by seed, and "tie" when
that interval covers zero (DESIGN.md section 10: a margin inside the seed-to-seed spread is
a tie).

The interval is Student's t over the per-seed differences (runner-up minus winner, so a
positive margin favours the winner): the runs of one seed share their data order, initial
parameters and timing draws, so pairing removes what the seeds share. With one seed there
is no interval and no verdict, only a ranking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

#: objective name -> (summary column, words); lower is better for both
OBJECTIVES = {
    "time-to-target": ("time_to_target", "time to the target accuracy"),
    "final-loss": ("final_loss", "final loss"),
}


@dataclass(frozen=True)
class Verdict:
    objective: str  # a key of OBJECTIVES
    winner: str
    runner_up: str | None
    winner_value: float  # mean over the seeds that count (time: those that reached)
    runner_up_value: float
    margin: float  # mean paired difference, runner-up minus winner (NaN: not paired)
    low: float  # 95% interval of that mean (NaN with one seed)
    high: float
    seeds: int  # seeds paired
    reached: tuple[int, int, int] | None = None  # time to target: winner's, runner-up's, of
    evaluated_on: str = "test"

    @property
    def tie(self) -> bool:
        """The interval covers zero: the margin is inside the seed-to-seed spread."""
        return self.runner_up is not None and self.low <= 0.0 <= self.high

    @property
    def decided(self) -> bool:
        """A winner the seeds support: no tie, and an interval (or more seeds reached)."""
        if self.runner_up is None:
            return True
        if self.reached is not None and self.reached[0] != self.reached[1]:
            return True
        return math.isfinite(self.low) and not self.tie

    def sentence(self) -> str:
        what = OBJECTIVES[self.objective][1]
        head = f"Objective: {what} on the {self.evaluated_on} set (lower is better). "
        if self.runner_up is None:
            return head + f"Only {self.winner} was compared."
        w, r = self.winner, self.runner_up
        if self.reached is not None and self.reached[0] != self.reached[1]:
            a, b, n = self.reached
            return head + (
                f"Winner: {w}, which reached the target on {a} of {n} seeds against "
                f"{b} of {n} for the runner-up, {r}."
            )
        values = f"{_g(self.winner_value)} against {_g(self.runner_up_value)}"
        if not math.isfinite(self.margin):
            return head + f"{w} ranks first and {r} second ({values}); no seed is paired."
        if not math.isfinite(self.low):
            return head + (
                f"{w} ranks first and {r} second ({values}), on one seed: no interval, so "
                "no verdict; run more seeds."
            )
        ci = (
            f"margin {_g(self.margin)}, 95% interval [{_g(self.low)}, {_g(self.high)}] "
            f"over {self.seeds} seeds paired"
        )
        if self.tie:
            return head + f"Tie: {w} and {r} ({values}; {ci}, which covers zero)."
        return head + f"Winner: {w}, ahead of the runner-up {r} ({values}; {ci})."


def paired_interval(d: np.ndarray) -> tuple[float, float, float]:
    """The mean of paired differences ``d`` (one per seed) and its 95% t-interval: (mean,
    low, high); NaN where there are too few (no mean without a pair, no interval with
    one)."""
    margin = low = high = math.nan
    if len(d):
        margin = float(d.mean())
    if len(d) >= 2:
        half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
        low, high = margin - half, margin + half
    return margin, low, high


def _g(v: float) -> str:
    return f"{v:.4g}"


def verdict(summary: pd.DataFrame, objective: str, evaluated_on: str = "test") -> Verdict | None:
    """The verdict of ``summary`` (one row per policy and seed: policy, seed and the
    objective's column) on ``objective``; None when no policy has a value for it."""
    column = OBJECTIVES[objective][0]
    if column not in summary or summary.empty:
        return None
    by = summary.groupby("policy", sort=False)
    n_seeds = int(by.seed.nunique().max())
    rank = pd.DataFrame(
        {"value": by[column].mean(), "counted": by[column].count()}
    )  # mean over the seeds with a value (time: those that reached)
    if objective == "time-to-target":  # reaching on more seeds comes first
        rank = rank.sort_values(["counted", "value"], ascending=[False, True], kind="stable")
    else:
        rank = rank.sort_values("value", kind="stable")
    rank = rank[rank.counted > 0]
    if rank.empty:
        return None
    winner = str(rank.index[0])
    base: dict[str, Any] = {"objective": objective, "winner": winner, "evaluated_on": evaluated_on}
    if len(rank) == 1:
        value = float(rank.value.iloc[0])
        nan = math.nan
        return Verdict(**base, runner_up=None, winner_value=value, runner_up_value=nan,
                       margin=nan, low=nan, high=nan, seeds=0)  # fmt: skip
    runner = str(rank.index[1])
    reached = None
    if objective == "time-to-target":
        reached = (int(rank.counted.iloc[0]), int(rank.counted.iloc[1]), n_seeds)
    a = summary[summary.policy == winner].set_index("seed")[column]
    b = summary[summary.policy == runner].set_index("seed")[column]
    paired = pd.concat([a, b], axis=1, keys=["w", "r"], join="inner").dropna()
    d = (paired.r - paired.w).to_numpy(dtype=float)
    margin, low, high = paired_interval(d)
    return Verdict(
        **base,
        runner_up=runner,
        winner_value=float(rank.value.iloc[0]),
        runner_up_value=float(rank.value.iloc[1]),
        margin=margin,
        low=low,
        high=high,
        seeds=len(d),
        reached=reached,
    )


def default_objective(summary: pd.DataFrame) -> str:
    """A comparison's objective when none was declared: time to target when a target was
    set, else the final loss."""
    target = summary.get("target_accuracy")
    has_target = target is not None and bool(pd.Series(target).notna().any())
    return "time-to-target" if has_target else "final-loss"


def lead(summary: pd.DataFrame, objective: str | None = None, tuned: bool = False) -> str:
    """The report's first paragraph: the verdict on ``objective`` (the tuning's, or
    :func:`default_objective`), and, for a tuning, that the same objective chose each
    policy's settings."""
    objective = objective or default_objective(summary)
    how = (
        " Each policy's settings were tuned on the same objective, on a validation split; "
        "the runs here are the winners rerun on fresh seeds."
        if tuned
        else ""
    )
    v = verdict(summary, objective)
    if v is None and objective == "time-to-target":
        fallback = verdict(summary, "final-loss")
        said = fallback.sentence() if fallback is not None else ""
        return f"No policy reached the target accuracy on any seed. {said}{how}"
    if v is None:
        return f"No policy has a {OBJECTIVES[objective][1]}.{how}"
    return v.sentence() + how
