"""Local steps in the simulator's replay (``[worker]``, docs/local-steps.md).

A job is ``H`` steps of the worker's own (inner) optimizer from the version it read, on
minibatches ``j H, ..., j H + H - 1`` of its stream (its ``j``-th job), and what it sends
is the pseudo-gradient: the version it read minus its parameters after the steps. The
server's optimizer then steps with the pseudo-gradients exactly as it steps with
gradients (the outer optimizer), through the same aggregator, staleness rule, gradient
check and faults: only what a job computes changes, so this is the replay of
:mod:`~hybridsgd.backends.sim.replay` with another ``read_at``.

A worker's inner optimizer keeps its state (momentum, Adam's moments) from job to job, as
DiLoCo's workers do, unless ``worker.reset_state``. Each worker's jobs are computed in the
order the worker ran them: every job read at version v is computed when the replay is at
v, and a worker's next job reads the same or a later version.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hybridsgd.backends.sim.replay import _Replay
from hybridsgd.core.faults import flip_labels
from hybridsgd.core.server import build_optimizer


class InnerSteps:
    """Each worker's inner optimizer and parameters, and the jobs they compute."""

    def __init__(self, worker: Any, task, samplers, faults) -> None:
        self.cfg, self.task, self.samplers, self.faults = worker, task, samplers, faults
        self.steps: int = worker.steps
        self.options = worker.inner_options()
        self.state: dict[int, tuple[torch.Tensor, torch.optim.Optimizer]] = {}

    def job(self, w: int, read: torch.Tensor, j: int) -> torch.Tensor:
        """Worker ``w``'s ``j``-th job from the parameters ``read``: its pseudo-gradient."""
        task = self.task
        if w not in self.state or self.cfg.reset_state:
            local = read.detach().clone()
            opt = build_optimizer(
                self.cfg.optimizer, [local], self.cfg.lr, "worker", **self.options
            )
            self.state[w] = (local, opt)
        local, opt = self.state[w]
        with torch.no_grad():
            local.copy_(read)
        grad = torch.empty_like(local)
        with task.bound_to(local):
            for i in range(self.steps):
                x, y = task.batch(self.samplers[w].batch(j * self.steps + i))
                if self.faults.flips_labels(w):
                    y = flip_labels(y, int(task.y_train.max()) + 1)
                task.grad(local, x, y, out=grad)
                local.grad = grad
                opt.step()
                local.grad = None
        return read - local


class LocalStepsReplay(_Replay):
    """A run's replay whose jobs are local steps (see the module doc)."""

    def __init__(self, *args: Any, inner: InnerSteps) -> None:
        super().__init__(*args)
        self.inner = inner
        # every job is a lone gradient here: an update that takes one job alone gets its
        # parts as they are, the others flat rows (settle's rule, counted in jobs)
        counts = self.schedule.update[self.gs.gids]
        self.groups_per_update = (
            np.bincount(counts, minlength=self.U).tolist() if len(counts) else [0] * self.U
        )

    def plan_versions(self, batch_versions: bool | None) -> None:
        super().plan_versions(False)  # each job from its own version, in order

    def compute_group(self, g: int, v: int) -> None:
        """Each job of group ``g`` (read at ``v``) on its worker, its pseudo-gradient taken
        as a lone gradient is (checked, faulted, scaled for staleness)."""
        gs, task, params = self.gs, self.task, self.server.params
        for a in range(gs.starts[g], gs.ends[g]):
            self.doing = [a]
            delta = self.inner.job(gs.worker[a], params, gs.minibatch[a])
            parts = list(task.unflatten(delta).values())
            u = gs.update[g]
            self.settle(parts, a, u, self.staleness.scale(u - v), False)
