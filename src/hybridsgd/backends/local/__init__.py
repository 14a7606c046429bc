"""The local backend: W worker processes on this machine, parameters in shared memory, the
real clock.

The driver (the calling process) is the parameter server. It runs the same
:class:`~hybridsgd.core.Coordinator` as every backend: it asks the policy whether an idle
worker may start and on which version, hands it each arriving gradient, and carries out the
answer. No policy logic lives here; this module only moves work and measures time.

Transport: shared memory holds a ring of W + 2 parameter versions and one gradient slot per
worker. After each update the driver copies the new version into a free ring slot, once,
however many workers then read it; a slot is free when no running job reads it, so a
worker computes on exactly the version the policy named, however far the server moves on.
A job is a four-number message (which ring slot to read), the answer a two-number message;
the worker writes its gradient into its own slot. No tensor is ever pickled. A gradient
the policy buffers is used in place until its worker is about to overwrite it, and copied
only then.

Faults: the driver watches every worker's process sentinel. A worker that dies, or stays
silent for ``run.worker_timeout`` seconds on one job (it is then killed), is lost: the policy
decides what follows (:meth:`~hybridsgd.policies.QuorumPolicy.lose`). Ctrl-C, a fault the
policy cannot absorb, or the end of the run stop every worker; none outlives the driver
(Linux kills them with it even when the driver itself is SIGKILLed).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import wait

import torch
import torch.multiprocessing as tmp

from hybridsgd.backends.local.worker import worker_main
from hybridsgd.backends.sim.schedule import CANCELLED, FATE_CODE, PENDING, Recorder, Schedule
from hybridsgd.core.coordinator import Coordinator
from hybridsgd.core.faults import Faults
from hybridsgd.errors import WorkerLost
from hybridsgd.policies.base import Decision, Fate
from hybridsgd.tasks.base import Task
from hybridsgd.tasks.data import WorkerSampler
from hybridsgd.timing.cluster import Cluster

#: seconds a worker may take to start (import torch, receive the task) before it is lost
STARTUP_TIMEOUT = 120.0


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def worker_threads(workers: int, threads: int = 0) -> int:
    """torch intra-op threads per worker: ``threads`` if set, else the cores shared out so
    that W workers never oversubscribe the machine (at least one each)."""
    return threads if threads > 0 else max(1, available_cores() // workers)


@dataclass
class LocalResult:
    """What a local run did; times are seconds since every worker was ready."""

    schedule: Schedule
    snapshots: list[tuple[int, float, torch.Tensor]]  # (version, time, parameters) to evaluate
    threads: int
    pids: list[int]
    lost: list[dict] = field(default_factory=list)  # {worker, time, why}
    interrupted: bool = False
    error: str | None = None  # why the run stopped early (a loss the policy cannot absorb)
    startup_s: float = 0.0


class LocalBackend:
    """One run on local processes (see the module doc). Use :meth:`run` once."""

    def __init__(
        self,
        task: Task,
        samplers: Sequence[WorkerSampler],
        coordinator: Coordinator,
        cluster: Cluster | None = None,
        *,
        time_unit: float = 0.0,
        threads: int = 0,
        worker_timeout: float = 60.0,
        shrink: bool = True,
        eval_every: int = 25,
        progress: Callable[[int], None] | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.task, self.samplers, self.coord = task, list(samplers), coordinator
        self.policy, self.server = coordinator.policy, coordinator.server
        self.W = self.policy.workers
        if len(self.samplers) != self.W:
            raise ValueError(f"{len(self.samplers)} samplers for {self.W} workers")
        if time_unit > 0 and cluster is None:
            raise ValueError("injected delays (time_unit > 0) need a cluster")
        self.cluster, self.unit = cluster, time_unit
        self.threads = worker_threads(self.W, threads)
        self.worker_timeout, self.shrink = worker_timeout, shrink
        self.eval_every, self.progress = eval_every, progress
        self.faults = faults or Faults()
        self._crashes = list(self.faults.crashes)  # (seconds, worker), sorted
        self.rec = Recorder(self.W)
        self.snapshots: list[tuple[int, float, torch.Tensor]] = []
        self.lost: list[dict] = []
        # w -> token, read version, minibatch, start time, ring slot
        self._busy: dict[int, tuple[int, int, int, float, int]] = {}
        self._token = [0] * self.W
        self._next_slot = [0] * self.W
        self._aliased: dict[int, int] = {}  # worker -> gid held in its gradient slot
        self._gone: set[int] = set()

    # -- the run -------------------------------------------------------------------------
    def run(self, max_updates: int | None = None, max_time: float | None = None) -> LocalResult:
        """Train until ``max_updates`` updates or ``max_time`` seconds, Ctrl-C, or a loss
        the policy cannot absorb; every worker is stopped before this returns."""
        max_updates = max_updates if max_updates is not None else math.inf
        max_time = max_time if max_time is not None else math.inf
        n = self.server.params.numel()
        self._ring = torch.zeros(self.W + 2, n).share_memory_()
        self._readers = [0] * (self.W + 2)  # running jobs that read each ring slot
        self._current = 0  # the ring slot holding the server's version
        self._ring[0].copy_(self.server.params)
        self._grads = torch.zeros(self.W, n).share_memory_()
        interrupted, error, startup = False, None, 0.0
        driver_threads = torch.get_num_threads()
        self.procs, self.conns = [], []
        try:
            t = time.perf_counter()
            self._spawn()
            self._await_ready()
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
            self._shutdown()
            torch.set_num_threads(driver_threads)
        version = self.server.version
        if self.snapshots and self.snapshots[-1][0] != version:
            t_end = self.rec.update_time[-1] if self.rec.update_time else 0.0
            self.snapshots.append((version, t_end, self.server.params.clone()))
        return LocalResult(
            self.rec.schedule("local"),
            self.snapshots,
            self.threads,
            [p.pid for p in self.procs],
            self.lost,
            interrupted,
            error,
            startup,
        )

    def _spawn(self) -> None:
        ctx = _context()
        with _sigint_ignored():  # workers inherit SIG_IGN: Ctrl-C reaches the driver only
            for w in range(self.W):
                parent, child = ctx.Pipe(duplex=True)
                args = (child, self.task, self.samplers[w], self._ring, self._grads[w])
                p = ctx.Process(
                    target=worker_main,
                    args=(*args, self.threads, self.faults.flips_labels(w)),
                    name=f"hybridsgd-worker-{w}",
                    daemon=True,
                )
                p.start()
                child.close()
                self.procs.append(p)
                self.conns.append(parent)

    def _await_ready(self) -> None:
        waiting = dict(enumerate(self.conns))
        deadline = time.perf_counter() + STARTUP_TIMEOUT
        while waiting:
            sentinels = {self.procs[w].sentinel: w for w in waiting}
            ready = wait([*waiting.values(), *sentinels], deadline - time.perf_counter())
            if not ready:
                raise WorkerLost(
                    f"workers {sorted(waiting)} did not start within {STARTUP_TIMEOUT:g} s"
                )
            for obj in ready:
                w = sentinels.get(obj)
                if w is None:
                    w = next(k for k, c in waiting.items() if c is obj)
                elif w not in waiting or waiting[w].poll():
                    continue  # its ready message is read through its pipe
                try:
                    waiting.pop(w).recv()
                except EOFError:
                    raise WorkerLost(
                        f"worker {w} exited while starting (exit code"
                        f" {self.procs[w].exitcode}); a script that starts local runs needs"
                        " `if __name__ == '__main__':` around them"
                    ) from None

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _loop(self, max_updates: float, max_time: float) -> None:
        rec = self.rec
        conn_of = {c: w for w, c in enumerate(self.conns)}
        sentinel_of = {p.sentinel: w for w, p in enumerate(self.procs)}
        while len(rec.update_time) < max_updates:
            now = self._now()
            if now >= max_time:
                break
            if not self._busy:
                raise RuntimeError("no worker is running and none may start")  # a policy bug
            oldest = min(job[3] for job in self._busy.values())
            crash = self._crashes[0][0] if self._crashes else math.inf
            timeout = min(max_time, oldest + self.worker_timeout, crash) - now
            live = [c for c, w in conn_of.items() if w not in self._gone]
            watch = [s for s, w in sentinel_of.items() if w not in self._gone]
            ready = wait([*live, *watch], max(timeout, 0.0))
            now = self._now()
            dead = []
            for obj in ready:
                if obj in sentinel_of:
                    dead.append(sentinel_of[obj])
                    continue
                w = conn_of[obj]
                try:
                    token, _loss = obj.recv()
                except (EOFError, OSError):
                    dead.append(w)
                    continue
                if w in self._busy and token == self._busy[w][0]:
                    self._arrive(w, now)
                if len(rec.update_time) >= max_updates:
                    return
            for w in dead:
                code = self.procs[w].exitcode
                self._lose(w, now, f"process exited (code {code})")
            while self._crashes and self._crashes[0][0] <= now:
                _, w = self._crashes.pop(0)
                if w not in self._gone:
                    self.procs[w].kill()
                    self._lose(w, now, "crashed (faults)")
            for w, job in list(self._busy.items()):
                if now - job[3] > self.worker_timeout:
                    self.procs[w].kill()
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
        if w in self._aliased:  # its gradient slot is about to be overwritten
            self.coord.own(self._aliased.pop(w))
        self._token[w] += 1
        slot = self._next_slot[w]
        self._next_slot[w] += 1
        delay = self.cluster.delay(w, now / self.unit) * self.unit if self.unit > 0 else 0.0
        ring = self._current
        self._readers[ring] += 1
        self._busy[w] = (self._token[w], v, slot, now, ring)
        with contextlib.suppress(OSError):  # it died: its sentinel says so next
            self.conns[w].send((self._token[w], slot, delay, ring))

    def _end(self, w: int) -> tuple[int, int, float]:
        """The worker's job is over: its read version, minibatch and start time."""
        _, read, slot, start, ring = self._busy.pop(w)
        self._readers[ring] -= 1
        return read, slot, start

    def _publish(self) -> None:
        """Copy the server's new version into a ring slot no running job reads."""
        free = next(i for i, n in enumerate(self._readers) if n == 0 and i != self._current)
        self._ring[free].copy_(self.server.params)
        self._current = free

    def _arrive(self, w: int, now: float) -> None:
        read, slot, start = self._end(w)
        gid = len(self.rec.fate)
        self.faults.corrupt_one(w, self._grads[w])
        d = self.coord.push(w, read, self._grads[w], now, gid=gid)
        fate = PENDING if d.decision.fate == Fate.BUFFERED else FATE_CODE[d.decision.fate]
        self.rec.gradient(w, slot, read, start, now, fate, d.decision.staleness)
        if d.decision.fate == Fate.BUFFERED:
            self._aliased[w] = gid
        self._follow(d.decision, now)
        self._start(w, now)

    def _lose(self, w: int, now: float, why: str) -> None:
        if w in self._gone:
            return
        self._gone.add(w)
        self.lost.append({"worker": w, "time": now, "why": why})
        if w in self._busy:
            read, slot, start = self._end(w)
            stale = self.policy.version - read
            self.rec.gradient(w, slot, read, start, now, CANCELLED, stale)
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
                read, slot, start = self._end(c)
                stale = self.policy.version - read
                self.rec.gradient(c, slot, read, start, now, CANCELLED, stale)
                self._start(c, now)  # the new job's message cancels the old one
        for r in d.release:
            self._start(r, now)

    def _shutdown(self) -> None:
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.send(None)
        deadline = time.perf_counter() + 2.0
        for p in self.procs:
            p.join(max(0.0, deadline - time.perf_counter()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(5.0)
        for c in self.conns:
            c.close()


def _context():
    """Workers fork from a server process that has imported torch and this module, and
    nothing else: starting one costs milliseconds after the first, and none inherits the
    driver's threads (forking a process that has run torch's thread pool can hang)."""
    ctx = tmp.get_context("forkserver")
    ctx.set_forkserver_preload(["hybridsgd.backends.local.worker"])
    return ctx


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to inherit
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = ["LocalBackend", "LocalResult", "available_cores", "worker_threads"]
