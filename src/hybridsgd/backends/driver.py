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

from hybridsgd.backends.inner import Span
from hybridsgd.backends.protocol import WorkerProtocol
from hybridsgd.coordinator import Coordinator
from hybridsgd.core.faults import Faults
from hybridsgd.errors import WorkerLost
from hybridsgd.policies.base import Decision, Fate, Update
from hybridsgd.record import Recorder, Schedule
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
    # with fine snapshots: every other version's parameters, up to ``fine_until`` (the
    # versions after it were not kept: the budget ran out)
    fine: list[tuple[int, float, torch.Tensor]] = field(default_factory=list)
    fine_until: int | None = None
    pids: list[int]
    lost: list[dict] = field(default_factory=list)  # {worker, time, why}
    interrupted: bool = False
    error: str | None = None  # why the run stopped early (a loss the policy cannot absorb)
    startup_s: float = 0.0
    restarts: list[int] = field(default_factory=list)  # per worker (backends that restart)
    shared: list[int] = field(default_factory=list)  # workers reached through shared memory
    hung: list[int] = field(default_factory=list)  # workers that had to be killed at the end
    devices: list[str] = field(default_factory=list)  # where each worker computed
    # the driver's own CPU seconds from its first job to its last update (its thread's
    # time: what `hybridsgd profile` takes as the server's work, timing.server)
    server_cpu_s: float = 0.0


#: bytes of parameter copies a real run keeps between its snapshots for an exact time to
#: target (every version until the budget is spent: 512 MiB is about 27,900 versions of
#: mlp-digits' 4,810 parameters, 660 of mlp-mnist's 203,530)
FINE_BUDGET = 512 << 20


