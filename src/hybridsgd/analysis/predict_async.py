"""The asynchronous family: staleness distributions by the Poisson approximation, ssp with
s = 0 in lockstep, and Monte Carlo estimates of the exact dynamics (docs/analysis.md)."""

from __future__ import annotations

import math

import numpy as np

from hybridsgd.analysis.distributions import cdf, laplace, poisson_mixture_pmf, quantile
from hybridsgd.analysis.order_stats import expected_kth
from hybridsgd.analysis.prediction import Prediction
from hybridsgd.timing.models import Constant, TimingModel

PMF_TAIL = 1e-6  # staleness mass the distribution may leave beyond its last bin

PMF_MAX = 1 << 20  # the most bins; mass beyond goes to two bins that keep the mean exact


def async_staleness_pmf(compute, comm, W, speeds, rate, shift, mean: float) -> np.ndarray:
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
        parts.append((share, rate - own, Scaled(compute, speed, shift)))
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


class Scaled:
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


def trim_pmf(pmf: np.ndarray, tail: float = 1e-9) -> np.ndarray:
    """Drop the far tail (mass below ``tail``): it keeps stability polynomials small."""
    keep = int(np.searchsorted(np.cumsum(pmf), 1.0 - tail)) + 1
    out = pmf[: max(1, keep)]
    return out / out.sum()


def per_update_staleness(pmf: np.ndarray, per_update: float) -> np.ndarray:
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


def ssp_zero(policy, W, compute, speeds, shift, batch_size, assumptions, qs, label) -> Prediction:
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


def estimated(policy, W, est, batch_size, qs, label, assumptions, method) -> Prediction:
    """A prediction from a Monte Carlo of the exact dynamics (:mod:`dynamics`)."""
    pmf = trim_pmf(est.staleness_pmf)
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
