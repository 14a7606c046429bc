"""Predictions for a policy, W workers and a timing model, without training.

Every prediction says which method produced each number and what it assumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from hybridsgd.analysis import dynamics
from hybridsgd.analysis.distributions import cdf, laplace, poisson_mixture_pmf, quantile
from hybridsgd.analysis.order_stats import expected_kth, kth_quantiles
from hybridsgd.analysis.stability import (
    discrete_radius,
    largest_stable,
    rightmost_root,
)
from hybridsgd.errors import ConfigError
from hybridsgd.policies.hybrid import PROGRESS, quorum, synchrony
from hybridsgd.policies.registry import family
from hybridsgd.timing.models import Constant, Exponential, TimingModel

#: the registered policies each family of closed forms covers (``Registered.family``)
SYNC_FAMILY = family("sync")
ASYNC_FAMILY = family("async")
PER_REGIME = ("hybrid",)  # predicted regime by regime (see hybrid_regimes)
SWEEP_BUDGET = 0.05  # Monte Carlo size per worker count in a sweep (k_async, ssp, psp)


@dataclass
class Stability:
    model: str  # "discrete" or "continuous"
    stable: bool
    convergence_rate: float  # per unit of time (continuous: -Re s*; discrete: -ln|z| * rate)
    max_stable_lr: float
    best_workers: int | None = None
    workers_stop_helping: int | None = None  # beyond the best, adding workers slows training
    workers_unstable: int | None = None  # the smallest W that diverges at this learning rate
    continuous: dict[str, float] = field(default_factory=dict)  # the other model's answer


@dataclass(kw_only=True)
class Prediction:
    policy: str
    workers: int
    quorum: float  # gradients per update
    mean_update_time: float
    update_time_quantiles: dict[str, float]
    throughput: float  # samples per unit of time
    mean_staleness: float
    staleness_quantiles: dict[str, float]
    wasted_fraction: float  # of started minibatches, cancelled or dropped
    method: dict[str, str]
    assumptions: list[str]
    stability: Stability | None = None
    staleness_pmf: np.ndarray = field(default_factory=lambda: np.array([1.0]), repr=False)
    lockstep: int = 0  # ssp s=0: gradients of a round all read the round's start (W of them)
    update_time_se: float = 0.0  # Monte Carlo standard error of mean_update_time (0: exact)
    regimes: list[dict[str, Any]] = field(default_factory=list)  # hybrid: one row per regime

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("staleness_pmf")
        if self.stability is not None:
            for key in ("stable", "convergence_rate", "max_stable_lr", "best_workers"):
                d[key] = d["stability"][key]
        return d


def finite_mean(model: TimingModel, field: str) -> None:
    """Refuse a timing model whose mean is infinite (Pareto with alpha <= 1): time per
    update, throughput and staleness are then infinite or undefined, so there is nothing to
    predict (the simulator can still run it)."""
    if not math.isfinite(model.mean()):
        raise ConfigError(
            field,
            f"{model} has an infinite mean time, so time per update, throughput and staleness "
            "are undefined; use a finite-mean model (e.g. pareto with alpha > 1)",
        )


def _cycles(
    compute: TimingModel, comm: TimingModel, workers: int, speeds
) -> tuple[np.ndarray, float]:
    s = np.ones(workers) if speeds is None else np.asarray(speeds, dtype=float)
    shift = 2.0 * comm.mean()
    return s * compute.mean() + shift, shift


def predict(
    policy: str,
    workers: int,
    compute: TimingModel,
    comm: TimingModel | None = None,
    *,
    speeds=None,
    batch_size: int = 32,
    backups: int = 0,
    k: int | None = None,
    staleness_bound: float | None = None,
    sample: int | None = None,
    threshold: Callable[[float], float] | None = None,
    progress: str = "updates",
    updates: int = 20_000,
    gradients_per_epoch: float = 1.0,
    lr: float | None = None,
    curvature: float | None = None,
    continuous: bool = True,
    sweep: bool = True,
    mc_budget: float = 1.0,
    seed: int = 0,
) -> Prediction:
    """Mean time per update and its spread, throughput, staleness and wasted work; with
    ``lr`` and ``curvature`` (largest Hessian eigenvalue), stability and speed too.

    ``k_async`` (1 < K) and ``ssp`` / ``psp`` with 0 < s < inf are estimated by Monte
    Carlo of their exact dynamics (:mod:`~hybridsgd.analysis.dynamics`; ``mc_budget``
    scales its size, ``seed`` seeds it); ``hybrid``
    (quorum reading) is predicted regime by regime over ``updates`` updates of
    ``threshold(progress)``."""
    comm = comm or Constant(0.0)
    W = workers
    finite_mean(compute, "--compute")
    finite_mean(comm, "--comm")
    assumptions = ["workers' times are independent from minibatch to minibatch"]
    if not comm.is_constant:
        assumptions.append("random communication time replaced by its mean")
    cycles, shift = _cycles(compute, comm, W, speeds)
    qs = (0.5, 0.9, 0.99)
    label = lambda q: f"p{round(q * 100)}"  # noqa: E731

    def finish(pred: Prediction) -> Prediction:
        if lr is not None and curvature is not None:
            pred.stability = _stability(
                pred,
                lr=lr,
                h=curvature,
                compute=compute,
                comm=comm,
                speeds=speeds,
                batch_size=batch_size,
                policy=policy,
                k=k,
                backups=backups,
                s_bound=staleness_bound,
                continuous=continuous,
                sweep=sweep,
                sample=sample,
            )
        return pred

    if policy in family("sync"):
        kk = {"sync": W, "backup": W - backups}.get(policy, k)
        if kk is None or not 1 <= kk <= W:
            raise ConfigError("policy", f"{policy} needs a quorum in [1, {W}]")
        if policy == "k_batch_sync":
            t, how = _k_batch_sync_time(compute, W, kk, speeds, shift)
            tq = {}
            wasted = W / (kk + W)
        else:
            t, how = expected_kth(compute, W, kk, speeds, shift)
            tq = {label(q): v for q, v in kth_quantiles(compute, W, kk, qs, speeds, shift).items()}
            wasted = (W - kk) / W
        pred = Prediction(
            policy=policy,
            workers=W,
            quorum=kk,
            mean_update_time=t,
            update_time_quantiles=tq,
            throughput=kk * batch_size / t,
            mean_staleness=0.0,
            staleness_quantiles={label(q): 0.0 for q in qs},
            wasted_fraction=wasted,
            method={"update_time": how, "staleness": "none by construction"},
            assumptions=assumptions,
        )
    elif policy in family("async"):
        rate = float(np.sum(1.0 / cycles))  # arrivals per unit time, renewal theorem
        steady = [*assumptions, "steady state: the start-up transient is dropped"]  # Monte Carlo
        assumptions.append(
            "steady state (renewal); staleness distribution by Poisson approximation"
        )
        if policy in ("k_batch_async", "k_async") and (k is None or not 1 <= k <= W):
            raise ConfigError("policy", f"{policy} needs k in [1, {W}]")
        if policy == "k_batch_async" or (policy == "k_async" and k == 1):
            per_update = float(k)  # type: ignore[arg-type]  # checked above
        elif policy == "k_async":
            assert k is not None
            est = dynamics.k_async(
                compute, comm, W, k, speeds, max(1000, round(40_000 * mc_budget)), seed
            )
            se = est.standard_error / est.mean_update_time
            method = {
                "update_time": "windows of K distinct workers over W independent renewal streams "
                f"(the exact dynamics), Monte Carlo: +-{se:.2%} (1 standard error)",
                "staleness": "updates between a gradient's read and its arrival, same Monte Carlo",
            }
            return finish(_estimated(policy, W, est, batch_size, qs, label, steady, method))
        elif policy in ("ssp", "psp"):
            if staleness_bound is None or staleness_bound < 0:
                raise ConfigError("policy", f"{policy} needs staleness_bound >= 0")
            beta = W if policy == "ssp" else sample
            if beta is None or not 1 <= beta <= W:
                raise ConfigError("policy", f"psp needs a sample (beta) in [1, {W}]")
            if math.isinf(staleness_bound):
                per_update = 1.0  # never waits: async
            elif staleness_bound < 1 and beta == W:
                return finish(
                    _ssp_zero(policy, W, compute, speeds, shift, batch_size, assumptions, qs, label)
                )
            else:
                est = dynamics.gated(
                    compute, comm, W, staleness_bound, beta, speeds, round(4e6 * mc_budget), seed
                )
                who = "every worker" if beta == W else f"a fresh sample of {beta} workers"
                se = est.standard_error / est.mean_update_time
                method = {
                    "update_time": f"max-plus recursion of the barrier on {who} (the exact "
                    f"dynamics), Monte Carlo over {est.gradients:,} gradients: +-{se:.2%} "
                    "(1 standard error)",
                    "staleness": "pushes by others between a gradient's start and its arrival, "
                    "counted in the same recursion",
                }
                return finish(_estimated(policy, W, est, batch_size, qs, label, steady, method))
        else:
            per_update = 1.0
        # the mean is exact by counting: at each update the W - 1 other gradients in flight
        # grow one version staler, whatever the distribution of compute times
        mean_stale = (W - 1) / per_update
        pmf = _async_staleness_pmf(compute, comm, W, speeds, rate, shift, W - 1.0)
        pmf = _trim(_per_update_staleness(pmf, per_update))
        t = per_update / rate
        pred = Prediction(
            policy=policy,
            workers=W,
            quorum=per_update,
            mean_update_time=t,
            update_time_quantiles={},
            throughput=per_update * batch_size / t,
            mean_staleness=mean_stale,
            staleness_quantiles={label(q): float(np.searchsorted(np.cumsum(pmf), q)) for q in qs},
            wasted_fraction=0.0,
            method={
                "update_time": "renewal: (gradients per update) / sum_w 1 / E[cycle_w]",
                "staleness": "mean: (W - 1) / (gradients per update), exact in steady state; "
                "distribution: Poisson mixture",
            },
            assumptions=assumptions,
            staleness_pmf=pmf,
        )
    elif policy in PER_REGIME:
        if threshold is None:
            raise ConfigError("policy.threshold", "hybrid needs a threshold, e.g. step:at=5000")
        regimes, plan = hybrid_regimes(
            W, compute, comm, speeds, batch_size, threshold, progress, updates, gradients_per_epoch
        )
        pred = hybrid_prediction(W, regimes, plan, batch_size, assumptions)
        if lr is not None and curvature is not None:
            pred.stability = _hybrid_stability(regimes, plan, lr, curvature)
        return pred
    else:
        raise ConfigError(
            "policy",
            f"no analytical model for {policy!r}; use one of: "
            + ", ".join(family("sync") + family("async") + PER_REGIME),
        )
    return finish(pred)


def _k_batch_sync_time(compute, W, k, speeds, shift) -> tuple[float, str]:
    if (
        isinstance(compute, Exponential)
        and shift == 0
        and (speeds is None or np.allclose(speeds, 1))
    ):
        return k / (W * compute.mu), "closed form: k / (W mu) (memoryless)"
    # the k-th arrival of W renewal streams started together, by Monte Carlo
    rng = np.random.default_rng(0)
    s = np.ones(W) if speeds is None else np.asarray(speeds, dtype=float)
    n = 20_000
    draws = compute.sample(rng, n * W * k).reshape(n, W, k) * s[None, :, None] + shift
    arrivals = np.cumsum(draws, axis=2).reshape(n, W * k)
    return float(
        np.partition(arrivals, k - 1, axis=1)[:, k - 1].mean()
    ), "Monte Carlo (20,000 rounds)"


PMF_TAIL = 1e-6  # staleness mass the distribution may leave beyond its last bin
PMF_MAX = 1 << 20  # the most bins; mass beyond goes to two bins that keep the mean exact


def _async_staleness_pmf(compute, comm, W, speeds, rate, shift, mean: float) -> np.ndarray:
    """Staleness of one gradient = arrivals of the other workers during its delay, Poisson
    with rate (lambda - 1 / E[cycle_w]); mixed over workers by their share of arrivals.

    Exact out to 6W + 40 arrivals; beyond, where a Poisson count is as spread out as its
    mean's own distribution, P(N = n) = P(n - 1/2 < rate X <= n + 1/2), out to where at most
    ``PMF_TAIL`` of the mass is left. Never renormalised: heavy tails (Pareto, log-normal)
    keep their far mass, and what is left past the end sits where the mean stays exact."""
    s = np.ones(W) if speeds is None else np.asarray(speeds, dtype=float)
    if isinstance(compute, Constant) and np.allclose(s, s[0]):
        # equal constant delays: every other worker lands exactly once per delay
        pmf = np.zeros(W)
        pmf[W - 1] = 1.0
        return pmf
    cycles = s * compute.mean() + shift
    n_exact = int(max(20, 6 * W + 40))
    parts = []
    for speed in np.unique(s):
        share = float(np.sum(1.0 / cycles[s == speed]) / rate)
        own = 1.0 / (speed * compute.mean() + shift)
        parts.append((share, rate - own, _Scaled(compute, speed, shift)))
    far = max(r * d.at_quantile(1.0 - PMF_TAIL) for _, r, d in parts)
    n_max = int(min(max(n_exact, math.ceil(far)), PMF_MAX))
    pmf = np.zeros(n_max + 1)
    for share, r, delay in parts:
        pmf[: n_exact + 1] += share * delay.poisson_pmf(r, n_exact)
        if n_max > n_exact:
            pmf[n_exact + 1 :] += share * delay.rate_mass(r, n_exact + 1, n_max)
    left = 1.0 - float(pmf.sum())
    at = (mean - float(np.arange(n_max + 1) @ pmf)) / left if left > 0 else 0.0
    if left <= 0 or not n_max < at <= 4 * PMF_MAX:  # nothing left, or too far to keep
        return pmf / pmf.sum()
    lo = int(math.floor(at))  # the two bins around `at` keep the mean exactly
    out = np.zeros(lo + 2)
    out[: len(pmf)] = pmf
    out[lo] += left * (lo + 1 - at)
    out[lo + 1] += left * (at - lo)
    return out


class _Scaled:
    """speed * X + shift, for the Poisson mixture."""

    def __init__(self, model: TimingModel, speed: float, shift: float) -> None:
        self.model, self.speed, self.shift = model, speed, shift

    def poisson_pmf(self, rate: float, n_max: int) -> np.ndarray:
        if self.shift == 0:
            return poisson_mixture_pmf(self.model, rate * self.speed, n_max)
        # Poisson(rate * (speed X + shift)) = Poisson(rate speed X) + Poisson(rate shift)
        from scipy import stats

        base = poisson_mixture_pmf(self.model, rate * self.speed, n_max)
        extra = stats.poisson.pmf(np.arange(n_max + 1), rate * self.shift)
        return np.convolve(base, extra)[: n_max + 1]

    def at_quantile(self, u: float) -> float:
        return self.speed * float(quantile(self.model, np.array([u]))[0]) + self.shift

    def rate_mass(self, rate: float, first: int, last: int) -> np.ndarray:
        """P(n - 1/2 < rate (speed X + shift) <= n + 1/2) for n = first..last: the Poisson
        count's pmf far out in the tail, where its spread (sqrt n) is small against n."""
        edges = (np.arange(first, last + 2) - 0.5) / rate
        return np.diff(cdf(self.model, (edges - self.shift) / self.speed))

    def laplace(self, s: complex) -> complex:
        return laplace(self.model, s * self.speed) * complex(np.exp(-s * self.shift))


