"""The simulator's event loop: virtual time, one heap, the policy decides everything.

Small on purpose (compare simpy's core): a heap of ``(time, worker, token)``. Each worker has
at most one pending arrival; every job has a new token, so the heap entry of a cancelled job
is skipped. Ties in time are broken by worker index, so a seed reproduces a run bit for bit.
What happens to each job is the :class:`~hybridsgd.backends.protocol.WorkerProtocol` the
real backends follow too.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from hybridsgd.backends.protocol import WorkerProtocol
from hybridsgd.errors import WorkerLost
from hybridsgd.policies.base import Policy
from hybridsgd.record import Recorder, Schedule
from hybridsgd.timing.cluster import Cluster


def run_events(
    policy: Policy,
    cluster: Cluster,
    max_updates: float | None,
    max_time: float | None,
    crashes: Sequence[tuple[float, int]] = (),
    shrink: bool = True,
) -> Schedule:
    """Simulate until ``max_updates`` updates have fired or virtual time passes ``max_time``.

    ``crashes`` are ``(time, worker)`` pairs, sorted: the worker dies then, its work in
    flight is cancelled and the policy decides what follows (``shrink`` or fail, see
    :meth:`~hybridsgd.policies.QuorumPolicy.lose`). A loss the policy cannot absorb ends the
    schedule there, with the reason in ``Schedule.stopped``."""
    W = policy.workers
    max_updates = max_updates if max_updates is not None else math.inf
    max_time = max_time if max_time is not None else math.inf
    heap: list[tuple[float, int, int]] = []
    by_time = cluster.step_time is not None  # each job's minibatches drawn with its time
    rec = Recorder(W, steps=by_time)
    delay, push_heap = cluster.delay, heapq.heappush

    budgets = policy.budgets
    overrun = [0] * W  # the token of each worker's job that will overrun its budget (or 0)

    def launch(w: int, token: int, slot: int, t: float) -> None:
        if by_time:
            d, jobs.size[w] = cluster.job(w, t)
        else:
            d = delay(w, t)
        if budgets is not None and d > budgets[w]:  # abandoned when its budget is spent
            d, overrun[w] = budgets[w], token
        push_heap(heap, (t + d, w, token))

    jobs = WorkerProtocol(policy, rec, launch=launch)
    token, busy, arrive, update_time = jobs.token, jobs.busy, jobs.arrive, rec.update_time
    crashes = list(crashes)
    next_crash = crashes[0][0] if crashes else math.inf

    for w in range(W):
        jobs.start(w, 0.0)
    pop = heapq.heappop
    stopped = ""
    while heap:
        if heap[0][0] >= next_crash:  # a crash comes first (also on a tie)
            tc, cw = crashes.pop(0)
            next_crash = crashes[0][0] if crashes else math.inf
            if tc > max_time:
                break
            try:
                if not jobs.lose(cw, tc, shrink=shrink):
                    continue  # lost already
            except WorkerLost as exc:
                stopped = f"{exc} (at time {tc:g})"
                break
            if len(update_time) >= max_updates:
                break
            continue
        t, w, tok = pop(heap)
        if tok != token[w] or not busy[w]:
            continue  # this work was cancelled, or its worker lost
        if t > max_time:
            break
        if overrun[w] == tok:
            jobs.overrun(w, t)
            continue
        arrive(w, t)
        if len(update_time) >= max_updates:
            break
    schedule = rec.schedule("events")
    schedule.stopped = stopped
    return schedule
