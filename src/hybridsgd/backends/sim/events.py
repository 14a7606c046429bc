"""The simulator's event loop: virtual time, one heap, the policy decides everything.

Small on purpose (compare simpy's core): a heap of ``(time, worker, token)``. Each worker has
at most one pending arrival; a cancellation bumps the worker's token so its stale heap entry
is skipped. Ties in time are broken by worker index, so a seed reproduces a run bit for bit.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from hybridsgd.backends.sim.schedule import APPLIED, CANCELLED, FATE_CODE, PENDING, Schedule
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
    rows: list[
        tuple[int, int, int, float, float, int]
    ] = []  # worker, slot, read, start, end, staleness
    g_fate: list[int] = []  # kept apart: an update rewrites the fates of its members
    g_update: list[int] = []
    g_sync: list[int] = []  # hybrid partition: update that used the synchronous part
    update_sync_tensors: list[int] = []
    update_time: list[float] = []
    update_regime: list[float] = []
    request, push, delay = policy.request, policy.push, cluster.delay
    push_heap = heapq.heappush
    code = FATE_CODE

    def start(w: int, t: float) -> None:
        v = request(w)
        if v is None:
            return
        read[w] = v
        began[w] = t
        slot[w] = next_slot[w]
        next_slot[w] += 1
        push_heap(heap, (t + delay(w, t), w, token[w]))

    def record(w: int, t: float, fate: int, staleness: int) -> None:
        rows.append((w, slot[w], read[w], began[w], t, staleness))
        g_fate.append(fate)
        g_update.append(-1)
        g_sync.append(-1)

    for w in range(W):
        start(w, 0.0)
    pop = heapq.heappop
    while heap:
        t, w, tok = pop(heap)
        if tok != token[w]:
            continue  # this work was cancelled
        if t > max_time:
            break
        gid = len(g_fate)
        d = push(w, read[w], gid, t)
        record(w, t, PENDING if d.fate == "buffered" else code[d.fate], d.staleness)
        up = d.update
        if up is not None:
            u = len(update_time)
            update_time.append(t)
            update_regime.append(up.regime)
            update_sync_tensors.append(up.sync_tensors)
            for m in up.members:
                g_fate[m] = APPLIED
                g_update[m] = u
            for m in up.sync_members or ():
                g_sync[m] = u
        for c in d.cancel:
            token[c] += 1
            record(c, t, CANCELLED, policy.version - read[c])
            start(c, t)
        for r in d.release:
            start(r, t)
        start(w, t)
        if len(update_time) >= max_updates:
            break

    i64 = np.int64
    cols = list(zip(*rows, strict=True)) if rows else [()] * 6
    return Schedule(
        worker=np.asarray(cols[0], dtype=i64),
        minibatch=np.asarray(cols[1], dtype=i64),
        read_version=np.asarray(cols[2], dtype=i64),
        start=np.asarray(cols[3], dtype=np.float64),
        end=np.asarray(cols[4], dtype=np.float64),
        fate=np.asarray(g_fate, dtype=np.int8),
        update=np.asarray(g_update, dtype=i64),
        staleness=np.asarray(cols[5], dtype=i64),
        update_time=np.asarray(update_time, dtype=np.float64),
        workers=W,
        path="events",
        update_regime=np.asarray(update_regime, dtype=np.float64),
        sync_update=np.asarray(g_sync, dtype=i64),
        update_sync_tensors=np.asarray(update_sync_tensors, dtype=i64),
    )