def _trim(pmf: np.ndarray, tail: float = 1e-9) -> np.ndarray:
    """Drop the far tail (mass below ``tail``): it keeps stability polynomials small."""
    keep = int(np.searchsorted(np.cumsum(pmf), 1.0 - tail)) + 1
    out = pmf[: max(1, keep)]
    return out / out.sum()


def _per_update_staleness(pmf: np.ndarray, per_update: float) -> np.ndarray:
    """Staleness in updates when an update takes ``per_update`` arrivals: with the gradient's
    position c in the update cycle uniform, floor((c + A) / K) for A arrivals in between."""
    if per_update == 1.0:
        return pmf
    K = max(1, round(per_update))
    out = np.zeros(len(pmf) // K + 2)
    for c in range(K):
        idx = (c + np.arange(len(pmf))) // K
        np.add.at(out, idx, pmf / K)
    return out


def _ssp_zero(policy, W, compute, speeds, shift, batch_size, assumptions, qs, label) -> Prediction:
    """ssp with s = 0: lockstep iterations; each lasts the slowest of W delays and applies W
    gradients one by one; the i-th arrival of a round has staleness i - 1."""
    t_round, method = expected_kth(compute, W, W, speeds, shift)
    pmf = np.full(W, 1.0 / W)
    return Prediction(
        policy=policy,
        workers=W,
        quorum=1.0,
        mean_update_time=t_round / W,
        update_time_quantiles={},
        throughput=W * batch_size / t_round,
        mean_staleness=(W - 1) / 2,
        staleness_quantiles={label(q): float(np.searchsorted(np.cumsum(pmf), q)) for q in qs},
        wasted_fraction=0.0,
        method={"update_time": f"E[max of W] / W ({method})", "staleness": "uniform on 0..W-1"},
        assumptions=assumptions,
        staleness_pmf=pmf,
        lockstep=W,
    )


def _estimated(policy, W, est, batch_size, qs, label, assumptions, method) -> Prediction:
    """A prediction from a Monte Carlo of the exact dynamics (:mod:`dynamics`)."""
    pmf = _trim(est.staleness_pmf)
    t = est.mean_update_time
    q = est.gradients_per_update
    return Prediction(
        policy=policy,
        workers=W,
        quorum=q,
        mean_update_time=t,
        update_time_quantiles={},
        throughput=q * batch_size / t,
        mean_staleness=float(np.arange(len(pmf)) @ pmf),
        staleness_quantiles={label(x): float(np.searchsorted(np.cumsum(pmf), x)) for x in qs},
        wasted_fraction=0.0,
        method=method,
        assumptions=assumptions,
        staleness_pmf=pmf,
        update_time_se=est.standard_error,
    )


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
    level = synchrony(level)
    K = quorum(level, W)
    key = "sync" if level >= 1.0 else ("async" if K == 1 else f"k_async:k={K}")
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


STABILITY_TAIL = 1e-4  # staleness tail left out of the delay model's roots
STABILITY_BINS = 1024  # the delay model's polynomial degree at most (its roots cost n^3)


def stability_pmf(pred: Prediction) -> np.ndarray:
    """The staleness distribution the delay model uses: the prediction's, less a tail of
    mass ``STABILITY_TAIL``. A tail of probability q at staleness k adds roots of modulus
    near (eta h q)^(1/k), close to 1 for large k: they would set the asymptotic rate while
    moving x by about q, and a Monte Carlo estimate's farthest counts are noise anyway.
    Past ``STABILITY_BINS`` the remaining mass is kept at the last bin (never dropped and
    renormalised, which would make the limit optimistic under heavy tails)."""
    pmf = _trim(pred.staleness_pmf, STABILITY_TAIL)
    if len(pmf) > STABILITY_BINS:  # a heavy tail: its far mass stays, at the last bin
        pmf = np.concatenate([pmf[: STABILITY_BINS - 1], [pmf[STABILITY_BINS - 1 :].sum()]])
    return pmf


def regime_radius(pred: Prediction, eta_h: float) -> float:
    """Per-update contraction of the discrete model along curvature h in one regime: the
    synchronous regime is gradient descent on a fresh mean (|1 - eta h|)."""
    if pred.policy == "sync":
        return abs(1.0 - eta_h)
    return discrete_radius(eta_h, stability_pmf(pred))


def _stable_in(regime, h: float, eta: float) -> bool:
    return regime_radius(regime, eta * h) < 1.0


def _hybrid_stability(regimes, plan, lr: float, h: float) -> Stability:
    """Stable when every regime used is; the rate is the net contraction over the plan per
    unit of time; the largest stable learning rate keeps every regime used stable."""
    radius = {k: regime_radius(r, lr * h) for k, r in regimes.items()}
    log_net = sum(n * math.log(max(radius[k], 1e-300)) for k, n in plan)
    time = sum(n * regimes[k].mean_update_time for k, n in plan)
    limit = min(largest_stable(partial(_stable_in, r, h), hi=4.0 / h) for r in regimes.values())
    return Stability(
        "discrete, per regime", all(r < 1.0 for r in radius.values()), -log_net / time, limit
    )


def _stability(
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
        max_lr = largest_stable(lambda eta: discrete_radius(eta * h, pmf) < 1.0, hi=1.0 / h)
    stable = radius < 1.0
    conv = -math.log(radius) * rate_updates if radius > 0 else math.inf
    # continuous model (Yu, Chen & Poor) for comparison: delay = read-to-apply time
    cont: dict[str, Any] = {}
    if continuous and policy in family("async"):
        try:
            cont = _continuous(pred, lr, h, compute, comm, speeds, rate_updates)
        except ArithmeticError as exc:  # reported beside the verdict: never fatal
            cont = {"error": str(exc)}
    best = stop = unstable = None
    if sweep and policy in family("async"):  # the synchronous family needs a noise model
        best, stop, unstable = _worker_sweep(
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


def _continuous(pred, lr, h, compute, comm, speeds, rate_updates) -> dict[str, float]:
    """Yu, Chen & Poor's continuous delay model, for comparison with the discrete one:
    s + eta h lambda E[exp(-s D)] = 0, lambda the update rate, D the read-to-apply delay."""
    speed = 1.0 if speeds is None else float(np.asarray(speeds, dtype=float)[0])
    shift = 2.0 * comm.mean()
    delay = _Scaled(compute, speed, shift)
    mean_d = speed * compute.mean() + shift

    def root(eta: float) -> complex:
        return rightmost_root(eta * h * rate_updates, delay.laplace, mean_d)

    r = root(lr)
    return {
        "stable": bool(r.real < 0),
        "convergence_rate": -r.real,
        "max_stable_lr": largest_stable(lambda eta: root(eta).real < 0, hi=1.0 / h, tol=1e-4),
    }


def _worker_sweep(
    policy, W, compute, comm, speeds, batch_size, lr, h, k, backups, s_bound, sample=None
):
    """Convergence rate per unit time over W' = 1 .. 2W (same per-worker timing): the
    fastest W', the first W' past it that is slower, and the first W' that diverges.

    Evaluated on a geometric grid of W' and refined where it matters: every W' next to the
    best grid point, and a bisection for the first divergent one (more workers only add
    staleness, so past it every W' diverges)."""
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
