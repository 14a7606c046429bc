"""What every real backend does the same way, whatever carries its messages: a
:class:`Driver` is the parameter server's side of a run on real workers (processes, Ray
actors). It asks the :class:`~hybridsgd.core.Coordinator` for every decision, records the
trace, keeps parameter snapshots to evaluate after the run, and carries out losses.

A transport subclasses it and supplies: ``_open`` (start the workers), ``_loop`` (wait for
events and call :meth:`Driver._arrive` / :meth:`Driver._lose`), ``_launch`` (send a job),
``_publish`` (a new version exists), and ``_close`` (stop every worker).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from hybridsgd.coordinator import Coordinator
from hybridsgd.core.faults import Faults
from hybridsgd.errors import WorkerLost
from hybridsgd.policies.base import Decision, Fate
from hybridsgd.record import CANCELLED, FATE_CODE, PENDING, Recorder, Schedule
from hybridsgd.tasks.base import Task
from hybridsgd.tasks.data import WorkerSampler
from hybridsgd.timing.cluster import Cluster


class ParameterRing:
    """Parameter versions in memory the workers share: ``slots`` rows (W + 2 suffice for W
    workers), each rewritten only when no running job reads it, so a worker computes on
    exactly the version it was given while the server moves on. One copy per update."""

    def __init__(self, slots: torch.Tensor, params: torch.Tensor) -> None:
        self.slots = slots
        self.readers = [0] * len(slots)  # running jobs that read each slot
        self.now = 0  # the slot holding the server's version
        slots[0].copy_(params)

    def publish(self, params: torch.Tensor) -> None:
        """The server's new version, into a slot no running job reads."""
        free = next(i for i, n in enumerate(self.readers) if n == 0 and i != self.now)
        self.slots[free].copy_(params)
        self.now = free

    def take(self) -> int:
        """The current version's slot, for a job that starts reading it."""
        self.readers[self.now] += 1
        return self.now

    def release(self, slot: int) -> None:
        """A job that read ``slot`` is over."""
        self.readers[slot] -= 1


@dataclass(kw_only=True)
class RealResult:
    """What a run on real workers did; times are seconds since every worker was ready."""

    schedule: Schedule
    snapshots: list[tuple[int, float, torch.Tensor]]  # (version, time, parameters) to evaluate
    threads: int
    pids: list[int]
    lost: list[dict] = field(default_factory=list)  # {worker, time, why}
    interrupted: bool = False
    error: str | None = None  # why the run stopped early (a loss the policy cannot absorb)
    startup_s: float = 0.0
    restarts: list[int] = field(default_factory=list)  # per worker (backends that restart)
    shared: list[int] = field(default_factory=list)  # workers reached through shared memory
    hung: list[int] = field(default_factory=list)  # workers that had to be killed at the end
    devices: list[str] = field(default_factory=list)  # where each worker computed


