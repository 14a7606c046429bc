"""Aggregators: many gradients in, one out (``policy.aggregator``).

An aggregator receives a stack of rows ``[m, d]``, the number of gradients each row stands
for (``counts``) and each row's staleness scale. A *linear* aggregator (``mean``, ``sum``)
may be given group means (one row standing for several gradients that read the same
version), which is what lets the simulator compute same-version gradients in one batched
call. A robust aggregator sets ``linear = False`` and always receives one row per gradient;
it scales each row by its staleness factor first, then applies its rule.

Each rule declares how many arbitrary (Byzantine) inputs among n it tolerates
(:meth:`Aggregator.tolerates`) and the fewest inputs it accepts (:meth:`Aggregator.check`).

>>> rows = torch.tensor([[1.0], [2.0], [100.0]])
>>> ones = torch.ones(3)
>>> [build_aggregator(a)(rows, ones, ones).item() for a in ("mean", "median")]
[34.333335876464844, 2.0]
"""

from __future__ import annotations

import math

import torch

from hybridsgd.errors import ConfigError
from hybridsgd.specs import parse_named


class Aggregator:
    """Interface: ``__call__(rows, counts, scales) -> Tensor[d]``.

    A *linear* aggregator is fully described by :meth:`weights`: its result is
    ``sum_i weights[i] * rows[i]``. That lets a backend hand a single gradient to the server
    without stacking it, and lets group means stand in for their members.
    """

    name: str = "?"
    linear: bool = False

    def tolerates(self, n: int) -> int:
        """How many arbitrary (faulty) inputs among ``n`` the rule tolerates."""
        return 0

    def min_inputs(self) -> int:
        """The fewest gradients per update the rule accepts."""
        return 1

    def check(self, n: int, why: str = "") -> None:
        """Refuse, with one clear line, updates of ``n`` gradients the rule cannot take."""
        need = self.min_inputs()
        if n < need:
            raise ConfigError(
                "policy.aggregator",
                f"{self.describe()} needs at least {need} gradients per update, but {why or n}",
            )

    def describe(self) -> str:
        return self.name

    def weights(self, counts: list[float], scales: list[float]) -> list[float]:
        """Per-row weights of a linear aggregator."""
        raise NotImplementedError(f"{self.name} is not linear")

    def __call__(
        self, rows: torch.Tensor, counts: torch.Tensor, scales: torch.Tensor
    ) -> torch.Tensor:
        if not self.linear:
            if len(rows) < self.min_inputs():
                raise ValueError(f"{self.describe()} got {len(rows)} gradients")
            if bool((scales != 1).any()):
                rows = rows * scales.to(rows.device, rows.dtype)[:, None]
            return self.robust(rows)
        w = self.weights(counts.tolist(), scales.tolist())
        if len(w) == 1:
            return rows[0] * w[0] if w[0] != 1.0 else rows[0]
        return torch.tensor(w, dtype=rows.dtype, device=rows.device) @ rows

    def robust(self, rows: torch.Tensor) -> torch.Tensor:
        """The rule on one row per gradient (staleness already applied)."""
        raise NotImplementedError


class Mean(Aggregator):
    """Weighted mean: ``sum_i count_i * scale_i * row_i / sum_i count_i``.

    Normalising by the number of gradients, not by the scales, makes a staleness scale act
    exactly as a per-gradient learning-rate factor. Tolerates no faulty input.
    """

    name = "mean"
    linear = True

    def weights(self, counts: list[float], scales: list[float]) -> list[float]:
        total = float(sum(counts))
        return [c * s / total for c, s in zip(counts, scales, strict=True)]


class Sum(Aggregator):
    """``sum_i count_i * scale_i * row_i``: the update grows with the number of gradients
    (K-batch papers' convention with a learning rate per minibatch)."""

    name = "sum"
    linear = True

    def weights(self, counts: list[float], scales: list[float]) -> list[float]:
        return [c * s for c, s in zip(counts, scales, strict=True)]


def _sorted(rows: torch.Tensor) -> torch.Tensor:
    return torch.sort(rows, dim=0).values


def _median(rows: torch.Tensor) -> torch.Tensor:
    n = len(rows)
    s = _sorted(rows)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


class Median(Aggregator):
    """Coordinate-wise (marginal) median; the mean of the two middle values for even n.
    Tolerates f < n/2 per coordinate."""

    name = "median"

    def tolerates(self, n: int) -> int:
        return (n - 1) // 2

    def robust(self, rows: torch.Tensor) -> torch.Tensor:
        return _median(rows)


