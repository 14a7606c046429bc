"""The gradient noise scale of a task: how many samples a gradient needs before a bigger
batch stops helping (McCandlish, Kaplan, Amodei et al. 2018, "An Empirical Model of
Large-Batch Training", arXiv 1812.06162).

With G the true gradient and Sigma the per-sample gradient covariance, the simple noise
scale is ``B_simple = tr(Sigma) / |G|^2`` (their eq. 2.9). It equals the noise scale
B_noise when the Hessian is a multiple of the identity, and B_noise predicts the critical
batch size: training to a given loss takes S updates and E samples with

    S = S_min (1 + B_noise / B),    E = E_min (1 + B / B_noise)        (their eq. 2.11)

for updates of B samples each. Below B_noise, a bigger batch cuts the updates needed almost
in proportion; above it, hardly at all.

Estimated from m independent minibatch gradients g_1..g_m of b samples (their appendix A,
with m minibatches of b as the small and the large batch): with ḡ their mean,

    S = sum |g_i - ḡ|^2 / (m - 1)     estimates tr(Sigma) / b   (unbiased),
    |ḡ|^2 - S / m                     estimates |G|^2           (unbiased),

and B_simple is b S over the second. The ratio of two unbiased estimates is not unbiased,
and neither is a plain percentile bootstrap of it (a resampled mean carries the extra noise
S / m that the resample's own S does not subtract), so the 95% interval is the basic
(pivotal) bootstrap of log B_simple: resampled estimates are compared with the value the
resampling distribution itself has, b (m - 1) / m S / |ḡ|^2, and that spread is put around
the estimate. An estimate far above m·b (the samples it saw) is not resolved: the interval
then reaches infinity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from hybridsgd.tasks.base import Task


@dataclass
class NoiseScale:
    """One estimate of the simple noise scale, in samples."""

    b_simple: float  # tr(Sigma) / |G|^2; inf when |G|^2 is not measurably above 0
    low: float  # 95% bootstrap interval
    high: float
    grad_norm2: float  # the unbiased estimate of |G|^2
    trace: float  # the unbiased estimate of tr(Sigma), per sample
    minibatches: int
    batch_size: int
    #: tr(H Sigma) / G^T H G (eq. 2.8), with its interval; NaN unless asked for (Hessian
    #: products cost about three gradients each)
    b_noise: float = math.nan
    noise_low: float = math.nan
    noise_high: float = math.nan

    def to_dict(self) -> dict[str, float | int]:
        return {
            "b_simple": self.b_simple,
            "low": self.low,
            "high": self.high,
            "grad_norm2": self.grad_norm2,
            "trace_sigma": self.trace,
            "minibatches": self.minibatches,
            "batch_size": self.batch_size,
            "b_noise": self.b_noise,
            "noise_low": self.noise_low,
            "noise_high": self.noise_high,
        }


def _ratio(g: np.ndarray, b: int) -> tuple[float, float, float]:
    """(B_simple, |G|^2, tr Sigma) from minibatch gradients ``g`` [m, d] in float64."""
    m = len(g)
    mean = g.mean(axis=0)
    s = float(((g - mean) ** 2).sum()) / (m - 1)
    g2 = float(mean @ mean) - s / m
    trace = b * s
    return (trace / g2 if g2 > 0 else math.inf), g2, trace


def minibatch_gradients(task: Task, params: torch.Tensor, indices: list[np.ndarray]) -> np.ndarray:
    """One gradient per minibatch of training-sample indices, each computed alone (its own
    BatchNorm statistics, as a worker's), as float64 rows."""
    rows = [task.grad(params, *task.batch(idx))[0].double().cpu().numpy() for idx in indices]
    return np.stack(rows)


def estimate(
    task: Task,
    params: torch.Tensor,
    batch_size: int,
    minibatches: int = 64,
    seed: int = 0,
    boots: int = 2000,
    hessian: bool = False,
) -> NoiseScale:
    """B_simple of ``task`` at ``params``, from ``minibatches`` independent minibatches of
    ``batch_size`` samples: drawn with replacement from the training set (so they are
    independent and the covariance is the training set's), or fresh from a stream. With
    ``hessian``, also B_noise (:func:`_b_noise`), from as many more minibatches."""
    from hybridsgd.tasks.stream import StreamTask

    if minibatches < 2:
        raise ValueError("the noise scale needs at least 2 minibatches")
    rng = np.random.default_rng(seed)
    n = 2 * minibatches if hessian else minibatches
    if isinstance(task, StreamTask):
        sampler = task.samplers(1, batch_size, seed=10_007 + seed)[0]
        indices = [sampler.batch(k) for k in range(n)]
    else:
        indices = [rng.integers(0, task.n_train, batch_size) for _ in range(n)]
    g = minibatch_gradients(task, params, indices[:minibatches])
    value, g2, trace = _ratio(g, batch_size)
    low, high = _interval(g, batch_size, value, rng, boots)
    out = NoiseScale(value, low, high, g2, trace, minibatches, batch_size)
    if hessian:
        out.b_noise, out.noise_low, out.noise_high = _b_noise(
            task, params, g, indices[minibatches:], batch_size, rng, boots
        )
    return out


def _hvp(task: Task, params: torch.Tensor, idx: np.ndarray, v: np.ndarray) -> np.ndarray:
    """H v for the Hessian of the loss on one minibatch (training mode, as a worker's)."""
    x, y = task.batch(idx)
    vec = torch.from_numpy(v).to(params.dtype).to(params.device)
    t = params.detach().clone().requires_grad_(True)
    with task._training():  # reverse over reverse, as hybridsgd.analysis.curvature does
        (g,) = torch.autograd.grad(task._loss(t, x, y), t, create_graph=True)
        (hv,) = torch.autograd.grad(g @ vec, t)
    return hv.double().cpu().numpy()


def _b_noise(
    task: Task,
    params: torch.Tensor,
    g: np.ndarray,
    hessian_batches: list[np.ndarray],
    b: int,
    rng: np.random.Generator,
    boots: int,
) -> tuple[float, float, float]:
    """B_noise = tr(H Sigma) / G^T H G (McCandlish et al. eq. 2.8), and an interval.

    H enters through Hessian-vector products with the Hessians H_i of minibatches
    independent of the gradients, so each quadratic form is unbiased:
    q_i = (g_i - ḡ)^T H_i (g_i - ḡ) averages to (m - 1) / m tr(H Sigma) / b, and
    w_i = ḡ^T H_i ḡ to G^T H G + tr(H Sigma) / (b m). The interval is a basic bootstrap of
    log B_noise over the m triples (g_i, q_i, H_i ḡ), with each resample's ḡ*^T H ḡ*
    linearised around ḡ."""
    m = len(g)
    mean = g.mean(axis=0)
    q = np.empty(m)
    u = np.empty_like(g)
    for i in range(m):
        q[i] = (g[i] - mean) @ _hvp(task, params, hessian_batches[i], g[i] - mean)
        u[i] = _hvp(task, params, hessian_batches[i], mean)
    w = u @ mean

    def ratio(t_sum: float, ghg: float) -> float:
        t = t_sum / (m - 1)
        denominator = ghg - t / m
        return b * t / denominator if denominator > 0 else math.inf

    value = ratio(float(q.sum()), float(w.mean()))
    if not math.isfinite(value) or value <= 0:
        return value, 0.0, math.inf
    draws = np.empty(boots)
    for k in range(boots):
        pick = rng.integers(0, m, m)
        shift = 2.0 * float((g[pick].mean(axis=0) - mean) @ u[pick].mean(axis=0))
        draws[k] = ratio(float(q[pick].sum()), float(w[pick].mean()) + shift)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = np.log(draws) - math.log(value)
    lo, hi = _percentiles(np.where(np.isnan(spread), np.inf, spread))
    return value, float(value * math.exp(-hi)), float(value * math.exp(-lo))


def _interval(
    g: np.ndarray, b: int, value: float, rng: np.random.Generator, boots: int
) -> tuple[float, float]:
    """The basic bootstrap interval of log B_simple (see the module doc)."""
    m = len(g)
    mean = g.mean(axis=0)
    centre2 = float(mean @ mean)
    if not (math.isfinite(value) and centre2 > 0):
        return 0.0, math.inf
    truth = b * (m - 1) / m * float(((g - mean) ** 2).sum()) / m / centre2
    draws = np.array([_ratio(g[rng.integers(0, m, m)], b)[0] for _ in range(boots)])
    with np.errstate(divide="ignore"):
        spread = np.log(draws) - math.log(truth)  # +inf where a resample saw no signal
    lo, hi = _percentiles(spread)
    return float(value * math.exp(-hi)), float(value * math.exp(-lo))


def _percentiles(spread: np.ndarray) -> tuple[float, float]:
    """The 2.5% and 97.5% points of log ratios that may be +inf (a resample with no signal
    left): an infinite upper point makes the interval's lower end 0."""
    lo, hi = np.percentile(np.minimum(spread, 700.0), [2.5, 97.5])
    return float(lo), (math.inf if hi >= 700.0 else float(hi))


def updates_factor(noise_scale: float, samples_per_update: float, lr_h: float | None = None):
    """How many times the updates of noiseless gradient descent an update of
    ``samples_per_update`` samples needs, for a task of gradient noise scale ``noise_scale``.

    Each policy at its own best learning rate (``lr_h`` None): ``1 + B_noise / B``, McCandlish
    et al.'s eq. 2.11. At a given learning rate (``lr_h`` = lr x curvature h): a step of lr
    lowers the loss by ``lr |G|^2 (1 - lr h / 2 (1 + B_noise / B))`` in their second-order
    model (eq. 2.6, with G^T H G = h |G|^2), against ``lr |G|^2 (1 - lr h / 2)`` without
    noise; the factor is the ratio, and ``inf`` once noise cancels the step's progress (the
    update needs a smaller lr or more samples).

    >>> updates_factor(100.0, 100), updates_factor(100.0, 100, lr_h=0.5)
    (2.0, 1.5)
    """
    if samples_per_update <= 0:
        raise ValueError("an update applies at least one sample")
    noise = 1.0 + noise_scale / samples_per_update
    if lr_h is None:
        return noise
    clean = 1.0 - lr_h / 2.0
    noisy = 1.0 - lr_h / 2.0 * noise
    if clean <= 0:  # gradient descent itself does not converge: the delay model says so
        return 1.0
    return clean / noisy if noisy > 0 else math.inf
