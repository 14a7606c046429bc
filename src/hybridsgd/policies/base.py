"""What a policy is: the barrier control of a parameter server, with no clock and no tensors.

A backend drives a policy with two calls and obeys the answers:

* ``request(worker)`` — the worker is idle and wants to compute. The answer is the version
  it must read, or ``None``: it must wait, and a later :class:`Decision` lists it in
  ``release`` when it may ask again.
* ``push(worker, read_version, gid, now)`` — the worker delivered gradient ``gid`` computed on
  ``read_version``. The :class:`Decision` says the gradient's fate, whether an update fires
  now (and with which gradients), which in-flight work to cancel and who may start.

Because decisions depend only on the order of these calls, the simulator can produce a
whole schedule first and replay the numerics after, and every backend gets the identical
decision for the identical sequence of events.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Fate(StrEnum):
    """What became of a gradient (the ``fate`` column of the trace); each member is its
    string (``Fate.APPLIED == "applied"``)."""

    APPLIED = "applied"  # aggregated into an update
    BUFFERED = "buffered"  # held until its update fires (a transient state, never final)
    DROPPED = "dropped"  # arrived but not used: stale, or rejected by the staleness rule
    CANCELLED = "cancelled"  # stopped before it finished (or delivered after being cancelled)
    PENDING = "pending"  # arrived, still buffered when the run ended
    REJECTED = "rejected"  # arrived, failed the server's gradient check (NaN, norm), never applied


@dataclass(slots=True)
class Update:
    """An update the policy fires: the new version and the gradients it aggregates."""

    version: int  # version after the update (number of updates applied so far)
    members: list[int]  # gradient ids, in arrival order
    staleness: list[int]  # staleness of each member, measured at its arrival
    regime: float = 1.0  # degree of synchrony the update used: 0 async ... 1 sync
    # hybrid partition reading: the first ``sync_tensors`` parameter tensors are synchronous;
    # ``sync_members`` (when the synchronous round completes here) are averaged into them and
    # ``members`` update only the other tensors
    sync_tensors: int = 0
    sync_members: list[int] | None = None
    # a policy with a gradient table (``Policy.table``): the update empties the table before
    # folding its members in (hybridsgd.core.tables)
    reset: bool = False
    # a factor on the update's gradient (Rescaled ASGD's per-worker stepsize): 1 for most
    scale: float = 1.0


@dataclass(slots=True)
class Decision:
    """The answer to a push."""

    fate: str  # Fate of the pushed gradient: APPLIED, BUFFERED, DROPPED or CANCELLED
    staleness: int  # server version at arrival minus read version
    update: Update | None = None
    cancel: Sequence[int] = ()  # workers whose in-flight work is cancelled
    release: Sequence[int] = ()  # waiting workers that may request again
    reason: str = ""  # why a gradient was dropped or cancelled


class Policy(ABC):
    """Barrier control for ``workers`` workers. ``version`` counts the updates fired."""

    name: str = "?"
    workers: int
    version: int
    #: whether an update may leave some parameter tensors without a gradient
    partial_updates: bool = False
    #: the kind of gradient table its updates fold into (``"latest"`` or ``"mean"``,
    #: :mod:`hybridsgd.core.tables`), or None: an update aggregates its members alone
    table: str | None = None
    #: (lambda, adaptive) of the delay compensation the server applies to its gradients
    #: (:mod:`hybridsgd.core.compensation`), or None
    delay_compensation: tuple[float, bool] | None = None
    #: each worker's time budget per job (MindFlayer), or None: a job that would run
    #: longer is abandoned when its budget is spent and the worker starts again at once
    #: (the simulator carries it out; the job is cancelled, "over its time budget")
    budgets: list[float] | None = None

    @abstractmethod
    def request(self, worker: int) -> int | None:
        """Version the idle ``worker`` must read now, or ``None`` if it must wait."""

    @abstractmethod
    def push(self, worker: int, read_version: int, gid: int, now: float = 0.0) -> Decision:
        """Decide the fate of gradient ``gid`` from ``worker``, computed on ``read_version``.

        ``now`` is the backend's time of the arrival, for policies whose schedule follows
        time (the core keeps no clock of its own)."""

    def lose(self, worker: int, now: float = 0.0, *, shrink: bool = True) -> Decision:
        """``worker`` is gone for good; what follows (see :meth:`QuorumPolicy.lose`)."""
        raise NotImplementedError(f"{self.name} cannot go on after losing a worker")

    def abandon(self, worker: int, now: float = 0.0) -> None:
        """``worker``'s work in flight died with its process, and the worker comes back (a
        restart): see :meth:`QuorumPolicy.abandon`."""
        raise NotImplementedError(f"{self.name} cannot restart a worker")

    def level(self) -> float:
        """The degree of synchrony in force, 0 (asynchronous) to 1 (synchronous)."""
        return 1.0

    def pending(self) -> list[int]:
        """Gradient ids buffered but not yet applied."""
        return []

    def fast_path(self) -> tuple | None:
        """A schedule shape the simulator may compute in bulk, or ``None``.

        ``("rounds", k)``: lockstep rounds, every worker reads each version once and the
        first ``k`` arrivals of a round fire its update, the rest are cancelled.
        ``("renewal", k)``: no worker ever waits, nothing is dropped, and every k-th
        arrival fires an update with the gradients that arrived since the last one.
        ``("renewal-distinct", k)``: the same, but the update fires at the arrival that
        brings the k-th distinct worker since the last one (``k_async``).
        ``("gated", s)``: every arrival fires an update, and a worker starts its k-th
        minibatch once every worker has pushed k - s times (``ssp``).
        The simulator checks in its tests that a fast path equals its event loop exactly.
        """
        return None

    def describe(self) -> str:
        return self.name