class TrimmedMean(Aggregator):
    """Per coordinate, drop the ``floor(beta * n)`` largest and smallest values and average
    the rest (Yin et al. 2018). Tolerates ``floor(beta * n)``."""

    name = "trimmed-mean"

    def __init__(self, beta: float = 0.1) -> None:
        if not 0 <= beta < 0.5:
            raise ConfigError(
                "policy.aggregator", f"trimmed-mean: beta must be in [0, 0.5) (got {beta})"
            )
        self.beta = beta

    def tolerates(self, n: int) -> int:
        return math.floor(self.beta * n)

    def robust(self, rows: torch.Tensor) -> torch.Tensor:
        n = len(rows)
        b = self.tolerates(n)
        if n - 2 * b < 1:
            raise ValueError(f"trimmed-mean with beta={self.beta:g} keeps nothing of {n}")
        return _sorted(rows)[b : n - b].mean(dim=0)

    def describe(self) -> str:
        return f"trimmed-mean(beta={self.beta:g})"


class MeanAroundMedian(Aggregator):
    """Per coordinate, the mean of the ``n - f`` values nearest the median (Xie, Koyejo &
    Gupta 2018, "mean around median"). Tolerates f when n > 2f."""

    name = "mean-around-median"

    def __init__(self, f: float = 1) -> None:
        self.f = _count(f, "mean-around-median: f")

    def tolerates(self, n: int) -> int:
        return self.f if n > 2 * self.f else 0

    def min_inputs(self) -> int:
        return 2 * self.f + 1

    def robust(self, rows: torch.Tensor) -> torch.Tensor:
        # in float64: a float32 median of an even n rounds, and that rounding decides which
        # of two values equally near it is kept
        x = rows.double()
        med = _median(x)
        nearest = torch.topk((x - med).abs(), len(x) - self.f, dim=0, largest=False).indices
        return torch.gather(x, 0, nearest).mean(dim=0).to(rows.dtype)

    def describe(self) -> str:
        return f"mean-around-median(f={self.f})"


class GeometricMedian(Aggregator):
    """The point minimising the sum of Euclidean distances to the rows (breakdown point 1/2:
    tolerates f < n/2).

    Computed in float64 on rows centred at their mean, so a large common offset costs no
    precision and the answer moves exactly with the inputs, by the modified Weiszfeld
    iteration of Vardi & Zhang (2000): plain Weiszfeld stalls when the answer is one of the
    rows, the modification steps off a row or stops on it when the row is optimal. Stops when
    a step moves less than ``tol`` times the mean distance of the rows to the point (their
    spread, not the point's size), or after ``iters`` steps.
    """

    name = "geometric-median"

    def __init__(self, tol: float = 1e-7, iters: float = 1000) -> None:
        if tol <= 0:
            raise ConfigError("policy.aggregator", f"geometric-median: tol must be > 0 (got {tol})")
        self.tol, self.iters = tol, _count(iters, "geometric-median: iters", 1)

    def tolerates(self, n: int) -> int:
        return (n - 1) // 2

    def robust(self, rows: torch.Tensor) -> torch.Tensor:
        x = rows.double()
        center = x.mean(dim=0)
        x = x - center
        z = torch.zeros_like(center)
        for _ in range(self.iters):
            dist = torch.linalg.vector_norm(x - z, dim=1)
            spread = float(dist.mean())
            if spread == 0.0:
                break  # every row is the same point
            on = dist <= 1e-15 * spread  # rows the point sits on (their weight eta)
            w = torch.where(on, 0.0, 1.0 / torch.where(on, 1.0, dist))
            t = (w[:, None] * x).sum(dim=0) / w.sum()
            eta = float(on.sum())
            if eta:  # Vardi & Zhang: R is the pull of the other rows, r its length
                r = float(torch.linalg.vector_norm((w[:, None] * (x - z)).sum(dim=0)))
                if r <= eta:
                    break  # the row under z is the geometric median
                nxt = (1 - eta / r) * t + (eta / r) * z
            else:
                nxt = t
            moved = float(torch.linalg.vector_norm(nxt - z))
            z = nxt
            if moved <= self.tol * spread:
                break
        return (z + center).to(rows.dtype)

    def describe(self) -> str:
        return f"geometric-median(tol={self.tol:g}, iters={self.iters})"


