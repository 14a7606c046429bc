"""Local steps in the simulator's replay (``[worker]``, docs/local-steps.md).

A job is ``H`` steps of the worker's own (inner) optimizer from the version it read, on
minibatches ``j H, ..., j H + H - 1`` of its stream (its ``j``-th job), and what it sends
is the pseudo-gradient: the version it read minus its parameters after the steps. The
server's optimizer then steps with the pseudo-gradients exactly as it steps with
gradients (the outer optimizer), through the same aggregator, staleness rule, gradient
check and faults: only what a job computes changes, so this is the replay of
:mod:`~hybridsgd.backends.sim.replay` with another ``read_at``.

A worker's inner optimizer keeps its state (momentum, Adam's moments) from job to job, as
DiLoCo's workers do, unless ``worker.reset_state`` (:mod:`hybridsgd.backends.inner`, the
same code a local worker runs). The state follows the jobs a worker finished and sent:
applied ones, and dropped ones (late, but their steps were taken), not cancelled ones,
as on a real worker. Each worker's jobs are computed in the order the worker ran them:
every job read at version v is computed when the replay is at v, and a worker's next job
reads the same or a later version.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import torch

from hybridsgd.backends.inner import LocalSteps
from hybridsgd.backends.sim.replay import _Replay
from hybridsgd.core.faults import flip_labels
from hybridsgd.record import APPLIED, DROPPED


class InnerSteps:
    """Every worker's :class:`~hybridsgd.backends.inner.LocalSteps` in one run's replay."""

    def __init__(self, worker: Any, task, samplers, faults) -> None:
        self.task, self.samplers, self.faults = task, samplers, faults
        self.workers = [LocalSteps(worker, task) for _ in samplers]
        flips = any(faults.flips_labels(w) for w in range(len(samplers)))
        self.classes = int(task.y_train.max()) + 1 if flips else 0

    def job(self, w: int, read: torch.Tensor, j: int) -> torch.Tensor:
        """Worker ``w``'s ``j``-th job from the parameters ``read``: its pseudo-gradient."""
        task, sampler, flips = self.task, self.samplers[w], self.faults.flips_labels(w)

        def batches(k: int) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = task.batch(sampler.batch(k))
            return (x, flip_labels(y, self.classes)) if flips else (x, y)

        delta = self.workers[w].job(read, batches, j)
        assert delta is not None  # (nothing abandons a simulated job)
        return delta


class LocalStepsReplay(_Replay):
    """A run's replay whose jobs are local steps (see the module doc)."""

    def __init__(self, *args: Any, inner: InnerSteps) -> None:
        super().__init__(*args)
        self.inner = inner
        s, gs = self.schedule, self.gs
        # every job is a lone gradient here: an update that takes one job alone gets its
        # parts as they are, the others flat rows (settle's rule, counted in jobs)
        counts = s.update[gs.gids]
        self.groups_per_update = (
            np.bincount(counts, minlength=self.U).tolist() if len(counts) else [0] * self.U
        )
        # the jobs whose result a worker sent: applied, and dropped (late, finished all the
        # same: its steps moved the worker's inner state), by read version, then in the
        # order each worker ran them
        done = np.flatnonzero((s.fate == APPLIED) | (s.fate == DROPPED))
        self.jobs = done[np.lexsort((done, s.read_version[done]))].tolist()
        self.read: list[int] = s.read_version[self.jobs].tolist()
        self.position = {int(gid): a for a, gid in enumerate(gs.gids.tolist())}
        self.k = bisect.bisect_left(self.read, self.first)

    def plan_versions(self, batch_versions: bool | None) -> None:
        super().plan_versions(False)  # each job from its own version, in order

    def read_at(self, v: int) -> None:
        """Each job read at ``v``, on its worker; an applied job's pseudo-gradient is taken
        as a lone gradient is (checked, faulted, scaled for staleness)."""
        s, task, params = self.schedule, self.task, self.server.params
        while self.k < len(self.jobs) and self.read[self.k] == v:
            gid = self.jobs[self.k]
            self.k += 1
            self.doing = [self.position.get(gid, 0)]
            delta = self.inner.job(int(s.worker[gid]), params, int(s.minibatch[gid]))
            if s.fate[gid] == APPLIED:
                a, u = self.position[gid], int(s.update[gid])
                parts = list(task.unflatten(delta).values())
                self.settle(parts, a, u, self.staleness.scale(u - v), False)
