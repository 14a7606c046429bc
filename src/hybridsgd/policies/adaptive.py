"""``adaptive``: K-sync whose K follows the arrival times it has measured.

The rule. With W workers, a round that waits for the first K gradients lasts the K-th order
statistic T_(K) of the workers' times and applies K minibatches, so the throughput of
quorum K is K / E[T_(K)]. A round run with quorum q shows the first q arrival offsets
uncensored, so each one adds a sample of T_(1), ..., T_(q). The policy starts with one full
round (K = W), then always runs the K with the best estimated throughput, except that every
``explore_every`` rounds it probes two above it (capped at W) so that a larger K gets
measured too. Moving down needs no probe: smaller k are observed every round.

Sources. This is the order-statistics view of docs/design.md section 5 used online: Chen et al.
(2016) choose the number of backups from the arrival-time distribution; Dutta et al.
(2018, AdaSync in the extended version) adapt K over training. Throughput is our stand-in
for loss-per-time because the policy, like every policy, sees times and versions only.
When the tail is light the rule settles on K = W (``sync``); with heavy tails it drops the
slowest few, as ``backup`` with the best b would.

Limits, measured (``benchmarks/adaptive.py``): throughput within 1% of the best fixed K in
hindsight under shifted-exponential, Pareto, log-normal and uniform times. On time to a
target accuracy it is not yet within that margin: on mlp-digits a smaller K reached 95%
1.35-1.45x sooner, because early in training more updates per second beat more samples per
update. A rule that also weighs progress per update (a loss-aware or gradient-noise-scale
rule) is the next step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridsgd.errors import ConfigError
from hybridsgd.policies.base import Decision
from hybridsgd.policies.quorum import SYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import Registered, param, register


class AdaptivePolicy(QuorumPolicy):
    """k_sync whose K maximises the measured throughput K / E[T_(K)] (see the module doc)."""

    def __init__(self, workers: int, explore_every: int = 10) -> None:
        if explore_every < 2:
            raise ValueError("explore_every must be >= 2")
        super().__init__(workers, workers, counts="workers", **SYNCHRONOUS, name="adaptive")
        self.explore_every = explore_every
        self.chosen = workers  # K used outside probe rounds
        self._round_start = 0.0
        self._offsets: list[float] = []  # arrival offsets of this round's fresh gradients
        self._sum = np.zeros(workers)  # per k: sum and count of observed T_(k)
        self._count = np.zeros(workers)

    def push(self, worker: int, read_version: int, gid: int, now: float = 0.0) -> Decision:
        if read_version == self.version and self._in_flight[worker] == read_version:
            self._offsets.append(now - self._round_start)
        return super().push(worker, read_version, gid, now)

    def _fire(self, staleness: int) -> Decision:
        q = len(self._offsets)
        self._sum[:q] += np.sort(self._offsets)
        self._count[:q] += 1
        self.chosen = self.best_k()
        decision = super()._fire(staleness)
        self._round_start = self.now
        self._offsets = []
        probe = self.version % self.explore_every == 0
        self.quorum = min(self.workers, self.chosen + 2) if probe else self.chosen
        return decision

    def expected_arrivals(self) -> np.ndarray:
        """E[T_(k)], k = 1..W, from the rounds that observed it (NaN where none did)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self._count > 0, self._sum / self._count, np.nan)

    def best_k(self) -> int:
        """The observed K with the highest estimated throughput K / E[T_(K)] (ties: larger)."""
        t = self.expected_arrivals()
        k = np.arange(1, self.workers + 1)
        seen = np.isfinite(t)
        rate = np.full(self.workers, -np.inf)
        rate[seen] = np.where(t[seen] > 0, k[seen] / np.maximum(t[seen], 1e-300), np.inf)
        return int(k[np.flatnonzero(rate >= rate.max() * (1 - 1e-12))[-1]])

    def fast_path(self) -> tuple | None:
        return None

    def describe(self) -> str:
        return (
            f"adaptive(W={self.workers}, K={self.chosen}, probes K + 2 every {self.explore_every})"
        )


def adaptive(workers: int, explore_every: int = 10) -> AdaptivePolicy:
    """K-sync with K chosen online from measured arrival times."""
    return AdaptivePolicy(workers, explore_every)


def _check_explore(value: int, p) -> None:
    if value < 2:
        raise ConfigError("policy.explore_every", f"must be >= 2 (got {value})")


@dataclass(frozen=True)
class AdaptiveParams:
    explore_every: int = param(10, "rounds between probes of a larger K", check=_check_explore)


register(
    Registered(
        "adaptive",
        "k_sync whose K is chosen online from measured arrival times",
        build=lambda c, ctx: adaptive(c.workers, c.explore_every),
        params=AdaptiveParams,
        examples=("adaptive",),
        colour="#7f7f7f",
    )
)
