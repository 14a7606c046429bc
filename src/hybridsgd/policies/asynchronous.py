"""``async``: every gradient is applied on arrival; a worker pulls the latest version and goes on.

Nobody waits, but a gradient computed on version r and arriving at version v is applied with
staleness v - r. With W workers of equal mean speed the mean staleness is about W - 1.
Staleness rules (``policy.staleness``) reweight or reject stale gradients.
"""

from __future__ import annotations

from hybridsgd.core.staleness import StalenessRule
from hybridsgd.policies.quorum import ASYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import Registered, register, stale_rule

#: its registered name (the policy a profile runs: every worker computes back to back)
NAME = "async"


def asynchronous(workers: int, staleness: StalenessRule | None = None) -> QuorumPolicy:
    """Apply each gradient at once (quorum 1), keep in-flight work, accept stale gradients."""
    return QuorumPolicy(
        workers, 1, counts="minibatches", **ASYNCHRONOUS, staleness=staleness, name=NAME
    )


register(
    Registered(
        NAME,
        "asynchronous: every gradient is applied on arrival, stale ones included",
        build=lambda c, ctx: asynchronous(c.workers, stale_rule(c)),
        family="async",
        stale=True,
        examples=("async", "async:staleness=inverse"),
        candidates=lambda W: [{}],
        colour="#d62728",
        predictor="every-arrival",
    )
)
