"""The K-variants of Dutta et al. 2018, "Slow and Stale Gradients Can Win the Race".

=================  ===================================  =====================  =============
recipe             update fires when                    after a worker pushes  in flight
=================  ===================================  =====================  =============
``k_sync``         first K gradients of version v,      waits for v+1          cancelled
                   from distinct workers
``k_batch_sync``   any K minibatches of version v (a    another minibatch on   cancelled
                   fast worker may give several)        the same version
``k_async``        K gradients from distinct workers,   pulls the latest,      kept, applied
                   stale ones accepted                  continues              stale later
``k_batch_async``  any K gradients                      pulls the latest,      kept
                                                        continues
=================  ===================================  =====================  =============

``k_sync`` with K = W is ``sync``; ``k_async`` with K = 1 is ``async``. In ``k_async`` a fast
worker's second gradient before the quorum is complete is applied with the update but does
not count toward the K distinct workers.

Advice: the sync variants trade waiting for wasted (cancelled) work; the async variants
trade staleness for throughput. With heavy-tailed compute times a K a little below W often
gives most of the speed-up of asynchrony with little staleness.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridsgd.core.staleness import StalenessRule
from hybridsgd.policies.quorum import ASYNCHRONOUS, SYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import Registered, param, register, stale_rule, whole_workers


def k_sync(workers: int, k: int) -> QuorumPolicy:
    """First ``k`` gradients of the current version, from distinct workers; cancel the rest."""
    return QuorumPolicy(workers, k, counts="workers", **SYNCHRONOUS, name="k_sync")


def k_batch_sync(workers: int, k: int) -> QuorumPolicy:
    """Any ``k`` minibatches of the current version; pushers start another at once."""
    settings = SYNCHRONOUS.replace(after_push="same")
    return QuorumPolicy(workers, k, counts="minibatches", **settings, name="k_batch_sync")


def k_async(workers: int, k: int, staleness: StalenessRule | None = None) -> QuorumPolicy:
    """``k`` gradients from distinct workers, stale ones accepted; nobody waits."""
    return QuorumPolicy(
        workers, k, counts="workers", **ASYNCHRONOUS, staleness=staleness, name="k_async"
    )


def k_batch_async(workers: int, k: int, staleness: StalenessRule | None = None) -> QuorumPolicy:
    """Any ``k`` gradients, stale ones accepted; nobody waits."""
    return QuorumPolicy(
        workers,
        k,
        counts="minibatches",
        **ASYNCHRONOUS,
        staleness=staleness,
        name="k_batch_async",
    )


@dataclass(frozen=True)
class KParams:
    k: int | None = param(
        None, "K: gradients per update, 1 <= K <= W", check=whole_workers("k"), example="4"
    )


def _sync_ks(W: int) -> list[dict]:
    return [
        {"k": k} for k in sorted({max(1, W // 4), max(1, W // 2), max(1, 3 * W // 4)}) if 1 < k < W
    ]


def _async_ks(W: int) -> list[dict]:
    return [{"k": k} for k in sorted({2, 4, max(2, W // 4)}) if k < W]


for _name, _summary, _build, _family, _stale, _colour, _predictor in (
    ("k_sync", "first K gradients of the current version from distinct workers; cancel the rest",
     lambda c, ctx: k_sync(c.workers, c.k), "sync", False, "#2ca02c", "first-k-distinct"),
    ("k_batch_sync", "any K minibatches of the current version; cancel the rest",
     lambda c, ctx: k_batch_sync(c.workers, c.k), "sync", False, "#98df8a", "first-k-any"),
    ("k_async", "K gradients from distinct workers, stale ones accepted; nobody waits",
     lambda c, ctx: k_async(c.workers, c.k, stale_rule(c)), "async", True, "#9467bd",
     "k-distinct-arrivals"),
    ("k_batch_async", "any K gradients, stale ones accepted; nobody waits",
     lambda c, ctx: k_batch_async(c.workers, c.k, stale_rule(c)), "async", True, "#c5b0d5",
     "any-k-arrivals"),
):  # fmt: skip
    register(
        Registered(
            _name,
            _summary + " (Dutta et al. 2018)",
            build=_build,
            params=KParams,
            required=("k",),
            aliases={"K": "k"},
            min_gradients=lambda c: c.k or 1,
            family=_family,
            stale=_stale,
            examples=(f"{_name}:k=2",),
            candidates={"k_sync": _sync_ks, "k_batch_async": _async_ks, "k_async": _async_ks}.get(
                _name
            ),
            colour=_colour,
            predictor=_predictor,
        )
    )