class _Keep:
    """Storage for the versions a run keeps (its snapshots, and the fine ones), allocated
    and touched before the run's clock starts.

    A fresh ``clone()`` of the parameters lands on new pages, and the page faults were the
    largest part of the driver's work per update with fine snapshots: on this project's
    2-core machine, 660 faults a version of mlp-mnist's 512x512 model cost 0.4-6.4 ms, as
    much as the optimizer step and more, and made the same run's throughput differ 2x from
    one run to the next. With a known number of updates the storage for ``versions`` of
    them (within FINE_BUDGET) is made once, up front; a copy into it is a plain memory
    copy. Past it, in runs bounded only by time, and in runs without fine snapshots (whose
    snapshots, one every ``run.eval_every`` updates, spread their faults thin), versions
    are cloned."""

    def __init__(self, params: torch.Tensor, versions: int) -> None:
        per = params.numel() * params.element_size()
        n = int(min(FINE_BUDGET // max(per, 1), versions))
        self.rows = torch.zeros(n, params.numel(), dtype=params.dtype) if n > 0 else None
        self.used = 0

    def __call__(self, params: torch.Tensor) -> torch.Tensor:
        if self.rows is None or self.used >= len(self.rows):
            return host_copy(params)
        row = self.rows[self.used]
        row.copy_(params)
        self.used += 1
        return row


def host_copy(params: torch.Tensor) -> torch.Tensor:
    """A copy of ``params`` in CPU memory, where a run's kept versions are evaluated (the
    server may be on a GPU: ``run.local.server``)."""
    return params.detach().to("cpu", copy=True)


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
        fine_snapshots: bool = False,
        worker: Any = None,
        loads: Sequence[float] | None = None,
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
        self.worker = worker  # the [worker] section when jobs are local steps, else None
        #: each worker's real CPU work per job, a multiple of its own (run.worker_load)
        self.loads = [1.0] * len(self.samplers) if loads is None else [float(x) for x in loads]
        #: T of jobs sized by time (worker.steps = "time:T"), else None
        self.step_time: float | None = None if worker is None else worker.step_time
        self._crashes = list(self.faults.crashes)  # (seconds, worker), sorted
        #: a time budget per job (MindFlayer: Policy.budgets, in the timing model's units,
        #: so seconds times run.time_unit, or seconds without injected delays): when each
        #: worker's running job is abandoned, if it has not arrived by then
        budgets = self.policy.budgets
        scale = time_unit if time_unit > 0 else 1.0
        self._budgets = None if budgets is None else [b * scale for b in budgets]
        self._deadline = [math.inf] * self.W
        self.rec = Recorder(self.W, steps=self.step_time is not None)
        self.snapshots: list[tuple[int, float, torch.Tensor]] = []
        #: every version between the snapshots too, for an exact time to target found after
        #: the run (hybridsgd.target), up to FINE_BUDGET bytes; None: not kept
        self.fine: list[tuple[int, float, torch.Tensor]] | None = [] if fine_snapshots else None
        self.fine_until: int | None = None
        self._keep: Callable[[torch.Tensor], torch.Tensor] = host_copy
        self.lost: list[dict] = []
        #: every worker's job, followed as the simulator follows it (the transport's data of
        #: a job is its handle)
        self.jobs = WorkerProtocol(
            self.policy,
            self.rec,
            launch=self._job,
            request=coordinator.request,
            push=self._push,
            decide_loss=coordinator.lose,
            finish=self._finish,
            on_update=self._updated,
            on_cancel=self._cancelling,
        )
        self._gone = self.jobs.lost
        self._aliased: dict[int, int] = {}  # worker -> gid held in a buffer it will overwrite
        self._messages: dict[int, tuple[float, float]] = {}  # worker -> its arriving job's
        self._sent = [0.0] * self.W  # when each worker's job was sent (time.perf_counter)
        self.pids: list[int] = []
        self.restarts = [0] * self.W
        self.hung: list[int] = []  # workers that did not stop when asked at the end

    def worker_of(self, w: int) -> Any:
        """Worker ``w``'s own ``[worker]`` section (its H), or None for plain gradients."""
        return None if self.worker is None else self.worker.of_worker(w)

    # -- the run -------------------------------------------------------------------------
    def run(self, max_updates: float | None = None, max_time: float | None = None) -> RealResult:
        """Train until ``max_updates`` updates or ``max_time`` seconds, Ctrl-C, or a loss
        the policy cannot absorb; every worker is stopped before this returns."""
        max_updates = max_updates if max_updates is not None else math.inf
        max_time = max_time if max_time is not None else math.inf
        interrupted, error, startup = False, None, 0.0
        driver_threads = torch.get_num_threads()
        cpu = [0.0, 0.0]
        try:
            t = time.perf_counter()
            self._open()
            if self.fine is not None and math.isfinite(max_updates):  # (workers idle yet)
                self._keep = _Keep(self.server.params, int(max_updates) + 1)
            startup = time.perf_counter() - t
            if self.progress is not None:  # the workers are up: version 0
                self.progress(0)
            torch.set_num_threads(1)  # the driver's steps are small; leave the cores to workers
            self._t0 = time.perf_counter()
            self.snapshots.append((0, 0.0, host_copy(self.server.params)))
            cpu[0] = time.thread_time()
            for w in range(self.W):
                self._start(w, 0.0)
            self._loop(max_updates, max_time)
            cpu[1] = time.thread_time()
        except KeyboardInterrupt:
            interrupted = True
        except WorkerLost as exc:
            error = str(exc)
        finally:
            try:  # the final parameters, before _close stops whatever holds them
                version = self.server.version
                if self.snapshots and self.snapshots[-1][0] != version:
                    t_end = self.rec.update_time[-1] if self.rec.update_time else 0.0
                    self.snapshots.append((version, t_end, host_copy(self.server.params)))
            finally:
                self._close()
                torch.set_num_threads(driver_threads)
        return RealResult(
            schedule=self.rec.schedule(self.name),
            snapshots=self.snapshots,
            fine=self.fine or [],
            fine_until=self.fine_until,
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
            server_cpu_s=max(0.0, cpu[1] - cpu[0]),
        )

    name = "real"

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _wait_budget(self, now: float, max_time: float) -> float:
        """Seconds until the next thing that needs the driver without a message: the time
        limit, the oldest job's timeout, the next injected crash."""
        jobs = self.jobs
        started = [jobs.began[w] for w in range(self.W) if jobs.busy[w]]
        if not started:
            raise RuntimeError("no worker is running and none may start")  # a policy bug
        oldest = min(started)
        crash = self._crashes[0][0] if self._crashes else math.inf
        spent = math.inf  # the next time budget to run out (MindFlayer)
        if self._budgets is not None:
            spent = min((self._deadline[w] for w in range(self.W) if jobs.busy[w]), default=spent)
        return max(0.0, min(max_time, oldest + self.worker_timeout, crash, spent) - now)

    def _overdue(self, now: float, kill: Callable[[int], None]) -> None:
        """Carry out injected crashes that are due and lose silent workers."""
        while self._crashes and self._crashes[0][0] <= now:
            _, w = self._crashes.pop(0)
            if w not in self._gone:
                kill(w)
                self._lose(w, now, "crashed (faults)")
        jobs = self.jobs
        if self._budgets is not None:
            for w in range(self.W):
                if jobs.busy[w] and self._deadline[w] <= now:
                    self._overran(w, now)
        for w in range(self.W):
            if jobs.busy[w] and now - jobs.began[w] > self.worker_timeout:
                kill(w)
                self._lose(
                    w, now, f"no answer within run.worker_timeout = {self.worker_timeout:g} s"
                )

    # -- events: the worker protocol, and what a real backend adds to it --------------------
    def _start(self, w: int, now: float) -> None:
        self.jobs.start(w, now)

    def _current(self, w: int, token: int) -> bool:
        """Whether a result for ``token`` is the worker's job in progress (not cancelled)."""
        return self.jobs.current(w, token)

    def _arrive(
        self,
        w: int,
        now: float,
        grad: torch.Tensor,
        steps: int = 0,
        worker_clock: tuple[float, float] | None = None,
    ) -> None:
        """Worker ``w``'s job delivered ``grad``; ``steps``: the minibatches it computed
        (jobs sized by time); ``worker_clock``: when the worker had the job and when it
        sent the gradient, by ``time.perf_counter`` on this machine. With it the job's
        messages are timed apart (:attr:`Recorder.messages`): the pull from the moment the
        driver sent the job to the worker's, the push from the worker's send to ``now``."""
        if self._budgets is not None and self._deadline[w] <= now:
            self._overran(w, now)  # its deadline passed first (a busy driver saw both late)
            return
        if steps and self.step_time is not None:
            self.jobs.size[w] = steps
        if worker_clock is not None:
            got, sent = worker_clock
            self._messages[w] = (got - self._sent[w], self._t0 + now - sent)
        self.jobs.arrive(w, now, grad)

    def _cancel(self, w: int, now: float) -> None:
        """Record the worker's job in flight as cancelled."""
        self.jobs.cancel(w, now)

    def _lose(self, w: int, now: float, why: str) -> None:
        if w not in self._gone:
            self.lost.append({"worker": w, "time": now, "why": why})
        self.jobs.lose(w, now, shrink=self.shrink)

    def _overran(self, w: int, now: float) -> None:
        """Worker ``w``'s job spent its time budget (MindFlayer): the worker is told (the
        transport's cancel), the job recorded as abandoned, and the worker starts again."""
        self._deadline[w] = math.inf
        self._cancelling(w, self.jobs.token[w])
        self.jobs.overrun(w, now)

    def _job(self, w: int, token: int, slot: int, now: float) -> Any:
        """Launch a job the protocol started: the injected delay, then the transport."""
        if w in self._aliased:  # its gradient buffer is about to be overwritten
            self.coord.own(self._aliased.pop(w))
        job: int | Span = slot  # which minibatches: the worker's slot-th
        cluster = self.cluster if self.unit > 0 else None  # injected delays
        if self.step_time is None:
            delay = cluster.delay(w, now / self.unit) * self.unit if cluster else 0.0
        elif cluster is not None:  # sized by time: its steps drawn with its time, as simulated
            d, self.jobs.size[w] = cluster.job(w, now / self.unit)
            delay, job = d * self.unit, Span(self.jobs.position[w], self.jobs.size[w])
        else:  # by the worker's own clock, in seconds; it says how many steps it took
            delay, job = 0.0, Span(self.jobs.position[w], seconds=self.step_time)
        if self._budgets is not None:  # past its budget, the job is abandoned; an injected
            # delay says at once whether it will be (as the simulator decides), so a timer's
            # jitter never abandons a job that fits
            budget = self._budgets[w]
            fits = cluster is not None and delay <= budget
            self._deadline[w] = math.inf if fits else now + budget
        self._sent[w] = time.perf_counter()
        return self._launch(w, token, job, delay)

    def _push(self, w: int, read: int, gid: int, now: float, grad: torch.Tensor) -> Decision:
        """A gradient to the coordinator (corrupted first where its worker is faulty)."""
        if (timed := self._messages.pop(w, None)) is not None:
            self.rec.messages[gid] = timed
        self.faults.corrupt_one(w, grad)
        d = self.coord.push(w, read, grad, now, gid=gid).decision
        if d.fate == Fate.BUFFERED and self.aliases_gradients:
            self._aliased[w] = gid
        return d

    def _updated(self, update: Update, now: float) -> None:
        """A new version: publish it, record rejections, keep a snapshot to evaluate."""
        self._publish()
        for gid, why in self.coord.rejected:
            self.rec.reject(gid, why)
        self.coord.rejected.clear()
        v = update.version
        if v % self.eval_every == 0:
            self.snapshots.append((v, now, self._keep(self.server.params)))
        elif self.fine is not None and self.fine_until is None:
            if (len(self.fine) + 1) * self.server.params.numel() * 4 > FINE_BUDGET:
                self.fine_until = v - 1  # no room for more: the search stops short there
            else:
                self.fine.append((v, now, self._keep(self.server.params)))
        if self.progress is not None:
            self.progress(v)

    def _cancelling(self, w: int, token: int) -> None:
        """A decision cancels worker ``w``'s job ``token`` (a transport may tell it)."""

    # -- the transport ---------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _loop(self, max_updates: float, max_time: float) -> None:
        raise NotImplementedError

    def _launch(self, w: int, token: int, job: int | Span, delay: float) -> Any:
        """Send worker ``w`` job ``token`` on the current version, on minibatches ``job``
        (its slot, or a :class:`~hybridsgd.backends.inner.Span`); return what ``_finish``
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
