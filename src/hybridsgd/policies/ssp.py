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

from hybridsgd.core.staleness import StalenessRule
from hybridsgd.policies.gates import ClockGate, SampledClockGate
from hybridsgd.policies.quorum import ASYNCHRONOUS, QuorumPolicy


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
