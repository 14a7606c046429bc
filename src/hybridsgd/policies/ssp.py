"""``ssp`` and ``psp``: asynchronous SGD behind a barrier on worker clocks.

Every gradient is applied on arrival, as in ``async``; what changes is when a worker may
start. ``ssp`` (Ho et al. 2013) bounds how far the fastest worker can run ahead of the
slowest: s = 0 is bulk-synchronous iterations, s = inf is ``async``. ``psp`` (Wang et al.
2017) checks only a random sample of beta workers at each barrier, so one straggler stalls
only the workers that happen to sample it; beta = W is ``ssp``.

Advice: a small bound (s = 2 to 4) keeps staleness bounded by about (s + 1) W while
absorbing transient stragglers; if one permanently slow worker dominates, prefer ``psp``
with a small sample or ``backup``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridsgd.core.staleness import StalenessRule
from hybridsgd.errors import ConfigError
from hybridsgd.policies.gates import ClockGate, SampledClockGate
from hybridsgd.policies.quorum import ASYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import Registered, param, register, stale_rule, whole_workers


def ssp(workers: int, bound: float, staleness: StalenessRule | None = None) -> QuorumPolicy:
    """Apply every gradient; a worker may start only while <= ``bound`` ticks ahead."""
    return _gated(workers, ClockGate(workers, bound), staleness, "ssp")


def psp(
    workers: int, sample: int, bound: float, seed: int = 0, staleness: StalenessRule | None = None
) -> QuorumPolicy:
    """Apply every gradient; at its barrier a worker waits on ``sample`` random peers."""
    return _gated(workers, SampledClockGate(workers, bound, sample, seed), staleness, "psp")


def _gated(workers, gate, staleness, name) -> QuorumPolicy:
    """``async`` behind a start gate."""
    return QuorumPolicy(
        workers, 1, counts="minibatches", **ASYNCHRONOUS, staleness=staleness, gate=gate, name=name
    )


def _check_bound(value: float | None, p) -> None:
    if value is not None and not (value == math.inf or (value >= 0 and value == int(value))):
        raise ConfigError(
            "policy.staleness_bound", f"must be a whole number >= 0 or inf (got {value})"
        )


def _bound() -> float | None:
    return param(
        None,
        "s: clock ticks a worker may run ahead (>= 0, or inf)",
        check=_check_bound,
        example="3",
    )


@dataclass(frozen=True)
class SspParams:
    staleness_bound: float | None = _bound()


@dataclass(frozen=True)
class PspParams:
    sample: int | None = param(
        None, "beta: peers sampled at each barrier, 1 <= beta <= W", check=whole_workers("sample"),
        example="4",
    )  # fmt: skip
    staleness_bound: float | None = _bound()


register(
    Registered(
        "ssp",
        "asynchronous behind a bounded-staleness barrier on worker clocks (Ho et al. 2013)",
        build=lambda c, ctx: ssp(c.workers, c.staleness_bound, stale_rule(c)),
        params=SspParams,
        required=("staleness_bound",),
        aliases={"s": "staleness_bound"},
        family="async",
        stale=True,
        examples=("ssp:staleness_bound=1",),
        candidates=lambda W: [{"staleness_bound": s} for s in (0, 1, 2, 4)],
        colour="#8c564b",
        bound_in_ticks=True,
        predictor="clock-barrier",
    )
)
register(
    Registered(
        "psp",
        "ssp whose barrier checks beta sampled peers (Wang et al. 2017)",
        build=lambda c, ctx: psp(c.workers, c.sample, c.staleness_bound, ctx.seed, stale_rule(c)),
        params=PspParams,
        required=("sample", "staleness_bound"),
        aliases={"s": "staleness_bound", "beta": "sample"},
        family="async",
        stale=True,
        examples=("psp:staleness_bound=1,sample=2",),
        candidates=lambda W: (
            [{"sample": max(2, W // 4), "staleness_bound": 1}] if max(2, W // 4) < W else []
        ),
        colour="#e377c2",
        bound_in_ticks=True,
        predictor="sampled-clock-barrier",
    )
)
