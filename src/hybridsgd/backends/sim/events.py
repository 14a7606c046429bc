"""The simulator's event loop: virtual time, one heap, the policy decides everything.

Small on purpose (compare simpy's core): a heap of ``(time, worker, token)``. Each worker has
at most one pending arrival; a cancellation bumps the worker's token so its stale heap entry
is skipped. Ties in time are broken by worker index, so a seed reproduces a run bit for bit.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

from hybridsgd.errors import WorkerLost
from hybridsgd.policies.base import Policy
from hybridsgd.record import CANCELLED, FATE_CODE, PENDING, Recorder, Schedule
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
    token = [0] * W
    read = [0] * W
    began = [0.0] * W
    slot = [0] * W  # minibatch index of the current work
    next_slot = [0] * W
    rec = Recorder(W)
    request, push, delay = policy.request, policy.push, cluster.delay
    push_heap = heapq.heappush
    code = FATE_CODE
    gradient, fired, update_time = rec.gradient, rec.fired, rec.update_time

    busy = [False] * W
    lost: set[int] = set()
    crashes = list(crashes)
    next_crash = crashes[0][0] if crashes else math.inf

    def start(w: int, t: float) -> None:
        if w in lost:
            return
        v = request(w)
        if v is None:
            return
        read[w] = v
        began[w] = t
        slot[w] = next_slot[w]
        next_slot[w] += 1
        busy[w] = True
        push_heap(heap, (t + delay(w, t), w, token[w]))

    def follow(d, t: float) -> None:
        if d.update is not None:
            fired(d.update, t)
        for c in d.cancel:
            token[c] += 1
            busy[c] = False
            gradient(c, slot[c], read[c], began[c], t, CANCELLED, policy.version - read[c])
            start(c, t)
        for r in d.release:
            start(r, t)

    for w in range(W):
        start(w, 0.0)
    pop = heapq.heappop
    stopped = ""
    while heap:
        if heap[0][0] >= next_crash:  # a crash comes first (also on a tie)
            tc, cw = crashes.pop(0)
            next_crash = crashes[0][0] if crashes else math.inf
            if tc > max_time:
                break
            if cw in lost:
                continue
            lost.add(cw)
            rec.lost.append((tc, cw))
            if busy[cw]:
                token[cw] += 1
                busy[cw] = False
                stale = policy.version - read[cw]
                gradient(cw, slot[cw], read[cw], began[cw], tc, CANCELLED, stale)
            try:
                follow(policy.lose(cw, tc, shrink=shrink), tc)
            except WorkerLost as exc:
                stopped = f"{exc} (at time {tc:g})"
                break
            if len(update_time) >= max_updates:
                break
            continue
        t, w, tok = pop(heap)
        if tok != token[w]:
            continue  # this work was cancelled
        if t > max_time:
            break
        busy[w] = False
        d = push(w, read[w], len(rec.fate), t)
        fate = PENDING if d.fate == "buffered" else code[d.fate]
        gradient(w, slot[w], read[w], began[w], t, fate, d.staleness)
        follow(d, t)
        start(w, t)
        if len(update_time) >= max_updates:
            break
    schedule = rec.schedule("events")
    schedule.stopped = stopped
    return schedule
