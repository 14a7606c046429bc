"""Rank policies for a timing model, a worker budget, a learning rate and a curvature.

Each candidate is scored by its predicted time to reduce the loss a thousand-fold along
the curvature h once past the start-up transient: the discrete delay model's rate per
update (staleness 0 for the synchronous family, so |1 - eta h| per update; exact rounds for
ssp with s = 0) times the predicted update rate; loss ~ x^2, so the time is
ln(1000) / (2 * rate). The first few updates, when every worker starts from the same
parameters, are not modelled. Unstable candidates rank last. The model sees curvature, delays and
staleness, not gradient noise: with small minibatches and a noisy task, prefer a larger
quorum than it suggests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridsgd.analysis.predict import Prediction, predict
from hybridsgd.errors import ConfigError
from hybridsgd.timing.models import TimingModel


@dataclass
class Candidate:
    spec: str  # e.g. "backup:backups=2"
    prediction: Prediction | None
    time_to_1000x: float  # predicted time for a thousand-fold loss reduction (inf: diverges)
    reason: str


def candidates(workers: int) -> list[tuple[str, str, dict]]:
    """(spec, policy, parameters) worth comparing at this worker count."""
    W = workers
    out: list[tuple[str, str, dict]] = [("sync", "sync", {})]
    for b in sorted({1, 2, max(1, W // 8), max(1, W // 4)}):
        if b < W:
            out.append((f"backup:backups={b}", "backup", {"backups": b}))
    for k in sorted({max(1, W // 4), max(1, W // 2), max(1, 3 * W // 4)}):
        if 1 < k < W:
            out.append((f"k_sync:k={k}", "k_sync", {"k": k}))
    out.append(("async", "async", {}))
    for k in sorted({2, 4, max(2, W // 4)}):
        if k < W:
            out.append((f"k_batch_async:k={k}", "k_batch_async", {"k": k}))
            out.append((f"k_async:k={k}", "k_async", {"k": k}))
    out.append(("ssp:staleness_bound=0", "ssp", {"staleness_bound": 0}))
    return out


def recommend(
    workers: int,
    compute: TimingModel,
    lr: float,
    curvature: float,
    comm: TimingModel | None = None,
    speeds=None,
    batch_size: int = 32,
) -> list[Candidate]:
    """Every candidate, best first."""
    if not (lr > 0 and curvature > 0):
        raise ConfigError("--lr", "recommend needs a positive --lr and --curvature")
    ranked = []
    for spec, policy, params in candidates(workers):
        try:
            p = predict(
                policy,
                workers,
                compute,
                comm,
                speeds=speeds,
                batch_size=batch_size,
                lr=lr,
                curvature=curvature,
                continuous=False,  # ranking uses the discrete model alone
                sweep=False,
                **params,
            )
        except ConfigError as exc:
            ranked.append(Candidate(spec, None, math.inf, f"no model: {exc.message}"))
            continue
        st = p.stability
        if not st.stable:
            reason = f"diverges: staleness {p.mean_staleness:.1f} needs lr < {st.max_stable_lr:.3g}"
            ranked.append(Candidate(spec, p, math.inf, reason))
            continue
        t = math.log(1000) / (2 * st.convergence_rate) if st.convergence_rate > 0 else math.inf
        if p.mean_staleness == 0:
            reason = (
                f"{p.quorum:g} gradients per update every {p.mean_update_time:.3g}; "
                f"{p.wasted_fraction:.0%} of started work wasted"
            )
        else:
            reason = (
                f"an update every {p.mean_update_time:.3g} with staleness "
                f"{p.mean_staleness:.1f} (stable below lr {st.max_stable_lr:.3g})"
            )
        ranked.append(Candidate(spec, p, t, reason))
    ranked.append(
        Candidate(
            "hybrid",
            None,
            math.inf,
            "not ranked: its regime changes over training (compare it by simulation)",
        )
    )
    return sorted(ranked, key=lambda c: c.time_to_1000x)
