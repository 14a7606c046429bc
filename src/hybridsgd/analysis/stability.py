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


def discrete_max_stable(staleness_pmf: np.ndarray, oversample: int = 16) -> float:
    """The largest eta h for which the discrete model is stable: the smallest a > 0 at which
    a root of z - 1 + a G(z), G(z) = sum_k p_k z^(-k), reaches the unit circle (inf if none).

    D-decomposition instead of bisection on :func:`discrete_radius`: on z = e^(i theta) the
    root condition reads a = (1 - z) / G(z), so the boundary values of a are the positive
    real values of that curve. G on a grid of ``oversample`` (n + 1) angles in (0, pi] is one
    FFT; each sign change of Im a is refined by bisection, and theta = pi (a = 2 / G(-1)) is
    checked exactly. Equal to the bisection on the roots to its tolerance, and to Levin &
    May's closed form for a constant staleness (tests/analysis/test_predict.py), in
    milliseconds where the roots of a degree-1,024 polynomial cost 0.2 s a bisection step.
    Assumes, as the bisection did, that the model is stable for small eta h > 0."""
    p = np.asarray(staleness_pmf, dtype=float)
    n = len(p) - 1
    ks = np.arange(n + 1)
    m = max(64, oversample * (n + 1))
    theta = np.pi * np.arange(1, m + 1) / m
    g = np.fft.fft(p, 2 * m)[1 : m + 1]  # G(e^(i theta_j)) = sum_k p_k e^(-i k theta_j)
    num = (1.0 - np.exp(1j * theta)) * np.conj(g)  # a = num / |G|^2: same sign of Im and Re
    at_pi = float(p @ (-1.0) ** ks)
    found = [2.0 / at_pi] if at_pi > 0 else []

    def a_of(t: float) -> complex:
        return complex((1.0 - np.exp(1j * t)) / (p @ np.exp(-1j * ks * t)))

    for i in np.nonzero(np.signbit(num.imag[:-1]) != np.signbit(num.imag[1:]))[0]:
        if num.real[i] <= 0 and num.real[i + 1] <= 0:
            continue  # a crossing at a negative a: no boundary for eta > 0
        lo, hi = float(theta[i]), float(theta[i + 1])
        below = a_of(lo).imag < 0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if (a_of(mid).imag < 0) == below:
                lo = mid
            else:
                hi = mid
        a = a_of(0.5 * (lo + hi))
        if a.real > 0:
            found.append(a.real)
    return min(found) if found else math.inf


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
