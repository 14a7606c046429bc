"""The run record, shared by every backend, the trace and the analysis: a
:class:`Schedule` (who computed on which version, when, and what became of it), the
:class:`Recorder` that builds one as a run goes, and the :class:`Evals` of a run.

The schedule depends only on timing and on the policy's decisions, never on parameter
values (docs/design.md section 2), so the simulator computes it first and replays the
numerics after. Gradient ids are row numbers, in the order the policy saw pushes and
cancellations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybridsgd.policies.base import Fate

FATES = (Fate.APPLIED, Fate.DROPPED, Fate.CANCELLED, Fate.PENDING, Fate.REJECTED)
APPLIED, DROPPED, CANCELLED, PENDING, REJECTED = range(5)
FATE_CODE: dict[str, int] = {f: i for i, f in enumerate(FATES)}


#: the reason of a job abandoned because it ran past its worker's time budget (MindFlayer)
OVER_BUDGET = "over its time budget"


@dataclass
class Schedule:
    """Column arrays, one row per gradient; ``update_time[u]`` is when version u+1 appeared."""

    worker: np.ndarray  # int64
    minibatch: np.ndarray  # int64: the worker's k-th minibatch (its data slot)
    read_version: np.ndarray  # int64
    start: np.ndarray  # float64: when the worker read the parameters
    end: np.ndarray  # float64: arrival, or cancellation
    fate: np.ndarray  # int8 code into FATES
    update: np.ndarray  # int64: index u of the update (new version u+1) or -1
    staleness: np.ndarray  # int64: version at arrival (or cancellation) minus read version
    update_time: np.ndarray  # float64 [updates]
    workers: int
    path: str  # "events", "rounds", "renewal" or "gated": how it was produced
    update_regime: np.ndarray | None = None  # float64 [updates]: synchrony level used
    # the lr and momentum each update was applied with (NaN: nothing applied, or no momentum)
    update_lr: np.ndarray | None = None
    update_momentum: np.ndarray | None = None
    # hybrid partition reading only: the update that averaged each gradient into the
    # synchronous tensors (-1: none), and how many leading tensors were synchronous per update
    sync_update: np.ndarray | None = None
    update_sync_tensors: np.ndarray | None = None
    # policies with a gradient table only: whether each update emptied it first (bool)
    update_reset: np.ndarray | None = None
    # a factor on each update's gradient (Update.scale); None when every one is 1
    update_scale: np.ndarray | None = None
    # the gids of jobs abandoned because they ran past their worker's time budget
    overran: np.ndarray | None = None
    # jobs sized by time (worker.steps = "time:T") only: the minibatches (inner steps) each
    # job computed and sent, 0 for one cancelled before it sent; None: jobs sized by count
    steps: np.ndarray | None = None
    # real runs whose workers share the driver's clock: each job's messages, in seconds:
    # from the driver's send of the job until the worker had it (pull), and from the
    # worker's send until the driver had the gradient (push); NaN for a job that did not
    # arrive. None: not timed
    pull: np.ndarray | None = None
    push: np.ndarray | None = None
    reasons: dict[int, str] = field(default_factory=dict)  # gid -> why it was rejected
    stopped: str = ""  # why the run ended early (a worker loss the policy cannot absorb)
    lost: list[tuple[float, int]] = field(default_factory=list)  # (time, worker) lost

    def reject(self, gid: int, reason: str) -> None:
        """The server refused gradient ``gid`` (a numerical check, after the schedule)."""
        self.fate[gid] = REJECTED
        self.update[gid] = -1
        self.reasons[gid] = reason

    @property
    def partitioned(self) -> bool:
        return self.update_sync_tensors is not None and bool((self.update_sync_tensors > 0).any())

    @property
    def n_updates(self) -> int:
        return len(self.update_time)

    @property
    def n_gradients(self) -> int:
        return len(self.worker)

    @property
    def end_time(self) -> float:
        return float(self.update_time[-1]) if self.n_updates else 0.0

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.fate, minlength=len(FATES))
        return {f: int(c[i]) for i, f in enumerate(FATES)}

    def per_update(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradients per update, their mean and max staleness."""
        mask = self.fate == APPLIED
        u, s = self.update[mask], self.staleness[mask]
        n = np.bincount(u, minlength=self.n_updates)
        total = np.bincount(u, weights=s, minlength=self.n_updates)
        mx = np.full(self.n_updates, -1, dtype=np.int64)
        np.maximum.at(mx, u, s)
        with np.errstate(invalid="ignore", divide="ignore"):
            return n, total / n, mx

    def truncated(self, versions: int) -> Schedule:
        """The schedule as it stood when version ``versions`` appeared (a run stopped
        there): its first ``versions`` updates, and the gradients that had arrived or been
        cancelled by then; those whose update came later are pending again."""
        if versions >= self.n_updates:
            return self
        t = float(self.update_time[versions - 1]) if versions else 0.0
        rows = np.flatnonzero(self.end <= t)
        late = self.update[rows] >= versions
        fate = self.fate[rows].copy()
        update = self.update[rows].copy()
        fate[late & (fate == APPLIED)] = PENDING
        update[late] = -1
        renumber = {int(g): i for i, g in enumerate(rows)}

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[:versions].copy()

        sync = None
        if self.sync_update is not None:
            sync = self.sync_update[rows].copy()
            sync[sync >= versions] = -1
        return Schedule(
            worker=self.worker[rows],
            minibatch=self.minibatch[rows],
            read_version=self.read_version[rows],
            start=self.start[rows],
            end=self.end[rows],
            fate=fate,
            update=update,
            staleness=self.staleness[rows],
            update_time=self.update_time[:versions].copy(),
            workers=self.workers,
            path=self.path,
            update_regime=cut(self.update_regime),
            update_lr=cut(self.update_lr),
            update_momentum=cut(self.update_momentum),
            sync_update=sync,
            update_sync_tensors=cut(self.update_sync_tensors),
            update_reset=cut(self.update_reset),
            update_scale=cut(self.update_scale),
            overran=None
            if self.overran is None
            else np.asarray([renumber[g] for g in self.overran.tolist() if g in renumber]),
            steps=None if self.steps is None else self.steps[rows],
            pull=None if self.pull is None else self.pull[rows],
            push=None if self.push is None else self.push[rows],
            reasons={renumber[g]: r for g, r in self.reasons.items() if g in renumber},
            stopped=self.stopped,
            lost=[(tl, w) for tl, w in self.lost if tl <= t],
        )

    def equals(self, other: Schedule) -> bool:
        """Bit-for-bit equality of every column."""
        cols = (
            "worker",
            "minibatch",
            "read_version",
            "start",
            "end",
            "fate",
            "update",
            "staleness",
        )
        return all(
            np.array_equal(getattr(self, c), getattr(other, c)) for c in cols
        ) and np.array_equal(self.update_time, other.update_time)