class Krum(Aggregator):
    """Krum (Blanchard et al. 2017): the row whose ``n - f - 2`` nearest rows are closest in
    summed squared distance. Multi-Krum averages the ``m`` best-scored rows. Needs
    n >= 2f + 3; tolerates f."""

    name = "krum"

    def __init__(self, f: float = 1, m: float = 1) -> None:
        self.f = _count(f, f"{self.name}: f")
        self.m = _count(m, f"{self.name}: m", 1)

    def tolerates(self, n: int) -> int:
        return self.f if n >= 2 * self.f + 3 else 0

    def min_inputs(self) -> int:
        return max(2 * self.f + 3, self.m)

    def scores(self, rows: torch.Tensor) -> torch.Tensor:
        n = len(rows)
        # exact differences in float64: cdist's default for more than 25 rows expands
        # |x|^2 + |y|^2 - 2 x.y, which cancels when rows are close together and far from 0
        x = rows.double()
        d2 = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").square()
        nearest = torch.sort(d2, dim=1).values[:, 1 : n - self.f - 1]  # skip itself
        return nearest.sum(dim=1)

    def robust(self, rows: torch.Tensor) -> torch.Tensor:
        best = torch.argsort(self.scores(rows), stable=True)[: self.m]
        return rows[best].mean(dim=0)

    def describe(self) -> str:
        return f"{self.name}(f={self.f}" + (f", m={self.m})" if self.m > 1 else ")")


class MultiKrum(Krum):
    """Multi-Krum: the mean of the ``m`` rows Krum scores best (default ``m = n - f``)."""

    name = "multi-krum"

    def __init__(self, f: float = 1, m: float = 0) -> None:
        super().__init__(f, max(m, 1))
        self._m_given = m > 0

    def robust(self, rows: torch.Tensor) -> torch.Tensor:
        m = self.m if self._m_given else len(rows) - self.f
        best = torch.argsort(self.scores(rows), stable=True)[:m]
        return rows[best].mean(dim=0)


class CenteredClip(Aggregator):
    """Centered clipping (Karimireddy, He & Jaggi 2021): from the coordinate-wise median,
    ``iters`` times move by the mean of the rows' offsets clipped to norm ``tau``. Their
    analysis covers a Byzantine fraction up to about 0.1: it declares ``floor(n / 10)``."""

    name = "centered-clip"

    def __init__(self, tau: float = 1.0, iters: float = 3) -> None:
        if tau <= 0:
            raise ConfigError("policy.aggregator", f"centered-clip: tau must be > 0 (got {tau})")
        self.tau, self.iters = tau, _count(iters, "centered-clip: iters", 1)

    def tolerates(self, n: int) -> int:
        return n // 10

    def robust(self, rows: torch.Tensor) -> torch.Tensor:
        v = _median(rows)
        for _ in range(self.iters):
            diff = rows - v
            norm = torch.linalg.vector_norm(diff, dim=1, keepdim=True).clamp_min(1e-12)
            v = v + (diff * torch.clamp(self.tau / norm, max=1.0)).mean(dim=0)
        return v

    def describe(self) -> str:
        return f"centered-clip(tau={self.tau:g}, iters={self.iters})"


def _count(value: float, what: str, least: int = 0) -> int:
    if value != int(value) or value < least:
        raise ConfigError(
            "policy.aggregator", f"{what} must be a whole number >= {least} (got {value:g})"
        )
    return int(value)


#: name -> (class, its spec keys with defaults)
AGGREGATORS: dict[str, tuple[type[Aggregator], dict[str, float]]] = {
    "mean": (Mean, {}),
    "sum": (Sum, {}),
    "median": (Median, {}),
    "trimmed-mean": (TrimmedMean, {"beta": 0.1}),
    "mean-around-median": (MeanAroundMedian, {"f": 1}),
    "geometric-median": (GeometricMedian, {"tol": 1e-7, "iters": 1000}),
    "krum": (Krum, {"f": 1}),
    "multi-krum": (MultiKrum, {"f": 1, "m": 0}),
    "centered-clip": (CenteredClip, {"tau": 1.0, "iters": 3}),
}


PARAMETERS = {name: defaults for name, (_, defaults) in AGGREGATORS.items()}


def build_aggregator(spec: str) -> Aggregator:
    """An aggregator from ``policy.aggregator``: a name, optionally ``name:key=value,...``.

    >>> build_aggregator("krum:f=2").describe()
    'krum(f=2)'
    """
    name, params = parse_named(spec, PARAMETERS, "policy.aggregator", "aggregator")
    return AGGREGATORS[name][0](**params)
