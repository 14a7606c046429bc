"""Two asynchronous methods whose update rule is their own: Rescaled ASGD and DC-ASGD.

Rescaled ASGD (Mahran, Maranjyan & Richtárik 2026, arXiv 2605.13434): asynchronous SGD
whose step for a gradient from worker i is scaled in proportion to that worker's
computation time tau_i, so that every worker contributes the same learning rate per unit
of time and the method optimises the mean of the workers' objectives rather than one
weighted toward the fast workers.

Every arrival fires an update, as in ``async``; the update's gradient is multiplied by
``tau_i / mean_j tau_j`` (:attr:`hybridsgd.policies.Update.scale`). The times are

* given (``taus = "1,1,4"`` or ``"1x6,4x2"``, one per worker, e.g. the cluster's
  ``timing.speed``: the paper's fixed-computation model), or
* measured (``taus`` unset): each worker's mean time between its arrivals so far. A
  worker never waits under ``async``, so that is its time per minibatch, communication
  included. Until a worker has arrived once it has no time and the mean is over those that
  have.

The mean normalises the factors so that the step of a worker of average speed is the
configured lr; the paper's own normalisation could not be read from this workplace (only
its abstract), and a constant factor is absorbed by tuning the lr. With equal times every
factor is exactly 1 and the run is ``async`` bit for bit (tested).

DC-ASGD (Zheng et al., "Asynchronous Stochastic Gradient Descent with Delay Compensation",
ICML 2017): ``async`` whose stale gradient is corrected by a diagonal curvature term,
``g + lambda * g * g * (w_now - w_read)``, with a constant lambda (``lam``) or an adaptive
one (``adaptive = true``: ``lam / sqrt(MeanSquare)``); the rule and its state are
:mod:`hybridsgd.core.compensation`, applied by the server in the simulator and in the real
backends alike. With ``lam = 0`` it is ``async`` bit for bit (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridsgd.errors import ConfigError
from hybridsgd.policies.base import Decision
from hybridsgd.policies.quorum import ASYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import PolicyConfig, Registered, param, register, stale_rule
from hybridsgd.timing.cluster import parse_speeds


class Rescaled(QuorumPolicy):
    """``async`` whose each update is scaled by its worker's relative time (module doc)."""

    def __init__(self, workers: int, taus: list[float] | None = None, staleness=None) -> None:
        super().__init__(
            workers, 1, counts="minibatches", **ASYNCHRONOUS, staleness=staleness,
            name="rescaled",
        )  # fmt: skip
        if taus is not None and len(taus) != workers:
            raise ValueError(f"need one time per worker ({workers})")
        self.given = taus
        self._total = [0.0] * workers  # measured: time between arrivals, summed
        self._count = [0] * workers
        self._last = [0.0] * workers  # each worker's previous arrival (or the start)

    def push(self, worker: int, read_version: int, gid: int, now: float = 0.0) -> Decision:
        if self.given is None and self._in_flight[worker] == read_version:  # a real arrival
            self._total[worker] += now - self._last[worker]
            self._count[worker] += 1
            self._last[worker] = now
        decision = super().push(worker, read_version, gid, now)
        if decision.update is not None:
            decision.update.scale = self.factor(worker)
        return decision

    def fast_path(self) -> tuple | None:
        return None  # each update's factor is decided at its push

    def factor(self, worker: int) -> float:
        """``tau_worker / mean tau`` (exactly 1 when every time is the same)."""
        if self.given is not None:
            taus = self.given
        else:
            taus = [t / c for t, c in zip(self._total, self._count, strict=True) if c]
        mean = sum(taus) / len(taus)
        if min(taus) == max(taus):
            return 1.0
        if self.given is not None:
            return self.given[worker] / mean
        return self._total[worker] / self._count[worker] / mean


class DCASGD(QuorumPolicy):
    """``async`` whose gradients the server corrects for their delay (module doc)."""

    def __init__(self, workers: int, lam: float, adaptive: bool = False, staleness=None) -> None:
        super().__init__(
            workers, 1, counts="minibatches", **ASYNCHRONOUS, staleness=staleness, name="dc_asgd"
        )
        #: what the server's :class:`~hybridsgd.core.compensation.DelayCompensation` is built from
        self.delay_compensation = (lam, adaptive)


def _check_lam(value: float | None, p: PolicyConfig) -> None:
    if value is not None and not (value >= 0 and value < float("inf")):
        raise ConfigError("policy.lam", f"must be a number >= 0 (got {value})")


@dataclass(frozen=True)
class DCParams:
    lam: float | None = param(
        None,
        "lambda: the weight of the delay compensation g * g * (w_now - w_read) (>= 0; 0 is "
        "async); with adaptive, lambda0",
        check=_check_lam,
        example="0.04",
    )
    adaptive: bool = param(
        False, "lambda0 / sqrt(mean square of the gradients), elementwise (DC-ASGD-a)"
    )


def _check_taus(value: str, p: PolicyConfig) -> None:
    if value:
        parse_speeds(value, p.workers, "policy.taus")


@dataclass(frozen=True)
class RescaledParams:
    taus: str = param(
        "",
        "each worker's time per minibatch, '1,1,4' or '1x6,4x2' (unset: measured as the run goes)",
        check=_check_taus,
        example="1x6,4x2",
    )


def _build(c: PolicyConfig, ctx) -> Rescaled:
    taus = parse_speeds(c.taus, c.workers, "policy.taus") if c.taus else None
    return Rescaled(c.workers, taus, stale_rule(c))


register(
    Registered(
        "rescaled",
        "async whose step for each worker grows with its time per minibatch (Mahran, "
        "Maranjyan & Richtárik 2026)",
        build=_build,
        params=RescaledParams,
        family="async",
        stale=True,
        examples=("rescaled",),
        colour="#8ca252",
        update_rule="rescaled",
    )
)
register(
    Registered(
        "dc_asgd",
        "async whose stale gradients are corrected for their delay by g * g * (w_now - "
        "w_read) (Zheng et al. 2017)",
        build=lambda c, ctx: DCASGD(c.workers, c.lam, c.adaptive, stale_rule(c)),
        params=DCParams,
        required=("lam",),
        aliases={"lambda": "lam"},
        family="async",
        stale=True,
        examples=("dc_asgd:lam=0.04", "dc_asgd:lam=0.5,adaptive=true"),
        colour="#e6550d",
        update_rule="delay-compensation",
    )
)