class Recorder:
    """Builds a :class:`Schedule` one event at a time, for backends that see events as they
    happen (the event loop, real processes). Rows are gradients in the order the policy saw
    them; an update rewrites the fate of its members."""

    def __init__(self, workers: int, *, steps: bool = False) -> None:
        self.workers = workers
        #: with ``steps`` (jobs sized by time): each job's minibatches, appended by the
        #: worker protocol beside each row
        self.steps: list[int] | None = [] if steps else None
        self.rows: list[tuple[int, int, int, float, float, int]] = []
        self.fate: list[int] = []
        self.update: list[int] = []
        self.sync: list[int] = []
        self.update_time: list[float] = []
        self.update_regime: list[float] = []
        self.update_sync_tensors: list[int] = []
        self.update_reset: list[bool] = []
        self.update_scale: list[float] = []
        self.overran: list[int] = []  # gids of jobs abandoned over their time budget
        self.reasons: dict[int, str] = {}
        self.lost: list[tuple[float, int]] = []  # (time, worker) of each worker lost
        #: gid -> the job's (pull, push) message times, where a real backend timed them
        self.messages: dict[int, tuple[float, float]] = {}

    def gradient(
        self, worker: int, slot: int, read: int, start: float, end: float, fate: int, stale: int
    ) -> int:
        """Record one gradient; returns its row (the gid)."""
        self.rows.append((worker, slot, read, start, end, stale))
        self.fate.append(fate)
        self.update.append(-1)
        self.sync.append(-1)
        return len(self.fate) - 1

    def fired(self, up, t: float) -> None:
        """Record update ``up`` (an :class:`~hybridsgd.policies.Update`) at time ``t``."""
        u = len(self.update_time)
        self.update_time.append(t)
        self.update_regime.append(up.regime)
        self.update_sync_tensors.append(up.sync_tensors)
        self.update_reset.append(up.reset)
        self.update_scale.append(up.scale)
        for m in up.members:
            self.fate[m] = APPLIED
            self.update[m] = u
        for m in up.sync_members or ():
            self.sync[m] = u

    def reject(self, gid: int, reason: str) -> None:
        """The server refused an applied gradient (see :meth:`Schedule.reject`)."""
        self.fate[gid] = REJECTED
        self.update[gid] = -1
        self.reasons[gid] = reason

    def schedule(self, path: str) -> Schedule:
        i64 = np.int64
        cols = list(zip(*self.rows, strict=True)) if self.rows else [()] * 6
        return Schedule(
            worker=np.asarray(cols[0], dtype=i64),
            minibatch=np.asarray(cols[1], dtype=i64),
            read_version=np.asarray(cols[2], dtype=i64),
            start=np.asarray(cols[3], dtype=np.float64),
            end=np.asarray(cols[4], dtype=np.float64),
            fate=np.asarray(self.fate, dtype=np.int8),
            update=np.asarray(self.update, dtype=i64),
            staleness=np.asarray(cols[5], dtype=i64),
            update_time=np.asarray(self.update_time, dtype=np.float64),
            workers=self.workers,
            path=path,
            update_regime=np.asarray(self.update_regime, dtype=np.float64),
            sync_update=np.asarray(self.sync, dtype=i64),
            update_sync_tensors=np.asarray(self.update_sync_tensors, dtype=i64),
            update_reset=np.asarray(self.update_reset, dtype=bool)
            if any(self.update_reset)
            else None,
            update_scale=np.asarray(self.update_scale, dtype=np.float64)
            if any(f != 1.0 for f in self.update_scale)
            else None,
            overran=np.asarray(self.overran, dtype=i64) if self.overran else None,
            steps=None if self.steps is None else np.asarray(self.steps, dtype=i64),
            pull=self._timed(0),
            push=self._timed(1),
            reasons=dict(self.reasons),
            lost=list(self.lost),
        )

    def _timed(self, which: int) -> np.ndarray | None:
        """Each row's pull (0) or push (1) time, NaN where not timed; None if none was."""
        if not self.messages:
            return None
        out = np.full(len(self.fate), np.nan)
        for gid, times in self.messages.items():
            out[gid] = times[which]
        return out


@dataclass
class Evals:
    """Evaluations on the test set: at which version and time, the loss and accuracy."""

    version: list[int] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)

    def add(self, version: int, time: float, loss: float, accuracy: float) -> None:
        self.version.append(version)
        self.time.append(time)
        self.loss.append(loss)
        self.accuracy.append(accuracy)
