"""Stability and speed of asynchronous SGD near a minimum (docs/design.md section 5).

Along a Hessian eigendirection with eigenvalue h, SGD with learning rate eta applies a
gradient read a delay ago.

* Continuous model (Yu, Chen & Poor, arXiv 2406.11159): x'(t) = -eta h lambda x(t - D), with
  update rate lambda and random delay D (the time from reading the parameters to applying
  the gradient). Characteristic equation: s + eta h lambda E[exp(-s D)] = 0; stable iff every
  root has Re s < 0; the rightmost root's -Re s is the convergence rate per unit of time.
  With a fixed delay D it is stable iff eta h lambda D < pi / 2. With exponential delays it
  has no unstable root for any eta, although real asynchronous SGD does diverge: use the
  discrete model there.
* Discrete model, per update: x_{n+1} = x_n - eta h x_{n - tau}, tau the staleness.
  Characteristic equation z - 1 + eta h E[z^(-tau)] = 0; stable iff every root has |z| < 1;
  -ln max|z| is the rate per update. For a constant staleness k it is stable iff
  eta h < 2 cos(k pi / (2k + 1)) (Levin & May 1976).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np


# -- discrete ------------------------------------------------------------------------------------
def discrete_radius(eta_h: float, staleness_pmf: np.ndarray) -> float:
    """max |z| over the roots of z^(n+1) - z^n + eta h sum_k p_k z^(n-k), n = len(pmf) - 1."""
    p = np.asarray(staleness_pmf, dtype=float)
    n = len(p) - 1
    coeffs = np.zeros(n + 2)
    coeffs[0], coeffs[1] = 1.0, -1.0
    coeffs[1:] += eta_h * p  # z^(n-k) sits at index k + 1
    return float(np.max(np.abs(np.roots(coeffs))))


def levin_may(k: int) -> float:
    """The exact bound on eta h for a constant staleness k."""
    return 2.0 * math.cos(k * math.pi / (2 * k + 1))


# -- continuous ----------------------------------------------------------------------------------
def rightmost_root(a: float, laplace: Callable[[complex], complex], mean_delay: float) -> complex:
    """Rightmost root of s + a L(s) = 0, L the delay's Laplace transform, by Newton's method
    from a spread of starting points (roots of delay equations come in an infinite chain
    going left; the rightmost one sits within a few multiples of 1 / mean delay)."""
    d = max(mean_delay, 1e-12)
    with np.errstate(over="ignore", invalid="ignore"):
        return _newton_rightmost(a, laplace, d)


def _newton_rightmost(a, laplace, d):
    best: complex | None = None
    for x0 in (-0.5, 0.5):
        for y0 in np.linspace(0.0, 6 * math.pi, 13):
            s = complex(x0, y0) / d
            for _ in range(60):
                f = s + a * laplace(s)
                h = 1e-6 * (1 + abs(s))
                df = 1 + a * (laplace(s + h) - laplace(s - h)) / (2 * h)
                if df == 0:
                    break
                step = f / df
                s -= step
                if abs(step) < 1e-12 * (1 + abs(s)):
                    break
            if abs(s + a * laplace(s)) < 1e-8 * (1 + abs(s)) and (
                best is None or s.real > best.real + 1e-12
            ):
                best = s
    if best is None:
        raise ArithmeticError("no root of the characteristic equation converged")
    return best


# -- the largest stable learning rate ----------------------------------------------------------
def largest_stable(stable: Callable[[float], bool], hi: float = 1.0, tol: float = 1e-6) -> float:
    """The sup of eta with stable(eta), assuming stability for small eta and a single
    crossing (bisection after doubling ``hi`` until unstable)."""
    for _ in range(60):
        if not stable(hi):
            break
        hi *= 2
    else:
        return math.inf
    lo = 0.0
    while hi - lo > tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if stable(mid) else (lo, mid)
    return lo


# -- the transient: updates to a given reduction -----------------------------------------------
def steps_to_reduce(
    eta_h: float,
    pmf_of: Callable[[int], np.ndarray],
    factor: float,
    cap: int,
) -> int | None:
    """Updates until the linearised delay model x_{t+1} = x_t - eta h sum_k p_k x_{t-k},
    started from x = 1 (all history at the initial point), has stayed below 1 / ``factor``
    for as many updates as the mean staleness (at least one: a delayed x that merely
    crosses zero on its way to overshoot does not count); ``pmf_of(t)`` is update t's
    staleness distribution. None when ``cap`` updates do not get there.

    Unlike the spectral radius, this sees only modes that carry weight: a staleness tail
    of probability 1e-6 adds roots of modulus near (eta h 1e-6)^(1/k), close to 1 for large
    k, which dominate the asymptotic rate yet move x by a millionth."""
    pad = 4096
    x = np.ones(pad + cap + 1)
    bound = 1.0 / factor
    below = 0  # consecutive updates below the bound
    for t in range(cap):
        p = np.trim_zeros(pmf_of(t)[:pad], "b")
        n = len(p)
        hist = x[pad + t - n + 1 : pad + t + 1][::-1]  # x_t, x_{t-1}, ...
        x[pad + t + 1] = x[pad + t] - eta_h * float(p @ hist)
        below = below + 1 if abs(x[pad + t + 1]) <= bound else 0
        window = max(1, math.ceil(float(np.arange(n) @ p)))
        if below >= window:
            return t + 2 - below  # the first update of the run that stayed below
    return None
