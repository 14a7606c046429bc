"""The optimal-time methods of 2023-2026, as recipes over :class:`QuorumPolicy`.

=============  =============================  ===================  ====================
recipe         an update fires when           after a push         work in flight
=============  =============================  ===================  ====================
``rennala``    B gradients of the current     another minibatch    cancelled (``late =
               version have arrived, from     on the same version  drop``: finishes,
               any workers (a fast one gives                       then dropped)
               several)
``ringmaster`` every gradient of delay < R    pulls the latest     kept; a gradient of
               arrives (one per update)                            delay >= R is dropped
                                                                   (``stops``: cancelled
                                                                   when it reaches R)
``m_sync``     the first m gradients of the   waits for the next   cancelled
               current version, from m        version
               distinct workers
=============  =============================  ===================  ====================

* **Rennala SGD** (Tyurin & Richtárik, NeurIPS 2023, "Optimal Time Complexities of Parallel
  Stochastic Optimization Methods Under a Fixed Computation Model"). Iteration k averages
  the first B stochastic gradients computed at x^k, whichever workers send them; B may
  exceed W, a fast worker contributing several. Work on an older point does not count. By
  default it is stopped when the iteration ends and every worker restarts on x^(k+1), as the
  Ringmaster authors' public simulator runs Rennala (``rennala_master`` in
  github.com/vectozavr/ringmaster-lmo); with ``late = drop`` it finishes and is ignored on
  arrival instead, its worker then taking the current point. With B <= W and ``late =
  cancel`` it is ``k_batch_sync`` with K = B. The paper's B = max(1, ceil(sigma^2 /
  epsilon)) is :func:`rennala_batch`.
* **Ringmaster ASGD** (Maranjyan, Tyurin & Richtárik, ICML 2025, arXiv 2501.16168). Algorithm
  4: asynchronous SGD that applies a gradient only if its delay (the updates made since its
  worker read the parameters: hybridsgd's staleness) is below the threshold R; otherwise the
  gradient is ignored. Either way the worker starts again on the current point. Algorithm 5
  (``stops = true``): a computation whose delay reaches R is stopped and restarted on the
  current point, since its gradient would be ignored anyway; every gradient that arrives is
  then applied. This follows the authors' simulator (``RingmasterASGD`` there keeps a delay
  counter per worker and restarts a worker when it reaches R). R = inf is ``async``. The
  paper's R = max(1, ceil(sigma^2 / epsilon)) is :func:`ringmaster_threshold`.
* **m-Synchronous SGD** (Begunov & Tyurin 2026, "Do We Need Asynchronous SGD? On the
  Near-Optimality of Synchronous Methods", arXiv 2602.03802). Every worker starts from x^k;
  the server waits for the first m gradients, from m distinct workers, averages them and
  moves on; the other W - m computations are stopped. This is Dutta et al.'s ``k_sync``
  with K = m (the equivalence is tested); m = W is ``sync``.

Where this departs from the papers, and what was checked: the papers' step sizes (gamma
from L, sigma^2 and epsilon) are not imposed; ``optimizer.lr`` is tuned like any policy's
(docs/tuning.md). The papers' own method boxes could not be read from this workplace (only
their abstracts); the semantics above come from the papers' summaries and the authors'
public simulator, and a reader with the papers at hand should check them (docs/policies.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridsgd.core.staleness import build_staleness
from hybridsgd.errors import ConfigError
from hybridsgd.policies.quorum import ASYNCHRONOUS, SYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import (
    PolicyConfig,
    Registered,
    one_of,
    param,
    register,
    whole_workers,
)


def rennala(workers: int, batch: int, late: str = "cancel") -> QuorumPolicy:
    """Any ``batch`` gradients of the current version; work on an older version is
    cancelled at the update (``late = "drop"``: finishes and is dropped)."""
    if late not in ("cancel", "drop"):
        raise ValueError("late must be 'cancel' or 'drop'")
    settings = SYNCHRONOUS.replace(after_push="same", in_flight=late)
    return QuorumPolicy(workers, batch, counts="minibatches", **settings, name="rennala")


def mindflayer(workers: int, batch: int, budgets: list[float]) -> QuorumPolicy:
    """Rennala whose workers each have a time budget per minibatch: a computation that
    runs past it is abandoned and started again on the same version."""
    if len(budgets) != workers or any(not b > 0 for b in budgets):
        raise ValueError(f"need one budget > 0 per worker ({workers})")
    policy = rennala(workers, batch)
    policy.name = "mindflayer"
    policy.budgets = [float(b) for b in budgets]
    return policy


def ringmaster(
    workers: int,
    threshold: float,
    stops: bool = False,
    staleness: str = "none",
    max_staleness: int | None = None,
) -> QuorumPolicy:
    """Asynchronous SGD that ignores (or, with ``stops``, cancels) gradients of delay >=
    ``threshold``; ``staleness`` and ``max_staleness`` are a further staleness rule
    (``policy.staleness``), its bound tightened to threshold - 1."""
    finite = math.isfinite(threshold)
    bound = int(threshold) - 1 if finite else None  # applied iff delay < R
    if max_staleness is not None:
        bound = max_staleness if bound is None else min(bound, max_staleness)
    return QuorumPolicy(
        workers,
        1,
        counts="minibatches",
        **ASYNCHRONOUS,
        staleness=build_staleness(staleness, bound),
        stop_after=int(threshold) if stops and finite else None,
        name="ringmaster",
    )


def m_sync(workers: int, m: int) -> QuorumPolicy:
    """The first ``m`` gradients of the current version from distinct workers; the other
    computations are stopped."""
    return QuorumPolicy(workers, m, counts="workers", **SYNCHRONOUS, name="m_sync")


def rennala_batch(sigma2: float, epsilon: float) -> int:
    """Rennala SGD's batch size from the noise level and the precision:
    max(1, ceil(sigma^2 / epsilon))."""
    if not (sigma2 >= 0 and epsilon > 0):
        raise ConfigError(
            "epsilon", f"needs sigma^2 >= 0 and epsilon > 0 (got {sigma2}, {epsilon})"
        )
    return max(1, math.ceil(sigma2 / epsilon))


#: Ringmaster ASGD's delay threshold R is the same max(1, ceil(sigma^2 / epsilon))
ringmaster_threshold = rennala_batch


def _check_batch(value: int | None, p: PolicyConfig) -> None:
    if value is not None and value < 1:
        raise ConfigError("policy.batch", f"must be a whole number >= 1 (got {value})")


def batch_param() -> int | None:
    """The ``batch`` key (B) of the methods that fire on B fresh gradients from anyone
    (rennala, mindflayer, ata): one declaration, as the registry wants a shared key."""
    return param(
        None,
        "B: fresh gradients per update, from any workers (>= 1; may exceed W)",
        check=_check_batch,
        example="32",
    )


def _check_threshold(value: float | None, p: PolicyConfig) -> None:
    if value is not None and not (value == math.inf or (value >= 1 and value == int(value))):
        raise ConfigError(
            "policy.delay_threshold", f"must be a whole number >= 1 or inf (got {value})"
        )


@dataclass(frozen=True)
class RennalaParams:
    batch: int | None = batch_param()
    late: str = param(
        "cancel",
        "work on an older version is cancel-led at the update, or finishes and is drop-ped",
        check=one_of("late", "cancel", "drop"),
    )


def _check_budgets(value: float | list[float] | str, p: PolicyConfig) -> None:
    if value != "":
        parse_budgets(value, p.workers)


def parse_budgets(spec: float | list[float] | str, workers: int) -> list[float]:
    """``3`` (every worker), ``[2, 2, 5]``, ``"2,2,5"`` or ``"2x6,5x2"`` (value x count);
    ``inf`` allowed: no budget."""
    field, how = "policy.budgets", "write 3, [2, 2, 5] or '2x6,5x2' (inf: no budget)"
    values: list[float] = []
    if isinstance(spec, int | float):
        values = [float(spec)] * workers
    elif isinstance(spec, list):
        values = [float(v) for v in spec]
    else:
        for part in spec.split(","):
            value, x, count = part.strip().partition("x")
            try:
                values += [float(value)] * (int(count) if x else 1)
            except ValueError:
                raise ConfigError(field, f"{how} (got {part.strip()!r})") from None
        if len(values) == 1:
            values *= workers
    if len(values) != workers:
        raise ConfigError(field, f"gives {len(values)} budgets for {workers} workers")
    if any(not v > 0 for v in values):
        raise ConfigError(field, f"budgets must be > 0 (got {spec!r})")
    return values


@dataclass(frozen=True)
class MindFlayerParams:
    batch: int | None = batch_param()
    budgets: float | list[float] | str = param(
        "",
        "each worker's time budget per minibatch, 3 (all), [2, 2, 5] or '2x6,5x2'; a "
        "computation past it is abandoned and restarted (inf: rennala)",
        check=_check_budgets,
        example="3",
    )


@dataclass(frozen=True)
class RingmasterParams:
    delay_threshold: float | None = param(
        None,
        "R: a gradient whose delay (staleness) is R or more is ignored (>= 1, or inf)",
        check=_check_threshold,
        example="16",
    )
    stops: bool = param(False, "stop work whose delay reaches R and restart it (Algorithm 5)")


@dataclass(frozen=True)
class MSyncParams:
    m: int | None = param(
        None, "m: gradients per update from distinct workers, 1 <= m <= W",
        check=whole_workers("m"), example="12",
    )  # fmt: skip


def _ringmaster(c: PolicyConfig, ctx) -> QuorumPolicy:
    return ringmaster(c.workers, c.delay_threshold, c.stops, c.staleness, c.max_staleness)


register(
    Registered(
        "rennala",
        "the first B fresh gradients from any workers; stale ones dropped (Tyurin & "
        "Richtárik 2023)",
        build=lambda c, ctx: rennala(c.workers, c.batch, c.late),
        params=RennalaParams,
        required=("batch",),
        aliases={"B": "batch"},
        min_gradients=lambda c: c.batch or 1,
        family="sync",
        examples=("rennala:batch=3", "rennala:batch=7,late=drop"),
        colour="#393b79",
        predictor="first-b-fresh",
    )
)
register(
    Registered(
        "mindflayer",
        "Rennala whose workers abandon a minibatch past their time budget and restart it "
        "(Maranjyan, Omar & Richtárik 2025)",
        build=lambda c, ctx: mindflayer(c.workers, c.batch, parse_budgets(c.budgets, c.workers)),
        params=MindFlayerParams,
        required=("batch", "budgets"),
        aliases={"B": "batch", "t": "budgets"},
        min_gradients=lambda c: c.batch or 1,
        examples=("mindflayer:batch=3,budgets=2",),
        colour="#9c9ede",
        family="sync",
        predictor="first-b-within-budget",
    )
)
register(
    Registered(
        "ringmaster",
        "async that ignores gradients of delay >= R (Maranjyan, Tyurin & Richtárik 2025)",
        build=_ringmaster,
        params=RingmasterParams,
        required=("delay_threshold",),
        aliases={"R": "delay_threshold"},
        family=None,
        stale=True,
        examples=("ringmaster:R=2", "ringmaster:R=2,stops=true"),
        colour="#bcbd22",
        predictor="delay-threshold",
    )
)
register(
    Registered(
        "m_sync",
        "the first m gradients of the current version from distinct workers; stop the rest "
        "(Begunov & Tyurin 2026)",
        build=lambda c, ctx: m_sync(c.workers, c.m),
        params=MSyncParams,
        required=("m",),
        min_gradients=lambda c: c.m or 1,
        family="sync",
        examples=("m_sync:m=2",),
        colour="#637939",
        predictor="first-k-distinct",
    )
)
