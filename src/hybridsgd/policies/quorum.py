"""The one primitive behind every named policy: a quorum with a barrier.

Each row of the policy table (docs/design.md section 3) is this class with different settings:

===================  ======  ===========  ==========  =========  ==========
recipe               quorum  counts       fresh only  after push in flight
===================  ======  ===========  ==========  =========  ==========
sync                 W       workers      yes         wait       cancel
backup (N of N+b)    N       workers      yes         wait       cancel/drop
k_sync               K       workers      yes         wait       cancel
k_batch_sync         K       minibatches  yes         same       cancel
k_async              K       workers      no          latest     keep
k_batch_async        K       minibatches  no          latest     keep
async                1       minibatches  no          latest     keep
===================  ======  ===========  ==========  =========  ==========

* *quorum* — gradients needed to fire an update.
* *counts* — ``"workers"``: a quorum of distinct workers; ``"minibatches"``: any gradients.
* *fresh only* — only gradients read at the current version count; older ones are dropped.
* *after push* — ``"wait"``: the worker may not start again until the version moves past
  the one it read; ``"same"``: it starts another minibatch on the current version at once;
  ``"latest"``: it pulls the current version and continues.
* *in flight* — at an update, work still computing on an older version is ``"cancel"``-led,
  left to finish and then dropped (``"drop"``, needs fresh only), or ``"keep"``-t and
  accepted stale later.
* *gate* — an optional start barrier on worker clocks (:mod:`~hybridsgd.policies.gates`):
  ``ssp`` and ``psp`` are ``async`` with a gate.
* *stop after* — an optional bound R on kept work: at an update, work in flight that has
  fallen R versions behind (it could only arrive with staleness >= R) is cancelled and its
  worker restarts on the new version (Ringmaster ASGD's calculation stops,
  :mod:`~hybridsgd.policies.optimal_time`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hybridsgd.core.staleness import NoStalenessRule, StalenessRule
from hybridsgd.errors import WorkerLost
from hybridsgd.policies.base import Decision, Fate, Policy, Update
from hybridsgd.policies.gates import ClockGate

# bound once: an enum member lookup costs 4x a module global on the hot path
_APPLIED, _BUFFERED, _DROPPED, _CANCELLED = (
    Fate.APPLIED,
    Fate.BUFFERED,
    Fate.DROPPED,
    Fate.CANCELLED,
)


@dataclass(frozen=True)
class Regime:
    """How a quorum policy treats stale work: whether only fresh gradients count, what a
    worker does after it pushes (``wait`` | ``same`` | ``latest``), and what happens to work
    in flight at an update (``cancel`` | ``drop`` | ``keep``). Unpacks into
    :class:`QuorumPolicy`'s keywords: ``QuorumPolicy(W, K, **SYNCHRONOUS)``."""

    fresh_only: bool
    after_push: str
    in_flight: str

    def keys(self) -> tuple[str, ...]:
        return ("fresh_only", "after_push", "in_flight")

    def __getitem__(self, key: str) -> object:
        return getattr(self, key)

    def replace(self, **changes: Any) -> Regime:
        return dataclasses.replace(self, **changes)


#: fresh gradients only; a pusher waits for the next version; late work is cancelled
SYNCHRONOUS = Regime(fresh_only=True, after_push="wait", in_flight="cancel")
#: stale gradients accepted; a pusher pulls the latest version; nothing is cancelled
ASYNCHRONOUS = Regime(fresh_only=False, after_push="latest", in_flight="keep")

_COUNTS = ("workers", "minibatches")
_AFTER_PUSH = ("wait", "same", "latest")
_IN_FLIGHT = ("cancel", "drop", "keep")


