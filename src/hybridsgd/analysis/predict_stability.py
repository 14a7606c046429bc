"""Stability and speed of a prediction near a minimum: the discrete delay model per update,
the continuous model for comparison, and the sweep over worker counts (docs/analysis.md)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hybridsgd.analysis.predict_async import (
    Scaled,
    trim_pmf,
)
from hybridsgd.analysis.prediction import Prediction, Stability
from hybridsgd.analysis.stability import (
    discrete_max_stable,
    discrete_radius,
    largest_stable,
    rightmost_root,
)
from hybridsgd.errors import ConfigError
from hybridsgd.policies.registry import ASYNC, family

SWEEP_BUDGET = 0.05  # Monte Carlo size per worker count in a sweep (k_async, ssp, psp)

STABILITY_TAIL = 1e-4  # staleness tail left out of the delay model's roots

STABILITY_BINS = 1024  # the delay model's polynomial degree at most (its roots cost n^3)


def stability_pmf(pred: Prediction) -> np.ndarray:
    """The staleness distribution the delay model uses: the prediction's, less a tail of
    mass ``STABILITY_TAIL``. A tail of probability q at staleness k adds roots of modulus
    near (eta h q)^(1/k), close to 1 for large k: they would set the asymptotic rate while
    moving x by about q, and a Monte Carlo estimate's farthest counts are noise anyway.
    Past ``STABILITY_BINS`` the remaining mass is kept at the last bin (never dropped and
    renormalised, which would make the limit optimistic under heavy tails)."""
    pmf = trim_pmf(pred.staleness_pmf, STABILITY_TAIL)
    if len(pmf) > STABILITY_BINS:  # a heavy tail: its far mass stays, at the last bin
        pmf = np.concatenate([pmf[: STABILITY_BINS - 1], [pmf[STABILITY_BINS - 1 :].sum()]])
    return pmf


def regime_radius(pred: Prediction, eta_h: float) -> float:
    """Per-update contraction of the discrete model along curvature h in one regime: a
    synchronous regime (no staleness) is gradient descent on a fresh mean (|1 - eta h|)."""
    if pred.mean_staleness == 0 and not pred.lockstep:
        return abs(1.0 - eta_h)
    return discrete_radius(eta_h, stability_pmf(pred))


def stability_of(
    pred,
    *,
    lr,
    h,
    compute,
    comm,
    speeds,
    batch_size,
    policy,
    k,
    backups,
    s_bound,
    continuous=True,
    sweep=True,
    sample=None,
) -> Stability:
    rate_updates = 1.0 / pred.mean_update_time
    pmf = stability_pmf(pred)
    # discrete: per update, with the staleness distribution predicted above; a synchronous
    # update of K gradients is plain gradient descent on their mean (staleness 0)
    if pred.lockstep:
        # every gradient of a round is computed at the round's start and applied in turn:
        # a round multiplies x by (1 - W eta h), exactly
        W = pred.lockstep
        radius = abs(1.0 - W * lr * h) ** (1.0 / W)
        max_lr = 2.0 / (W * h)
    else:
        radius = discrete_radius(lr * h, pmf)
        max_lr = discrete_max_stable(pmf) / h
    stable = radius < 1.0
    conv = -math.log(radius) * rate_updates if radius > 0 else math.inf
    # continuous model (Yu, Chen & Poor) for comparison: delay = read-to-apply time
    cont: dict[str, Any] = {}
    if continuous and policy in family(ASYNC):
        try:
            cont = continuous_model(pred, lr, h, compute, comm, speeds, rate_updates)
        except ArithmeticError as exc:  # reported beside the verdict: never fatal
            cont = {"error": str(exc)}
    best = stop = unstable = None
    if sweep and policy in family(ASYNC):  # the synchronous family needs a noise model
        best, stop, unstable = worker_sweep(
            policy,
            pred.workers,
            compute,
            comm,
            speeds,
            batch_size,
            lr,
            h,
            k,
            backups,
            s_bound,
            sample,
        )
    return Stability("discrete", stable, conv, max_lr, best, stop, unstable, cont)


def continuous_model(pred, lr, h, compute, comm, speeds, rate_updates) -> dict[str, float]:
    """Yu, Chen & Poor's continuous delay model, for comparison with the discrete one:
    s + eta h lambda E[exp(-s D)] = 0, lambda the update rate, D the read-to-apply delay."""
    speed = 1.0 if speeds is None else float(np.asarray(speeds, dtype=float)[0])
    shift = 2.0 * comm.mean()
    delay = Scaled(compute, speed, shift)
    mean_d = speed * compute.mean() + shift

    def root(eta: float) -> complex:
        return rightmost_root(eta * h * rate_updates, delay.laplace, mean_d)

    r = root(lr)
    return {
        "stable": bool(r.real < 0),
        "convergence_rate": -r.real,
        "max_stable_lr": largest_stable(lambda eta: root(eta).real < 0, hi=1.0 / h, tol=1e-4),
    }


def worker_sweep(
    policy, W, compute, comm, speeds, batch_size, lr, h, k, backups, s_bound, sample=None
):
    """Convergence rate per unit time over W' = 1 .. 2W (same per-worker timing): the
    fastest W', the first W' past it that is slower, and the first W' that diverges.

    Evaluated on a geometric grid of W' and refined where it matters: every W' next to the
    best grid point, and a bisection for the first divergent one (more workers only add
    staleness, so past it every W' diverges)."""
    from hybridsgd.analysis.predict import predict  # it calls back per regime / W

    if speeds is not None and not np.allclose(speeds, speeds[0]):
        return None, None, None  # a sweep needs a rule for the added workers' speeds
    rates: dict[int, float | None] = {}  # None: diverges, or no model for that W'

    def rate(w: int) -> float | None:
        if w not in rates:
            try:
                p = predict(
                    policy,
                    w,
                    compute,
                    comm,
                    batch_size=batch_size,
                    backups=min(backups, w - 1),
                    k=None if k is None else min(k, w),
                    staleness_bound=s_bound,
                    sample=None if sample is None else min(sample, w),
                    mc_budget=SWEEP_BUDGET,
                )
            except ConfigError:
                rates[w] = None
                return None
            radius = discrete_radius(lr * h, stability_pmf(p))
            rates[w] = -math.log(radius) / p.mean_update_time if radius < 1.0 else -math.inf
        return rates[w]

    grid = sorted({int(round(x)) for x in np.geomspace(1, 2 * W, 16)} | {W, 2 * W})
    unstable = None
    for i, w in enumerate(grid):
        if rate(w) == -math.inf:
            lo, hi = (grid[i - 1] if i else 0), w  # lo converges, hi diverges
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if rate(mid) != -math.inf else (lo, mid)
            unstable = hi
            break
    finite = {w: r for w, r in rates.items() if r is not None and r > -math.inf}
    if not finite:
        return None, None, unstable
    best = max(finite, key=finite.get)
    around = [w for w in sorted(finite) if w != best]
    lo = max((w for w in around if w < best), default=best)
    hi = min((w for w in around if w > best), default=best)
    for w in range(lo, hi + 1):  # every W' between the best grid point's neighbours
        if unstable is None or w < unstable:
            rate(w)
    finite = {w: r for w, r in rates.items() if r is not None and r > -math.inf}
    best = max(finite, key=finite.get)
    stop = next((w for w in sorted(finite) if w > best and finite[w] < finite[best]), None)
    return best, stop, unstable
