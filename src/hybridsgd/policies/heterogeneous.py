"""Methods for data that differs from worker to worker: each keeps a gradient table at the
server (:mod:`hybridsgd.core.tables`), so that every worker's data weighs the same in an
update however often its gradients arrive.

=============  ======================  ==================  ===========  =================
recipe         an update fires         its gradient        after push   work in flight
=============  ======================  ==================  ===========  =================
``malenia``    every worker has sent   mean over workers   another      cancelled at the
               >= 1 gradient of the    of each worker's    minibatch    update
               current version         mean (table reset)  on the same
                                                           version
``ia2sgd``     at every arrival, once  mean of the table   pulls the    kept (stale
               the table holds every   of each worker's    latest       gradients enter
               worker's gradient       latest gradient                  the table)
``ringleader`` W per cycle: when       mean over workers   pulls the    kept
               every worker has sent   of each worker's    latest
               one (table reset),      mean since the
               then at the first       cycle began
               arrival of each other
               worker
=============  ======================  ==================  ===========  =================

* **Malenia SGD** (Tyurin & Richtárik, NeurIPS 2023, the paper of Rennala SGD): Rennala for
  heterogeneous data. Every worker computes minibatches at x^k, as many as it can; the
  server waits until every worker has delivered at least one and steps with
  ``(1/W) sum_i (1/B_i) sum_j g_ij``. Work still computing on x^k is stopped and every worker
  starts on x^(k+1). This follows the authors' simulator (``MaleniaSGD`` in
  github.com/vectozavr/ringmaster-lmo); the paper's further threshold on the batch sizes
  (a minimum S) is not offered.
* **IA²SGD** (Wang et al., "Incremental Aggregated Asynchronous SGD", ICLR 2025 submission):
  the server keeps each worker's latest gradient; every arrival replaces its worker's row
  and the server steps with the mean of the W rows. Before the table holds every worker's
  gradient, no update fires. ``first_update = "filled"`` (the default) steps at the arrival
  that fills the table, so that with W = 1 it is SGD; ``first_update = "after"`` steps from
  the next arrival on, as the authors' simulator (``IAASGD``) does: there the table is
  initialised with gradients at x^0 and the iterations begin after.
* **Ringleader ASGD** (Maranjyan & Richtárik 2025, arXiv 2509.22860), as the authors'
  simulator runs it (``RingleaderASGD``): cycles of two phases. Phase 1 gathers gradients
  (each worker's running mean) until every worker has sent one, then steps with the mean
  over workers. Phase 2 steps once more at the first arrival of each of the other W - 1
  workers (folding it into its row first); arrivals of workers that already stepped this
  cycle wait for the next cycle's table. Every arrival's worker pulls the latest
  parameters.

Equivalences (tested): ``ia2sgd`` and ``ringleader`` with W = 1 are SGD, and so is
``malenia`` with W = 1 and a single gradient per round; ``malenia`` with equal data is not
``rennala``: Rennala weighs each gradient alike, Malenia each worker alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridsgd.errors import WorkerLost
from hybridsgd.policies.base import Decision, Fate, Policy, Update
from hybridsgd.policies.quorum import SYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import Registered, one_of, param, register


class Malenia(QuorumPolicy):
    """A round ends when every (live) worker has sent a gradient of its version; the update
    is the mean over workers of each worker's mean (see the module doc)."""

    table = "mean"

    def __init__(self, workers: int) -> None:
        settings = SYNCHRONOUS.replace(after_push="same")
        super().__init__(workers, workers, counts="workers", **settings, name="malenia")

    def _fire(self, staleness: int) -> Decision:
        decision = super()._fire(staleness)
        assert decision.update is not None
        decision.update.reset = True  # each round's table starts afresh
        return decision


