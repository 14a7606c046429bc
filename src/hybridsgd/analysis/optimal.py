"""The optimal time to an epsilon-stationary point (Tyurin & Richtárik, NeurIPS 2023).

Under the fixed computation model, worker i needs tau_i seconds per stochastic gradient.
For an L-smooth function with f(x0) - inf f = Delta and gradient noise sigma^2, no
parallel method that uses the workers' stochastic gradients can reach
E||grad f(x)||^2 <= epsilon faster than, up to a constant factor,

    T_opt = (L Delta / epsilon) * min over m of  (m + sigma^2 / epsilon) / sum_{i<=m} 1/tau_(i)

with tau_(1) <= tau_(2) <= ... the sorted times: the best is always to use the m fastest
workers, and m* is where adding a slower one stops paying. Rennala SGD (``rennala``, with
B = sigma^2 / epsilon) and Ringmaster ASGD (``ringmaster``, R = sigma^2 / epsilon) attain
it up to constants. The same expression, (S + j) / sum_{i<=j} 1 / tau_(i), is how the
Ringmaster authors' simulator picks the workers to use.

A policy that applies K fresh gradients per update needs about (L Delta / epsilon)
(1 + sigma^2 / (K epsilon)) updates (minibatch SGD's iteration complexity with the step
1/L, the same constant convention), so its predicted time is that times its mean time per
update (:func:`fresh_policy_time`). Both are "up to constants": compare their ratio, not
their values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hybridsgd.errors import ConfigError


@dataclass(frozen=True)
class Problem:
    """The problem constants of the bound: smoothness L, initial gap Delta, gradient noise
    sigma^2 and the target epsilon on E||grad f||^2."""

    L: float = 1.0
    delta: float = 1.0
    sigma2: float = 1.0
    epsilon: float = 0.01

    def __post_init__(self) -> None:
        for name, value in (("L", self.L), ("delta", self.delta), ("epsilon", self.epsilon)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name.lower()}", f"must be a positive number (got {value})")
        if not (math.isfinite(self.sigma2) and self.sigma2 >= 0):
            raise ConfigError("--sigma2", f"must be a number >= 0 (got {self.sigma2})")

    @property
    def iterations(self) -> float:
        """L Delta / epsilon: gradient descent's iterations, the bound's unit."""
        return self.L * self.delta / self.epsilon

    @property
    def batch(self) -> float:
        """sigma^2 / epsilon: the batch at which noise stops dominating."""
        return self.sigma2 / self.epsilon


def optimal_time(taus, problem: Problem) -> tuple[float, int]:
    """T_opt (see the module doc) and m*, the number of fastest workers that attains it."""
    t = np.sort(np.asarray(taus, dtype=float))
    if t.ndim != 1 or len(t) == 0 or not (np.isfinite(t).all() and (t > 0).all()):
        raise ConfigError("--compute", "the bound needs a positive, finite time per gradient")
    m = np.arange(1, len(t) + 1)
    per = (m + problem.batch) / np.cumsum(1.0 / t)
    best = int(np.argmin(per))
    return float(problem.iterations * per[best]), best + 1


def fresh_policy_time(per_update: float, quorum: float, problem: Problem) -> float:
    """The predicted time of a policy that applies ``quorum`` fresh gradients per update,
    one update every ``per_update`` on average (see the module doc)."""
    return problem.iterations * (1.0 + problem.batch / quorum) * per_update