class Driver:
    """The server's side of a run on real workers (see the module doc). Use ``run`` once."""

    #: whether a buffered gradient may live in a buffer its worker will overwrite
    aliases_gradients = False

    def __init__(
        self,
        task: Task,
        samplers: Sequence[WorkerSampler],
        coordinator: Coordinator,
        cluster: Cluster | None = None,
        *,
        time_unit: float = 0.0,
        threads: int = 1,
        worker_timeout: float = 60.0,
        shrink: bool = True,
        eval_every: int = 25,
        progress: Callable[[int], None] | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.task, self.samplers, self.coord = task, list(samplers), coordinator
        self.policy, self.server = coordinator.policy, coordinator.server
        self.W = self.policy.workers
        self.devices: list[str] = ["cpu"] * self.W
        if len(self.samplers) != self.W:
            raise ValueError(f"{len(self.samplers)} samplers for {self.W} workers")
        if time_unit > 0 and cluster is None:
            raise ValueError("injected delays (time_unit > 0) need a cluster")
        self.cluster, self.unit, self.threads = cluster, time_unit, threads
        self.worker_timeout, self.shrink = worker_timeout, shrink
        self.eval_every, self.progress = eval_every, progress
        self.faults = faults or Faults()
        self._crashes = list(self.faults.crashes)  # (seconds, worker), sorted
        self.rec = Recorder(self.W)
        self.snapshots: list[tuple[int, float, torch.Tensor]] = []
        self.lost: list[dict] = []
        # w -> token, read version, minibatch, start time, the transport's own data
        self._busy: dict[int, tuple[int, int, int, float, Any]] = {}
        self._token = [0] * self.W
        self._next_slot = [0] * self.W
        self._aliased: dict[int, int] = {}  # worker -> gid held in a buffer it will overwrite
        self._gone: set[int] = set()
        self.pids: list[int] = []
        self.restarts = [0] * self.W
        self.hung: list[int] = []  # workers that did not stop when asked at the end

    # -- the run -------------------------------------------------------------------------
    def run(self, max_updates: float | None = None, max_time: float | None = None) -> RealResult:
        """Train until ``max_updates`` updates or ``max_time`` seconds, Ctrl-C, or a loss
        the policy cannot absorb; every worker is stopped before this returns."""
        max_updates = max_updates if max_updates is not None else math.inf
        max_time = max_time if max_time is not None else math.inf
        interrupted, error, startup = False, None, 0.0
        driver_threads = torch.get_num_threads()
        try:
            t = time.perf_counter()
            self._open()
            startup = time.perf_counter() - t
            torch.set_num_threads(1)  # the driver's steps are small; leave the cores to workers
            self._t0 = time.perf_counter()
            self.snapshots.append((0, 0.0, self.server.params.clone()))
            for w in range(self.W):
                self._start(w, 0.0)
            self._loop(max_updates, max_time)
        except KeyboardInterrupt:
            interrupted = True
        except WorkerLost as exc:
            error = str(exc)
        finally:
            try:  # the final parameters, before _close stops whatever holds them
                version = self.server.version
                if self.snapshots and self.snapshots[-1][0] != version:
                    t_end = self.rec.update_time[-1] if self.rec.update_time else 0.0
                    self.snapshots.append((version, t_end, self.server.params.clone()))
            finally:
                self._close()
                torch.set_num_threads(driver_threads)
        return RealResult(
            schedule=self.rec.schedule(self.name),
            snapshots=self.snapshots,
            threads=self.threads,
            pids=self.pids,
            lost=self.lost,
            interrupted=interrupted,
            error=error,
            startup_s=startup,
            restarts=self.restarts,
            shared=self._shared_workers(),
            hung=self.hung,
            devices=self.devices,
        )

    name = "real"

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _wait_budget(self, now: float, max_time: float) -> float:
        """Seconds until the next thing that needs the driver without a message: the time
        limit, the oldest job's timeout, the next injected crash."""
        if not self._busy:
            raise RuntimeError("no worker is running and none may start")  # a policy bug
        oldest = min(job[3] for job in self._busy.values())
        crash = self._crashes[0][0] if self._crashes else math.inf
        return max(0.0, min(max_time, oldest + self.worker_timeout, crash) - now)

    def _overdue(self, now: float, kill: Callable[[int], None]) -> None:
        """Carry out injected crashes that are due and lose silent workers."""
        while self._crashes and self._crashes[0][0] <= now:
            _, w = self._crashes.pop(0)
            if w not in self._gone:
                kill(w)
                self._lose(w, now, "crashed (faults)")
        for w, job in list(self._busy.items()):
            if now - job[3] > self.worker_timeout:
                kill(w)
                self._lose(
                    w, now, f"no answer within run.worker_timeout = {self.worker_timeout:g} s"
                )

    # -- events --------------------------------------------------------------------------
    def _start(self, w: int, now: float) -> None:
        if w in self._gone:
            return
        v = self.coord.request(w)
        if v is None:
            return
        if w in self._aliased:  # its gradient buffer is about to be overwritten
            self.coord.own(self._aliased.pop(w))
        self._token[w] += 1
        slot = self._next_slot[w]
        self._next_slot[w] += 1
        delay = (
            self.cluster.delay(w, now / self.unit) * self.unit
            if self.unit > 0 and self.cluster
            else 0.0
        )
        data = self._launch(w, self._token[w], slot, delay)
        self._busy[w] = (self._token[w], v, slot, now, data)

    def _end(self, w: int) -> tuple[int, int, float]:
        """The worker's job is over: its read version, minibatch and start time."""
        _, read, slot, start, data = self._busy.pop(w)
        self._finish(data)
        return read, slot, start

    def _current(self, w: int, token: int) -> bool:
        """Whether a result for ``token`` is the worker's job in progress (not cancelled)."""
        return w in self._busy and self._busy[w][0] == token

    def _arrive(self, w: int, now: float, grad: torch.Tensor) -> None:
        read, slot, start = self._end(w)
        gid = len(self.rec.fate)
        self.faults.corrupt_one(w, grad)
        d = self.coord.push(w, read, grad, now, gid=gid)
        fate = PENDING if d.decision.fate == Fate.BUFFERED else FATE_CODE[d.decision.fate]
        self.rec.gradient(w, slot, read, start, now, fate, d.decision.staleness)
        if d.decision.fate == Fate.BUFFERED and self.aliases_gradients:
            self._aliased[w] = gid
        self._follow(d.decision, now)
        self._start(w, now)

    def _cancel(self, w: int, now: float) -> None:
        """Record the worker's job in flight as cancelled."""
        if w in self._busy:
            read, slot, start = self._end(w)
            stale = self.policy.version - read
            self.rec.gradient(w, slot, read, start, now, CANCELLED, stale)

    def _lose(self, w: int, now: float, why: str) -> None:
        if w in self._gone:
            return
        self._gone.add(w)
        self.lost.append({"worker": w, "time": now, "why": why})
        self._cancel(w, now)
        self._follow(self.coord.lose(w, now, shrink=self.shrink), now)

    def _follow(self, d: Decision, now: float) -> None:
        """Carry out a decision: record its update, cancel and release workers."""
        if d.update is not None:
            self._publish()
            self.rec.fired(d.update, now)
            for gid, why in self.coord.rejected:
                self.rec.reject(gid, why)
            self.coord.rejected.clear()
            v = d.update.version
            if v % self.eval_every == 0:
                self.snapshots.append((v, now, self.server.params.clone()))
            if self.progress is not None:
                self.progress(v)
        for c in d.cancel:
            if c in self._busy:
                self._cancel(c, now)
                self._start(c, now)  # the new job's message cancels the old one
        for r in d.release:
            self._start(r, now)

    # -- the transport ---------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _loop(self, max_updates: float, max_time: float) -> None:
        raise NotImplementedError

    def _launch(self, w: int, token: int, slot: int, delay: float) -> Any:
        """Send worker ``w`` job ``token`` on the current version; return what ``_finish``
        needs to release the job's resources."""
        raise NotImplementedError

    def _finish(self, data: Any) -> None:
        """A job is over (arrived, cancelled or lost)."""

    def _publish(self) -> None:
        """The server has a new version."""

    def _shared_workers(self) -> list[int]:
        """The workers that exchange parameters and gradients through shared memory."""
        return []

    def _close(self) -> None:
        raise NotImplementedError
