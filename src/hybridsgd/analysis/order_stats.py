"""Order statistics of worker times: the synchronous family's time per update.

A round that waits for the first k of W gradients lasts T_(k), the k-th smallest of the W
workers' delays (Chen et al. 2016; Dutta et al. 2018).

* iid, exponential or shifted exponential: E[T_(k)] = delta + (H_W - H_{W-k}) / mu
  (Renyi's representation: gaps between order statistics of Exp(mu) are Exp((W - i) mu)).
* iid, any model: E[T_(k)] = int_0^1 Q(u) beta_pdf(u; k, W - k + 1) du (the k-th order
  statistic of W uniforms is Beta(k, W - k + 1); Q the quantile function).
* a job of H local steps whose sum has no closed form (:mod:`hybridsgd.analysis.jobs`):
  the same integral over its sorted sample of sums, a step function, summed exactly.
* heterogeneous workers (speed factors): E[T_(k)] = int_0^inf P(fewer than k of the W
  are done by t) dt, the count being Poisson-binomial (a dynamic programme over workers).

Communication adds two messages per minibatch; a constant communication time shifts every
delay, a random one is replaced by its mean (stated in the prediction's ``assumptions``).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import integrate, special, stats

from hybridsgd.analysis.distributions import cdf, quantile
from hybridsgd.analysis.jobs import SumOfSteps
from hybridsgd.timing.models import Exponential, ShiftedExponential, TimingModel


def harmonic(n: int) -> float:
    return float(special.digamma(n + 1) + np.euler_gamma)


def expected_kth(
    model: TimingModel, workers: int, k: int, speeds=None, shift: float = 0.0
) -> tuple[float, str]:
    """E[T_(k)] of ``workers`` delays ``speed_w * X + shift``; returns (value, method)."""
    if not 1 <= k <= workers:
        raise ValueError("need 1 <= k <= workers")
    homogeneous = speeds is None or np.allclose(speeds, speeds[0])
    scale = 1.0 if speeds is None else float(speeds[0])
    if homogeneous:
        if isinstance(model, Exponential | ShiftedExponential):
            delta = getattr(model, "delta", 0.0)
            value = delta + (harmonic(workers) - harmonic(workers - k)) / model.mu
            return scale * value + shift, "closed form (Renyi)"
        a, b = k, workers - k + 1
        if isinstance(model, SumOfSteps):  # a sorted sample: its quantile is a step function
            n = len(model.sums)
            weights = np.diff(stats.beta.cdf(np.arange(n + 1) / n, a, b))
            return scale * float(model.sums @ weights) + shift, "order statistics of the sums"
        mode = (a - 1) / (a + b - 2) if a + b > 2 else 0.5
        value, _ = integrate.quad(
            lambda u: float(quantile(model, np.array([u]))[0]) * stats.beta.pdf(u, a, b),
            0.0,
            1.0,
            points=[mode],
            limit=400,
        )
        return scale * value + shift, "order statistics, integrated"
    speeds = np.asarray(speeds, dtype=float)
    return _hetero(model, speeds, k) + shift, "order statistics, Poisson-binomial"


def _done_at_least(p: np.ndarray, k: int) -> float:
    """P(at least k successes) for independent success probabilities p (DP over workers)."""
    dist = np.zeros(len(p) + 1)
    dist[0] = 1.0
    for q in p:
        dist[1:] = dist[1:] * (1 - q) + dist[:-1] * q
        dist[0] *= 1 - q
    return float(dist[k:].sum())


def _hetero(model: TimingModel, speeds: np.ndarray, k: int) -> float:
    def survival(t: float) -> float:
        return 1.0 - _done_at_least(cdf(model, np.array([t]) / speeds).ravel(), k)

    hi = float(np.max(speeds) * quantile(model, np.array([0.5]))[0]) * 4 + 1e-9
    head, _ = integrate.quad(survival, 0.0, hi, limit=400)
    tail, _ = integrate.quad(survival, hi, math.inf, limit=400)
    return head + tail


def kth_quantiles(
    model: TimingModel, workers: int, k: int, qs=(0.5, 0.9, 0.99), speeds=None, shift: float = 0.0
) -> dict[float, float]:
    """Quantiles of T_(k) (iid: Q(beta quantile); heterogeneous: by bisection on the CDF)."""
    if speeds is None or np.allclose(speeds, speeds[0]):
        scale = 1.0 if speeds is None else float(speeds[0])
        u = stats.beta.ppf(np.asarray(qs), k, workers - k + 1)
        return {
            q: float(scale * quantile(model, np.array([x]))[0] + shift)
            for q, x in zip(qs, u, strict=True)
        }
    speeds = np.asarray(speeds, dtype=float)
    out = {}
    for q in qs:
        lo, hi = 0.0, 1.0
        while _done_at_least(cdf(model, np.array([hi]) / speeds).ravel(), k) < q:
            hi *= 2
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (
                (mid, hi)
                if _done_at_least(cdf(model, np.array([mid]) / speeds).ravel(), k) < q
                else (lo, mid)
            )
        out[q] = hi + shift
    return out