class QuorumPolicy(Policy):
    """Fire an update when ``quorum`` acceptable gradients are buffered (see module doc)."""

    def __init__(
        self,
        workers: int,
        quorum: int,
        *,
        counts: str = "workers",
        fresh_only: bool = True,
        after_push: str = "wait",
        in_flight: str = "cancel",
        staleness: StalenessRule | None = None,
        gate: ClockGate | None = None,
        stop_after: int | None = None,
        name: str = "quorum",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        if not 1 <= quorum <= workers and counts == "workers":
            raise ValueError(f"quorum must be in [1, workers={workers}] when counting workers")
        if quorum < 1:
            raise ValueError("quorum must be >= 1")
        if counts not in _COUNTS or after_push not in _AFTER_PUSH or in_flight not in _IN_FLIGHT:
            raise ValueError("bad QuorumPolicy setting")
        if in_flight == "drop" and not fresh_only:
            raise ValueError("in_flight='drop' needs fresh_only (otherwise late work is accepted)")
        if stop_after is not None and (stop_after < 1 or in_flight != "keep"):
            raise ValueError("stop_after needs in_flight='keep' and a bound >= 1")
        self.name = name
        self.workers = workers
        self.quorum = quorum
        self.counts = counts
        self.fresh_only = fresh_only
        self.after_push = after_push
        self.in_flight_rule = in_flight
        self.staleness_rule = staleness or NoStalenessRule()
        self.gate = gate
        self.stop_after = stop_after
        self.version = 0
        self.now = 0.0  # time of the latest push, as the backend reports it
        self._buffer: list[tuple[int, int, int]] = []  # (gid, worker, staleness)
        self._buffered_workers: set[int] = set()
        self._in_flight = [-1] * workers  # read version of each worker's current work, or -1
        self._last_read = [-1] * workers
        self._waiting: set[int] = set()
        self.lost: set[int] = set()  # workers gone for good (a real backend's fault)

    def _set_regime(self, quorum: int, regime: Regime) -> None:
        """Switch quorum and regime between updates (hybrid schedules)."""
        self.quorum = quorum
        self.fresh_only = regime.fresh_only
        self.after_push = regime.after_push
        self.in_flight_rule = regime.in_flight

    # -- the two calls a backend makes -------------------------------------------------
    def request(self, worker: int) -> int | None:
        if self.after_push == "wait" and self._last_read[worker] >= self.version:
            self._waiting.add(worker)
            return None
        if self.gate is not None and not self.gate.allows(worker):
            self.gate.block(worker)
            return None
        self._in_flight[worker] = self.version
        self._last_read[worker] = self.version
        return self.version

    def push(self, worker: int, read_version: int, gid: int, now: float = 0.0) -> Decision:
        staleness, refused = self._arrive(worker, read_version, now)
        if refused is not None:
            return refused
        decision = self._decide(worker, gid, staleness)
        if self.gate is not None:
            freed = self.gate.tick(worker)
            if freed:
                decision.release = sorted({*decision.release, *freed})
        return decision

    def _arrive(self, worker: int, read_version: int, now: float) -> tuple[int, Decision | None]:
        """What every push does first: note the time, measure the staleness, and refuse
        work that was cancelled (a real backend may deliver it anyway)."""
        self.now = now
        staleness = self.version - read_version
        if self._in_flight[worker] != read_version:
            return staleness, Decision(_CANCELLED, staleness, reason="cancelled")
        self._in_flight[worker] = -1
        return staleness, None

    def _decide(self, worker: int, gid: int, staleness: int) -> Decision:
        if self.fresh_only and staleness > 0:
            return Decision(_DROPPED, staleness, reason="stale")
        if not self.staleness_rule.accepts(staleness):
            return Decision(_DROPPED, staleness, reason="staleness rule")
        self._buffer.append((gid, worker, staleness))
        if self.counts == "workers":
            self._buffered_workers.add(worker)
            count = len(self._buffered_workers)
        else:
            count = len(self._buffer)
        if count < self._needed():
            return Decision(_BUFFERED, staleness)
        return self._fire(staleness)

    def lose(self, worker: int, now: float = 0.0, *, shrink: bool = True) -> Decision:
        """``worker`` is gone for good (its process died). Its work in flight is cancelled;
        the gradients it already delivered still count. A quorum of distinct workers larger
        than the survivors can give shrinks to them (``shrink``) or raises
        :class:`~hybridsgd.errors.WorkerLost`; the decision may fire the update the buffer
        now completes. Its ``fate`` is that of the lost worker's work in flight."""
        if worker in self.lost:
            raise ValueError(f"worker {worker} is already lost")
        self.now = now
        self.lost.add(worker)
        read = self._in_flight[worker]
        self._in_flight[worker] = -1
        self._waiting.discard(worker)
        alive = self.workers - len(self.lost)
        if alive == 0:
            raise WorkerLost("every worker is lost")
        if not shrink and self.counts == "workers" and self.quorum > self._needed():
            raise WorkerLost(
                f"worker {worker} is lost and {self.name} needs {self.quorum} workers per update"
                f" but {alive} are left (policy.on_worker_loss = fail; use shrink to go on)"
            )
        staleness = self.version - read if read >= 0 else 0
        decision = Decision(_CANCELLED, staleness, reason="worker lost")
        count = len(self._buffered_workers if self.counts == "workers" else self._buffer)
        if self._buffer and count >= self._needed():
            decision = self._fire(staleness)
            decision.fate, decision.reason = _CANCELLED, "worker lost"
        if self.gate is not None:
            freed = self.gate.retire(worker)
            if freed:
                decision.release = sorted({*decision.release, *freed})
        return decision

    def abandon(self, worker: int, now: float = 0.0) -> None:
        """``worker``'s work in flight is gone (its process died) and a new process takes
        its place. Unless it already delivered its gradient of the current version, it may
        read that version again at once and redo its share: a barrier that waits for it
        (``sync``) would otherwise wait forever for a gradient nobody computes."""
        self.now = now
        self._in_flight[worker] = -1
        self._waiting.discard(worker)
        if not (self.counts == "workers" and worker in self._buffered_workers):
            self._last_read[worker] = min(self._last_read[worker], self.version - 1)

    def _needed(self) -> int:
        """Gradients that fire an update: the quorum, or, when workers are lost and the
        quorum counts workers, at most the survivors plus the lost who already delivered."""
        if not self.lost or self.counts != "workers":
            return self.quorum
        alive = self.workers - len(self.lost)
        return min(self.quorum, alive + len(self._buffered_workers & self.lost))

    # -- internals -----------------------------------------------------------------------
    def _fire(self, staleness: int) -> Decision:
        members = self._buffer
        self._buffer = []
        self._buffered_workers = set()
        self.version += 1
        update = Update(
            self.version, [m[0] for m in members], [m[2] for m in members], self.level()
        )
        cancel: list[int] | tuple = ()
        if self.in_flight_rule == "cancel":
            v = self.version
            cancel = [w for w, r in enumerate(self._in_flight) if 0 <= r < v]
            for w in cancel:
                self._in_flight[w] = -1
        elif self.stop_after is not None:  # work that can no longer arrive in time
            oldest = self.version - self.stop_after
            cancel = [w for w, r in enumerate(self._in_flight) if 0 <= r <= oldest]
            for w in cancel:
                self._in_flight[w] = -1
        release: list[int] | tuple = ()
        if self._waiting:
            release = sorted(self._waiting)
            self._waiting.clear()
        return Decision(_APPLIED, staleness, update, cancel, release)

    def pending(self) -> list[int]:
        return [m[0] for m in self._buffer]

    def level(self) -> float:
        """(quorum - 1) / (W - 1): 0 for one gradient per update, 1 for all W."""
        return 1.0 if self.workers == 1 else min(1.0, (self.quorum - 1) / (self.workers - 1))

    def fast_path(self) -> tuple | None:
        if (
            self.fresh_only
            and self.after_push == "wait"
            and self.counts == "workers"
            and self.in_flight_rule == "cancel"
            and self.gate is None
        ):
            return ("rounds", self.quorum)
        if (
            not self.fresh_only
            and self.after_push == "latest"
            and self.in_flight_rule == "keep"
            and not self.staleness_rule.drops
            and self.gate is None
            and self.stop_after is None
        ):
            distinct = self.quorum > 1 and self.counts == "workers"
            return ("renewal-distinct" if distinct else "renewal", self.quorum)
        if (
            type(self.gate) is ClockGate  # ssp (psp's sampled gate has no fast path)
            and self.quorum == 1
            and not self.fresh_only
            and self.after_push == "latest"
            and self.in_flight_rule == "keep"
            and not self.staleness_rule.drops
            and self.stop_after is None
        ):
            return ("gated", self.gate.bound)
        return None

    def describe(self) -> str:
        return f"{self.name}(W={self.workers}, quorum={self.quorum})"
