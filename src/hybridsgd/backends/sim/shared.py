"""The event loop when the workers share processors (``timing.cores = C``) or the server
works on each gradient (``timing.server``) (issue 31).

A job has three parts (:meth:`~hybridsgd.timing.cluster.Cluster.parts`): its pull, its
compute and its push. The messages take their own time. The compute is *work*: the time it
takes with a processor to itself. While n jobs compute at once, each does work at the rate
min(1, C / n) (processor sharing, as an operating system's scheduler shares C cores among
n busy processes). So when the first workers of a synchronous round are done, the last ones
speed up; under ``async`` every job is slowed by all the others.

The server (when ``timing.server`` gives its work per gradient) takes the gradients one at
a time in the order they came, and shares the processors as one more computation while it
works; a gradient arrives (the policy sees it, the trace records its end) when the server
is done with it. A gradient whose job was cancelled while it waited is passed over.

Every computing job does work at the same rate, so the loop keeps one work clock V
(dV/dt = min(1, C / n)) and a heap of the V at which each job's work is done: its order
never changes, and the next to finish does so at ``now + (V_end - V) / rate``. Messages and
time budgets wait in a second heap, in time. Ties in time go by worker, then arrivals
before starts of compute before budgets (an arrival exactly at its budget is applied, as
in :func:`~hybridsgd.backends.sim.events.run_events`). With C >= W and no server nobody is
ever slowed, and :func:`~hybridsgd.backends.sim.simulate_schedule` takes the plain loop
instead. (Without ``cores`` the processors are as many as the computations.)
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence

from hybridsgd.backends.protocol import WorkerProtocol
from hybridsgd.errors import WorkerLost
from hybridsgd.policies.base import Policy
from hybridsgd.record import Recorder, Schedule
from hybridsgd.timing.cluster import Cluster

_ARRIVE, _COMPUTE, _BUDGET = 0, 1, 2  # what an entry of the time heap does, in tie order


def run_shared(
    policy: Policy,
    cluster: Cluster,
    max_updates: float | None,
    max_time: float | None,
    crashes: Sequence[tuple[float, int]] = (),
    shrink: bool = True,
) -> Schedule:
    """:func:`~hybridsgd.backends.sim.events.run_events` with the workers' computations
    sharing ``cluster.cores`` processors and a server that works on each gradient
    (``cluster.server``) (see the module doc)."""
    if cluster.step_time is not None:
        raise ValueError("jobs sized by time do not run on shared cores")
    loop = _Shared(policy, cluster)
    stopped = loop.run(
        max_updates if max_updates is not None else math.inf,
        max_time if max_time is not None else math.inf,
        list(crashes),
        shrink,
    )
    schedule = loop.rec.schedule("events")
    schedule.stopped = stopped
    return schedule


class _Shared:
    """The two heaps, the work clock and the protocol of one run (see the module doc)."""

    def __init__(self, policy: Policy, cluster: Cluster) -> None:
        W = policy.workers
        self.cluster = cluster
        self.cores = math.inf if cluster.cores is None else float(cluster.cores)
        self.rec = Recorder(W)
        self.server = W  # the server's index among the computations
        self.queue: deque[tuple[int, int]] = deque()  # gradients waiting for the server
        self.serving: tuple[int, int] | None = None  # the one it works on
        self.served = 0  # tokens of the server's work
        self.timed: list[tuple[float, int, int, int]] = []  # (time, worker, kind, token)
        self.work: list[tuple[float, int, int]] = []  # (work clock at its end, worker, token)
        self.computing: dict[int, int] = {}  # worker -> token of the job whose compute runs
        self.work_of, self.push_of = [0.0] * W, [0.0] * W
        self.now = self.v = 0.0  # the time, and the work clock V
        self.budgets = policy.budgets
        self.jobs = WorkerProtocol(policy, self.rec, launch=self.launch, finish=self.finish)

    def rate(self) -> float:
        n = len(self.computing)
        return 1.0 if n <= self.cores else self.cores / n

    def compute(self, w: int, tok: int) -> None:
        self.computing[w] = tok
        heapq.heappush(self.work, (self.v + self.work_of[w], w, tok))

    def launch(self, w: int, token: int, slot: int, t: float) -> tuple[int, int]:
        pull, self.work_of[w], self.push_of[w] = self.cluster.parts(w, t)
        if self.budgets is not None:
            heapq.heappush(self.timed, (t + self.budgets[w], w, _BUDGET, token))
        if pull > 0:
            heapq.heappush(self.timed, (t + pull, w, _COMPUTE, token))
        else:
            self.compute(w, token)
        return w, token

    def finish(self, handle: tuple[int, int]) -> None:
        w, tok = handle
        if self.computing.get(w) == tok:  # cancelled while it computed
            del self.computing[w]

    def deliver(self, w: int, tok: int, t: float) -> bool:
        """The job's gradient reached the server: it arrives now, or waits its turn;
        whether it arrived."""
        if self.cluster.server is None:
            self.jobs.arrive(w, t)
            return True
        self.queue.append((w, tok))
        if self.serving is None:
            self.serve()
        return False

    def serve(self) -> None:
        """The server takes the next gradient whose job still runs, if any."""
        while self.queue:
            w, tok = self.queue.popleft()
            if self.jobs.current(w, tok):
                self.serving, self.served = (w, tok), self.served + 1
                self.computing[self.server] = self.served
                work = self.cluster.server_work()
                heapq.heappush(self.work, (self.v + work, self.server, self.served))
                return
        self.serving = None

    def served_one(self, t: float) -> bool:
        """The server is done with a gradient: it arrives (unless its job was cancelled
        meanwhile) and the server takes the next; whether it arrived."""
        assert self.serving is not None
        (w, tok), self.serving = self.serving, None
        arrived = self.jobs.current(w, tok)
        if arrived:
            self.jobs.arrive(w, t)
        if self.serving is None:  # (arrive may have delivered nothing new: serve the queue)
            self.serve()
        return arrived

    def advance(self, t: float) -> None:
        self.v += (t - self.now) * self.rate()
        self.now = t

    def following(self) -> tuple[float, int, int, int]:
        """The next event (time, worker, kind, token); kind -1 is a compute that ends."""
        work, timed, computing = self.work, self.timed, self.computing
        token, busy = self.jobs.token, self.jobs.busy
        while work and computing.get(work[0][1]) != work[0][2]:
            heapq.heappop(work)  # cancelled while it computed
        while timed and (timed[0][3] != token[timed[0][1]] or not busy[timed[0][1]]):
            heapq.heappop(timed)  # its job was cancelled, or its worker lost
        best = timed[0] if timed else (math.inf, 0, 0, 0)
        if work:
            v_end, w, tok = work[0]
            t = self.now + max(0.0, v_end - self.v) / self.rate()
            if (t, w, _ARRIVE) < best[:3]:
                return t, w, -1, tok
        return best

    def step(self, t: float, w: int, kind: int, tok: int) -> bool:
        """Carry out the next event; whether a gradient arrived."""
        if kind == -1:  # its compute is done: the push follows
            heapq.heappop(self.work)
            self.advance(t)
            del self.computing[w]
            if w == self.server:
                return self.served_one(t)
            if self.push_of[w] > 0:
                heapq.heappush(self.timed, (t + self.push_of[w], w, _ARRIVE, tok))
                return False
        else:
            heapq.heappop(self.timed)
            self.advance(t)
            if kind == _COMPUTE:
                self.compute(w, tok)
                return False
            if kind == _BUDGET:
                self.jobs.overrun(w, t)
                return False
        return self.deliver(w, tok, t)

    def run(
        self, max_updates: float, max_time: float, crashes: list[tuple[float, int]], shrink: bool
    ) -> str:
        """Until ``max_updates`` updates or past ``max_time``; why it stopped early, if so."""
        jobs, update_time = self.jobs, self.rec.update_time
        for w in range(len(jobs.busy)):
            jobs.start(w, 0.0)
        while True:
            t, w, kind, tok = self.following()
            if t == math.inf:
                return ""  # nobody computes or sends (as the plain loop's empty heap)
            if crashes and crashes[0][0] <= t:  # a crash comes first (also on a tie)
                tc, cw = crashes.pop(0)
                if tc > max_time:
                    return ""
                self.advance(tc)
                try:
                    jobs.lose(cw, tc, shrink=shrink)
                except WorkerLost as exc:
                    return f"{exc} (at time {tc:g})"
            elif t > max_time:
                return ""
            elif not self.step(t, w, kind, tok):
                continue
            if len(update_time) >= max_updates:
                return ""
