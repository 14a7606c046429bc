"""hybrid, predicted regime by regime and weighted by the updates each regime gets
(docs/analysis.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np

from hybridsgd.analysis.predict_stability import (
    regime_radius,
)
from hybridsgd.analysis.prediction import Prediction, Stability
from hybridsgd.analysis.stability import (
    largest_stable,
)
from hybridsgd.errors import ConfigError
from hybridsgd.policies.hybrid import PROGRESS, regime_spec
from hybridsgd.timing.models import TimingModel


def hybrid_regimes(
    W: int,
    compute: TimingModel,
    comm: TimingModel,
    speeds,
    batch_size: int,
    threshold: Callable[[float], float],
    progress: str = "updates",
    updates: int = 20_000,
    gradients_per_epoch: float = 1.0,
) -> tuple[dict[str, Prediction], list[tuple[str, int]]]:
    """``hybrid`` (quorum reading) regime by regime: the prediction of each regime it uses
    (``async``, ``k_async`` with K = 1 + floor(level (W - 1)), or ``sync`` at level 1) and
    the plan, runs of ``(regime, updates)`` in order, following ``threshold(progress)``
    update by update as :class:`~hybridsgd.policies.HybridPolicy` does, with progress
    advanced by each regime's predicted time per update and gradients per update."""
    if progress not in PROGRESS:
        raise ConfigError("policy.progress", f"must be one of {', '.join(PROGRESS)}")
    if updates < 1:
        raise ConfigError("--updates", f"must be >= 1 (got {updates})")
    regimes: dict[str, Prediction] = {}
    plan: list[tuple[str, int]] = []
    t = applied = 0.0
    for u in range(updates):
        p = {"updates": float(u), "time": t, "epochs": applied / gradients_per_epoch}[progress]
        key, pred = regime(W, threshold(p), compute, comm, speeds, batch_size, regimes)
        t += pred.mean_update_time
        applied += pred.quorum
        if plan and plan[-1][0] == key:
            plan[-1] = (key, plan[-1][1] + 1)
        else:
            plan.append((key, 1))
    return regimes, plan


def regime(
    W: int,
    level: float,
    compute: TimingModel,
    comm: TimingModel,
    speeds,
    batch_size: int,
    cache: dict[str, Prediction],
    mc_budget: float = 0.1,
) -> tuple[str, Prediction]:
    """The regime :class:`~hybridsgd.policies.HybridPolicy` uses at ``level`` (clipped to
    [0, 1]; NaN is 0) and its prediction, kept in ``cache``."""
    from hybridsgd.analysis.predict import predict  # it calls back per regime / W

    key, K = regime_spec(level, W)
    if key not in cache:
        cache[key] = predict(
            key.split(":")[0],
            W,
            compute,
            comm,
            speeds=speeds,
            batch_size=batch_size,
            k=K,
            mc_budget=mc_budget,
        )
    return key, cache[key]


def hybrid_prediction(
    W: int,
    regimes: dict[str, Prediction],
    plan: list[tuple[str, int]],
    batch_size: int = 32,
    assumptions: tuple[str, ...] | list[str] = (),
) -> Prediction:
    """``hybrid`` over a plan of ``(regime, updates)`` runs, from each regime's prediction."""
    regimes = {k: regimes[k] for k in dict.fromkeys(k for k, _ in plan)}
    qs = (0.5, 0.9, 0.99)
    n = {key: 0 for key in regimes}
    for key, count in plan:
        n[key] += count
    updates = sum(n.values())
    time = sum(n[k] * r.mean_update_time for k, r in regimes.items())
    grads = {k: n[k] * r.quorum for k, r in regimes.items()}
    applied = sum(grads.values())
    width = max(len(r.staleness_pmf) for r in regimes.values())
    pmf = np.zeros(width)
    for k, r in regimes.items():
        pmf[: len(r.staleness_pmf)] += grads[k] / applied * r.staleness_pmf
    rows = [
        {
            "regime": k,
            "updates": n[k],
            "mean_update_time": r.mean_update_time,
            "gradients_per_update": r.quorum,
            "mean_staleness": r.mean_staleness,
        }
        for k, r in regimes.items()
    ]
    return Prediction(
        policy="hybrid",
        workers=W,
        quorum=applied / updates,
        mean_update_time=time / updates,
        update_time_quantiles={},
        throughput=applied * batch_size / time,
        mean_staleness=float(np.arange(width) @ pmf),
        staleness_quantiles={
            f"p{round(q * 100)}": float(np.searchsorted(np.cumsum(pmf), q)) for q in qs
        },
        wasted_fraction=0.0,
        method={
            "update_time": "per regime (async: renewal; k_async: Monte Carlo of its windows; sync: "
            "order statistics), "
            f"weighted by the updates each regime gets over {updates:,} updates",
            "staleness": "per regime, weighted by the gradients each regime applies",
        },
        assumptions=[
            *assumptions,
            "each regime in steady state: a switch's transient is not modelled",
        ],
        staleness_pmf=pmf,
        regimes=rows,
    )


def stable_in(regime, h: float, eta: float) -> bool:
    return regime_radius(regime, eta * h) < 1.0


def hybrid_stability(regimes, plan, lr: float, h: float) -> Stability:
    """Stable when every regime used is; the rate is the net contraction over the plan per
    unit of time; the largest stable learning rate keeps every regime used stable."""
    radius = {k: regime_radius(r, lr * h) for k, r in regimes.items()}
    log_net = sum(n * math.log(max(radius[k], 1e-300)) for k, n in plan)
    time = sum(n * regimes[k].mean_update_time for k, n in plan)
    limit = min(largest_stable(partial(stable_in, r, h), hi=4.0 / h) for r in regimes.values())
    return Stability(
        "discrete, per regime", all(r < 1.0 for r in radius.values()), -log_net / time, limit
    )