class _TablePolicy(Policy):
    """What ``ia2sgd`` and ``ringleader`` share: nobody waits, nothing is cancelled, and
    stale gradients are accepted into the table."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        self.version = 0
        self.now = 0.0
        self._in_flight = [-1] * workers  # read version of each worker's work, or -1
        self._buffer: list[tuple[int, int]] = []  # (gid, staleness) held for a later update

    def request(self, worker: int) -> int | None:
        self._in_flight[worker] = self.version
        return self.version

    def _arrive(self, worker: int, read_version: int, now: float) -> tuple[int, bool]:
        self.now = now
        staleness = self.version - read_version
        if self._in_flight[worker] != read_version:  # work this policy no longer expects
            return staleness, False
        self._in_flight[worker] = -1
        return staleness, True

    def _fire(self, staleness: int, members: list[tuple[int, int]], reset: bool) -> Decision:
        self.version += 1
        update = Update(
            self.version, [g for g, _ in members], [s for _, s in members], 0.0, reset=reset
        )
        return Decision(Fate.APPLIED, staleness, update)

    def lose(self, worker: int, now: float = 0.0, *, shrink: bool = True) -> Decision:
        raise WorkerLost(
            f"worker {worker} is lost and {self.name} cannot go on without it: its row of the "
            "gradient table would never change again (use malenia, which shrinks its rounds)"
        )

    def abandon(self, worker: int, now: float = 0.0) -> None:
        self.now = now
        self._in_flight[worker] = -1

    def level(self) -> float:
        return 0.0

    def pending(self) -> list[int]:
        return [g for g, _ in self._buffer]

    def describe(self) -> str:
        return f"{self.name}(W={self.workers})"


class IA2SGD(_TablePolicy):
    """Each worker's latest gradient in the table; every arrival steps with its mean once
    the table is full (see the module doc)."""

    name = "ia2sgd"
    table = "latest"

    def __init__(self, workers: int, first_update: str = "filled") -> None:
        super().__init__(workers)
        if first_update not in ("filled", "after"):
            raise ValueError("first_update must be 'filled' or 'after'")
        self.first_update = first_update
        self._seen: set[int] = set()  # workers with a row, until the table is full
        self._full = False

    def push(self, worker: int, read_version: int, gid: int, now: float = 0.0) -> Decision:
        staleness, expected = self._arrive(worker, read_version, now)
        if not expected:
            return Decision(Fate.CANCELLED, staleness, reason="cancelled")
        self._buffer.append((gid, staleness))
        if not self._full:
            self._seen.add(worker)
            if len(self._seen) < self.workers:
                return Decision(Fate.BUFFERED, staleness)
            self._full = True
            if self.first_update == "after":
                return Decision(Fate.BUFFERED, staleness)
        members, self._buffer = self._buffer, []
        return self._fire(staleness, members, reset=False)


class Ringleader(_TablePolicy):
    """Cycles of a gathering phase and W steps (see the module doc)."""

    name = "ringleader"
    table = "mean"

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self._gathering = True
        self._arrived: set[int] = set()  # phase 1: workers with a gradient this cycle
        self._stashed: set[int] = set()  # phase 2: workers whose gradients await the next
        self._to_step: set[int] = set()  # phase 2: workers that have not stepped yet

    def push(self, worker: int, read_version: int, gid: int, now: float = 0.0) -> Decision:
        staleness, expected = self._arrive(worker, read_version, now)
        if not expected:
            return Decision(Fate.CANCELLED, staleness, reason="cancelled")
        if self._gathering:
            self._buffer.append((gid, staleness))
            self._arrived.add(worker)
            if len(self._arrived) < self.workers:
                return Decision(Fate.BUFFERED, staleness)
            members, self._buffer = self._buffer, []
            self._gathering = False
            self._to_step = set(range(self.workers)) - {worker}
            decision = self._fire(staleness, members, reset=True)
        elif worker in self._to_step:
            self._to_step.discard(worker)
            decision = self._fire(staleness, [(gid, staleness)], reset=False)
        else:  # stepped already this cycle: its gradient joins the next cycle's table
            self._buffer.append((gid, staleness))
            self._stashed.add(worker)
            return Decision(Fate.BUFFERED, staleness)
        if not self._to_step:  # the cycle's W steps are done: the next one gathers
            self._gathering = True
            self._arrived, self._stashed = self._stashed, set()
        return decision


@dataclass(frozen=True)
class IA2SGDParams:
    first_update: str = param(
        "filled",
        "the first update fires at the arrival that fills the table (filled: W = 1 is SGD) or "
        "at the one after it (after: the authors' simulator)",
        check=one_of("first_update", "filled", "after"),
    )


register(
    Registered(
        "malenia",
        "Rennala for heterogeneous data: every worker's mean counts alike (Tyurin & "
        "Richtárik 2023)",
        build=lambda c, ctx: Malenia(c.workers),
        min_gradients=lambda c: c.workers,
        examples=("malenia",),
        colour="#ad494a",
        predictor="every-worker-round",
        table="mean",
    )
)
register(
    Registered(
        "ia2sgd",
        "async that steps with the mean of each worker's latest gradient (Wang et al. 2025)",
        build=lambda c, ctx: IA2SGD(c.workers, c.first_update),
        params=IA2SGDParams,
        examples=("ia2sgd", "ia2sgd:first_update=after"),
        colour="#de9ed6",
        predictor="every-arrival",
        table="latest",
    )
)
register(
    Registered(
        "ringleader",
        "async in cycles over a table of each worker's mean gradient (Maranjyan & Richtárik 2025)",
        build=lambda c, ctx: Ringleader(c.workers),
        examples=("ringleader",),
        colour="#5254a3",
        predictor="gather-then-step",
        table="mean",
    )
)
