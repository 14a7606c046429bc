"""``sync``: bulk-synchronous SGD. Every update waits for one gradient from each of W workers."""

from __future__ import annotations

from hybridsgd.policies.quorum import SYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import Registered, register

#: its registered name
NAME = "sync"


def sync(workers: int) -> QuorumPolicy:
    """All ``workers`` gradients of version v make update v+1; a worker that pushed waits.

    No gradient is ever stale. One slow worker stalls everyone: see ``backup``.
    """
    return QuorumPolicy(workers, workers, counts="workers", **SYNCHRONOUS, name=NAME)


register(
    Registered(
        NAME,
        "bulk-synchronous: every update averages one gradient from each of the W workers",
        build=lambda c, ctx: sync(c.workers),
        min_gradients=lambda c: c.workers,
        family="sync",
        examples=("sync",),
        candidates=lambda W: [{}],
        colour="#1f77b4",
        predictor="first-k-distinct",
    )
)
