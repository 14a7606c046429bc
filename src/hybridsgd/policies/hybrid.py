"""``hybrid``: start asynchronous, move to synchronous aggregation under a threshold function
(Vora et al. 2024, "Hybrid Approach to Parallel Stochastic Gradient Descent", whose
algorithm they call Smooth Switch).

This is the *quorum* reading: the threshold maps progress (updates, time or epochs) to a
degree of synchrony ``level`` in [0, 1], and the update after each one is made with

* ``level < 1``: K = 1 + floor(level * (W - 1)) gradients from distinct workers, stale ones
  accepted, nobody waits (``k_async``; K = 1 is ``async``);
* ``level = 1``: ``sync``: all W workers' gradients of the current version, each worker
  waiting for the next version.

The regime is chosen at update boundaries, when nothing is buffered, so every update is
made under one regime, recorded in the trace's ``regime`` column. A constant threshold of
0 is exactly ``async``, and of 1 exactly ``sync`` (tested).

Advice: the asynchronous phase buys fast early progress when gradients are large and
staleness matters little; the synchronous phase removes staleness noise near the end. Put
the switch where the loss curve of ``async`` flattens (a ``compare`` run shows it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridsgd.core.staleness import StalenessRule
from hybridsgd.policies.base import Decision, Fate, Update
from hybridsgd.policies.quorum import ASYNCHRONOUS, SYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import Registered, one_of, param, register, stale_rule
from hybridsgd.policies.thresholds import Threshold, parse_threshold

PROGRESS = ("updates", "time", "epochs")


def synchrony(value: float) -> float:
    """A threshold's value as a degree of synchrony: clipped to [0, 1], NaN read as 0."""
    return 0.0 if math.isnan(value) else min(1.0, max(0.0, float(value)))


def quorum(level: float, workers: int) -> int:
    """Gradients per update at a degree of synchrony: K = 1 + floor(level (W - 1)) from
    distinct workers while ``level < 1`` (asynchronous), all W at 1 (synchronous)."""
    return workers if level >= 1.0 else 1 + math.floor(level * (workers - 1))


#: the policies a hybrid starts as (level 0) and ends as (level 1). Named, not imported:
#: importing policies.sync here would register it before the hybrid, and the registry's
#: order is the order of --help and of recommend's candidates
FULLY_ASYNC, FULLY_SYNC = "async", "sync"


def regime_spec(level: float, workers: int) -> tuple[str, int]:
    """The policy a hybrid acts as at a degree of synchrony, as a spec, and its K:
    asynchronous (K = 1), K-async from K distinct workers, synchronous at level 1."""
    level = synchrony(level)
    K = quorum(level, workers)
    if level >= 1.0:
        return FULLY_SYNC, K
    return (FULLY_ASYNC, K) if K == 1 else (f"k_async:k={K}", K)


class _Scheduled:
    """Progress and level, shared by both readings: ``threshold(progress)`` clipped to
    [0, 1], progress counted in updates, backend time or epochs of applied gradients."""

    version: int
    now: float

    def _schedule(self, threshold: Threshold, progress: str, gradients_per_epoch: float) -> None:
        if progress not in PROGRESS:
            raise ValueError(f"progress must be one of {PROGRESS}")
        self.threshold = threshold
        self.progress = progress
        self.gradients_per_epoch = gradients_per_epoch
        self.applied = 0  # gradients applied so far (epochs of progress)
        self._level = 0.0

    def _level_now(self) -> float:
        p = {
            "updates": float(self.version),
            "time": self.now,
            "epochs": self.applied / self.gradients_per_epoch,
        }[self.progress]
        self._level = synchrony(self.threshold(p))
        return self._level

    def level(self) -> float:
        return self._level

    def fast_path(self) -> tuple | None:
        return None  # the regime changes over the run: the event loop follows it


class HybridPolicy(_Scheduled, QuorumPolicy):
    """A quorum policy whose regime follows ``threshold(progress)``."""

    def __init__(
        self,
        workers: int,
        threshold: Threshold,
        progress: str = "updates",
        gradients_per_epoch: float = 1.0,
        staleness: StalenessRule | None = None,
    ) -> None:
        QuorumPolicy.__init__(
            self, workers, 1, counts="workers", **ASYNCHRONOUS, staleness=staleness, name="hybrid"
        )
        self._schedule(threshold, progress, gradients_per_epoch)
        self._enter()

    def _enter(self) -> None:
        level = self._level_now()
        regime = SYNCHRONOUS if level >= 1.0 else ASYNCHRONOUS  # sync: pushers wait
        self._set_regime(quorum(level, self.workers), regime)

    def _fire(self, staleness: int) -> Decision:
        n = len(self._buffer)
        decision = super()._fire(staleness)  # made under the current regime
        self.applied += n
        self._enter()  # the regime of the next update
        return decision

    def describe(self) -> str:
        return f"hybrid(W={self.workers}, {self.threshold} over {self.progress})"


