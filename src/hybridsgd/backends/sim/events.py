"""The simulator's event loop: virtual time, one heap, the policy decides everything.

Small on purpose (compare simpy's core): a heap of ``(time, worker, token)``. Each worker has
at most one pending arrival; a cancellation bumps the worker's token so its stale heap entry
is skipped. Ties in time are broken by worker index, so a seed reproduces a run bit for bit.
"""

from __future__ import annotations

import heapq
import math

from hybridsgd.backends.sim.schedule import CANCELLED, FATE_CODE, PENDING, Recorder, Schedule
from hybridsgd.policies.base import Policy
from hybridsgd.timing.cluster import Cluster


def run_events(
    policy: Policy, cluster: Cluster, max_updates: int | None, max_time: float | None
) -> Schedule:
    """Simulate until ``max_updates`` updates have fired or virtual time passes ``max_time``."""
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

    def start(w: int, t: float) -> None:
        v = request(w)
        if v is None:
            return
        read[w] = v
        began[w] = t
        slot[w] = next_slot[w]
        next_slot[w] += 1
        push_heap(heap, (t + delay(w, t), w, token[w]))

    for w in range(W):
        start(w, 0.0)
    pop = heapq.heappop
    while heap:
        t, w, tok = pop(heap)
        if tok != token[w]:
            continue  # this work was cancelled
        if t > max_time:
            break
        d = push(w, read[w], len(rec.fate), t)
        fate = PENDING if d.fate == "buffered" else code[d.fate]
        gradient(w, slot[w], read[w], began[w], t, fate, d.staleness)
        if d.update is not None:
            fired(d.update, t)
        for c in d.cancel:
            token[c] += 1
            gradient(c, slot[c], read[c], began[c], t, CANCELLED, policy.version - read[c])
            start(c, t)
        for r in d.release:
            start(r, t)
        start(w, t)
        if len(update_time) >= max_updates:
            break
    return rec.schedule("events")
