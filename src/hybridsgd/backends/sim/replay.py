"""Replay a schedule's numerics: compute exactly the gradients it applied, on exactly the
parameters their workers read, and apply the updates in order.

The trick: a gradient that read version r is computed while the server is at version r,
so no parameter snapshot is ever kept. Gradients that read the same version and join the
same update share one batched forward/backward over their stacked minibatches (their mean
is all a linear aggregator needs); a robust aggregator gets one row per gradient from a
single vmapped call instead. Cancelled and dropped work is never computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hybridsgd.backends.sim.schedule import APPLIED, Schedule
from hybridsgd.core.aggregators import Aggregator
from hybridsgd.core.server import ParameterServer
from hybridsgd.core.staleness import StalenessRule
from hybridsgd.tasks.base import Task
from hybridsgd.tasks.data import WorkerSampler


@dataclass
class Evals:
    version: list[int] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)

    def add(self, version: int, time: float, loss: float, accuracy: float) -> None:
        self.version.append(version)
        self.time.append(time)
        self.loss.append(loss)
        self.accuracy.append(accuracy)


def replay(
    schedule: Schedule,
    task: Task,
    samplers: Sequence[WorkerSampler],
    server: ParameterServer,
    aggregator: Aggregator,
    staleness: StalenessRule,
    eval_every: int,
    on_update: Callable[[int], None] | None = None,
) -> Evals:
    """Apply every update of ``schedule`` to ``server``; evaluate every ``eval_every``."""
    U = schedule.n_updates
    applied = np.flatnonzero(schedule.fate == APPLIED)
    r_all, u_all = schedule.read_version[applied], schedule.update[applied]
    order = np.lexsort((applied, u_all, r_all))  # by read version, then update, then gid
    gids, r_sorted, u_sorted = applied[order], r_all[order], u_all[order]
    # boundaries of (read version, update) groups
    cut = np.flatnonzero((np.diff(r_sorted) != 0) | (np.diff(u_sorted) != 0)) + 1
    starts = np.concatenate([[0], cut]).astype(np.int64)
    ends = np.concatenate([cut, [len(gids)]]).astype(np.int64)
    group_r = r_sorted[starts] if len(starts) and len(gids) else np.empty(0, np.int64)
    workers, slots = schedule.worker, schedule.minibatch

    pending: dict[int, list[tuple[torch.Tensor, int, float]]] = {}
    evals = Evals()
    loss, acc = task.evaluate(server.params)
    evals.add(0, 0.0, loss, acc)
    g = 0  # next group
    n_groups = len(group_r) if len(gids) else 0
    for v in range(U):
        params = server.params
        while g < n_groups and group_r[g] == v:
            members = gids[starts[g] : ends[g]]
            u = int(u_sorted[starts[g]])
            idx = np.concatenate(
                [
                    samplers[w].batch(k)
                    for w, k in zip(workers[members], slots[members], strict=True)
                ]
            )
            x, y = task.batch(idx)
            scale = staleness.scale(u - v)
            if aggregator.linear:
                mean, _ = task.grad(params, x, y)
                pending.setdefault(u, []).append((mean[None], len(members), scale))
            else:
                m = len(members)
                rows = task.grads(params, x.view(m, -1, *x.shape[1:]), y.view(m, -1, *y.shape[1:]))
                pending.setdefault(u, []).append((rows, 1, scale))
            g += 1
        parts = pending.pop(v)
        rows = torch.cat([p[0] for p in parts])
        counts = torch.cat([torch.full((p[0].shape[0],), float(p[1])) for p in parts])
        scales = torch.cat([torch.full((p[0].shape[0],), float(p[2])) for p in parts])
        server.apply(aggregator(rows, counts, scales))
        version = v + 1
        if version % eval_every == 0 or version == U:
            loss, acc = task.evaluate(server.params)
            evals.add(version, float(schedule.update_time[v]), loss, acc)
        if on_update is not None:
            on_update(version)
    return evals
