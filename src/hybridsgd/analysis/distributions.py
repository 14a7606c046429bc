"""Quantile functions, CDFs and Laplace transforms of the timing models, for analysis.

The simulator samples the models; analysis integrates them. Every model of
:mod:`hybridsgd.timing.models` has a quantile function Q(u), which turns every expectation
into an integral over u in (0, 1): E[g(X)] = int_0^1 g(Q(u)) du (see ``quantile_grid``).
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from hybridsgd.analysis.jobs import SumOfSteps
from hybridsgd.timing.models import (
    Constant,
    Empirical,
    Exponential,
    Gamma,
    LogNormal,
    Pareto,
    ShiftedExponential,
    TimingModel,
    Uniform,
)


def quantile(model: TimingModel, u: np.ndarray) -> np.ndarray:
    """Q(u) = inf {t : F(t) >= u}, vectorised over u in (0, 1)."""
    u = np.asarray(u, dtype=float)
    if isinstance(model, Constant):
        return np.full_like(u, model.value)
    if isinstance(model, Exponential):
        return -np.log1p(-u) / model.mu
    if isinstance(model, ShiftedExponential):
        return model.delta - np.log1p(-u) / model.mu
    if isinstance(model, Pareto):
        return model.scale * (1.0 - u) ** (-1.0 / model.alpha)
    if isinstance(model, LogNormal):
        return np.exp(model.mu + model.sigma * special.ndtri(u))
    if isinstance(model, Uniform):
        return model.low + u * (model.high - model.low)
    if isinstance(model, Gamma):
        return model.scale * special.gammaincinv(model.shape, u)
    if isinstance(model, Empirical):
        return np.quantile(np.asarray(model.values), u, method="inverted_cdf")
    if isinstance(model, SumOfSteps):  # inverted_cdf of its sorted sample
        n = len(model.sums)
        return model.sums[np.clip(np.ceil(u * n).astype(int) - 1, 0, n - 1)]
    raise TypeError(f"no quantile function for {type(model).__name__}")


def cdf(model: TimingModel, t: np.ndarray) -> np.ndarray:
    """F(t) = P(X <= t), vectorised."""
    t = np.asarray(t, dtype=float)
    if isinstance(model, Constant):
        return (t >= model.value).astype(float)
    if isinstance(model, Exponential):
        return np.where(t > 0, -np.expm1(-model.mu * np.maximum(t, 0)), 0.0)
    if isinstance(model, ShiftedExponential):
        x = np.maximum(t - model.delta, 0)
        return np.where(t > model.delta, -np.expm1(-model.mu * x), 0.0)
    if isinstance(model, Pareto):
        return np.where(
            t > model.scale, 1.0 - (model.scale / np.maximum(t, model.scale)) ** model.alpha, 0.0
        )
    if isinstance(model, LogNormal):
        with np.errstate(divide="ignore"):
            return np.where(
                t > 0,
                special.ndtr((np.log(np.maximum(t, 1e-300)) - model.mu) / max(model.sigma, 1e-300)),
                0.0,
            )
    if isinstance(model, Uniform):
        if model.high == model.low:
            return (t >= model.low).astype(float)
        return np.clip((t - model.low) / (model.high - model.low), 0.0, 1.0)
    if isinstance(model, Gamma):
        return special.gammainc(model.shape, np.maximum(t, 0) / model.scale)
    if isinstance(model, Empirical):
        v = np.sort(np.asarray(model.values))
        return np.searchsorted(v, t, side="right") / len(v)
    if isinstance(model, SumOfSteps):
        return np.searchsorted(model.sums, t, side="right") / len(model.sums)
    raise TypeError(f"no CDF for {type(model).__name__}")


def laplace(model: TimingModel, s: complex) -> complex:
    """E[exp(-s X)] for complex s (closed forms where they exist)."""
    if isinstance(model, Constant):
        return complex(np.exp(-s * model.value))
    if isinstance(model, Exponential):
        return model.mu / (model.mu + s)
    if isinstance(model, ShiftedExponential):
        return complex(np.exp(-s * model.delta)) * model.mu / (model.mu + s)
    if isinstance(model, Gamma):
        return (1.0 + model.scale * s) ** (-model.shape)
    if isinstance(model, Uniform):
        a, b = model.low, model.high
        if b == a or abs(s) < 1e-12:
            return complex(np.exp(-s * a))
        return complex((np.exp(-s * a) - np.exp(-s * b)) / (s * (b - a)))
    if isinstance(model, Empirical):
        return complex(np.mean(np.exp(-s * np.asarray(model.values))))
    x, w = quantile_grid(model)
    with np.errstate(over="ignore", invalid="ignore"):
        return complex(np.exp(-s * x) @ w)


_GRIDS: dict[TimingModel, tuple[np.ndarray, np.ndarray]] = {}


def quantile_grid(model: TimingModel) -> tuple[np.ndarray, np.ndarray]:
    """Nodes Q(u_i) and weights for E[g(X)] ~ sum_i w_i g(Q(u_i)): a midpoint rule in u,
    refined towards u = 1 where heavy tails live. Cached per model."""
    if model not in _GRIDS:
        edges = np.concatenate(
            [np.linspace(0, 0.99, 2001), 0.99 + 0.01 * (1 - np.geomspace(1, 1e-9, 801))[1:]]
        )
        u = (edges[:-1] + edges[1:]) / 2
        _GRIDS[model] = (quantile(model, u), np.diff(edges))
    return _GRIDS[model]


def poisson_mixture_pmf(model: TimingModel, rate: float, n_max: int) -> np.ndarray:
    """P(N = n), n = 0..n_max, for N ~ Poisson(rate * X), X from the model."""
    n = np.arange(n_max + 1)
    if isinstance(model, Constant):
        return stats.poisson.pmf(n, rate * model.value)
    if isinstance(model, Empirical):
        return stats.poisson.pmf(n[:, None], rate * np.asarray(model.values)[None, :]).mean(axis=1)
    x, w = quantile_grid(model)
    return stats.poisson.pmf(n[:, None], rate * x[None, :]) @ w


__all__ = ["cdf", "laplace", "poisson_mixture_pmf", "quantile", "quantile_grid"]