def hybrid(
    workers: int,
    threshold: Threshold,
    progress: str = "updates",
    gradients_per_epoch: float = 1.0,
    staleness: StalenessRule | None = None,
) -> HybridPolicy:
    """Asynchronous to synchronous under ``threshold`` (see the module doc)."""
    return HybridPolicy(workers, threshold, progress, gradients_per_epoch, staleness)


class PartitionHybrid(_Scheduled, QuorumPolicy):
    """``hybrid``, partition reading: the first m of the model's parameter tensors are
    aggregated synchronously, the rest applied on arrival, m = round(level * tensors).

    Workers never wait: every arrival is an update of the asynchronous tensors. The
    synchronous tensors have their own version; a gradient's synchronous part counts if it
    was read at the current synchronous version and its worker has not yet given one in
    this round. When W distinct workers have, the arrival's update also applies their mean to
    the synchronous tensors. m changes only between synchronous rounds (or freely while
    it is 0), and each change opens a new synchronous version, so the gradients averaged in
    a round all saw the same synchronous values.
    """

    def __init__(
        self,
        workers: int,
        threshold: Threshold,
        tensors: int,
        progress: str = "updates",
        gradients_per_epoch: float = 1.0,
        staleness: StalenessRule | None = None,
    ) -> None:
        if tensors < 1:
            raise ValueError("tensors must be >= 1")
        QuorumPolicy.__init__(
            self,
            workers,
            1,
            counts="minibatches",
            **ASYNCHRONOUS,
            staleness=staleness,
            name="hybrid",
        )
        self._schedule(threshold, progress, gradients_per_epoch)
        self.partial_updates = True  # tensors outside the partition's update get no gradient
        self.tensors = tensors
        self.sync_version = 0
        self._read_sync = [-1] * workers
        self._round: list[int] = []  # gids whose synchronous part waits for the round
        self._round_workers: set[int] = set()
        self.m = 0
        self._repartition()

    def _repartition(self) -> None:
        m = round(self._level_now() * self.tensors)
        if m != self.m:
            self.m = m
            self.sync_version += 1  # a new round on values nobody has read yet

    def request(self, worker: int) -> int | None:
        v = super().request(worker)
        self._read_sync[worker] = self.sync_version
        return v

    def push(self, worker: int, read_version: int, gid: int, now: float = 0.0) -> Decision:
        staleness, refused = self._arrive(worker, read_version, now)
        if refused is not None:
            return refused
        round_done = None
        if (
            self.m > 0
            and self._read_sync[worker] == self.sync_version
            and worker not in self._round_workers
        ):
            self._round.append(gid)
            self._round_workers.add(worker)
            if len(self._round_workers) == self.workers:
                round_done, self._round, self._round_workers = self._round, [], set()
        accepted = self.staleness_rule.accepts(staleness)
        if not accepted and round_done is None:
            return Decision(Fate.DROPPED, staleness, reason="staleness rule")
        self.version += 1
        self.applied += accepted
        update = Update(
            self.version,
            [gid] if accepted else [],
            [staleness] if accepted else [],
            self._level,
            sync_tensors=self.m,
            sync_members=round_done,
        )
        if round_done is not None:
            self.sync_version += 1
        if round_done is not None or self.m == 0:
            self._repartition()
        fate = Fate.APPLIED if accepted else Fate.DROPPED
        return Decision(fate, staleness, update, reason="" if accepted else "staleness rule")

    def describe(self) -> str:
        return f"hybrid(W={self.workers}, partition, {self.threshold} over {self.progress})"


def _check_threshold(value: str, p) -> None:
    if value:
        parse_threshold(value)


@dataclass(frozen=True)
class HybridParams:
    threshold: str = param(
        "", "the threshold shape, e.g. linear:start=0,end=500", check=_check_threshold,
        example="linear:start=0,end=500",
    )  # fmt: skip
    progress: str = param(
        "updates", "the threshold's axis: updates | time | epochs",
        check=one_of("progress", *PROGRESS),
    )  # fmt: skip
    reading: str = param(
        "quorum", "quorum (gradients per update) or partition (synchronous layers)",
        check=one_of("reading", "quorum", "partition"),
    )  # fmt: skip


def _build(c, ctx) -> QuorumPolicy:
    threshold = parse_threshold(c.threshold)
    if c.reading == "partition":
        return PartitionHybrid(
            c.workers, threshold, ctx.tensors, c.progress, ctx.gradients_per_epoch, stale_rule(c)
        )
    return hybrid(c.workers, threshold, c.progress, ctx.gradients_per_epoch, stale_rule(c))


register(
    Registered(
        "hybrid",
        "asynchronous to synchronous under a threshold on progress (Vora et al. 2024)",
        build=_build,
        params=HybridParams,
        required=("threshold",),
        stale=True,
        examples=("hybrid:threshold=linear:start=0,end=40",),
        colour="#17becf",
        sim_only=lambda c: (
            ("policy.reading", "partition", "quorum") if c.reading == "partition" else None
        ),
        tuned_keys=("optimizer.async_lr",),
        predictor="per-regime",
    )
)
