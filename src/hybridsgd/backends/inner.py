"""A worker's local steps (``[worker]``, docs/local-steps.md), the same on every backend.

A job is ``H`` steps of the worker's own (inner) optimizer from the version it read, on
minibatches ``j H, ..., j H + H - 1`` of its stream (its ``j``-th job); what it sends is the
pseudo-gradient, the version it read minus its parameters after the steps. The inner
optimizer keeps its state (momentum, Adam's moments) from job to job unless
``worker.reset_state``. A job whose result is not sent (cancelled: a new job arrived
first) leaves that state as it was: its steps are undone with :meth:`LocalSteps.undo`,
so that the state follows the jobs the worker finished, whatever the timing of a cancel.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch

from hybridsgd.core.server import build_optimizer

#: a minibatch of the worker's stream by its number: (x, y)
Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


class LocalSteps:
    """One worker's inner optimizer and parameters (``worker``: the ``[worker]`` section)."""

    def __init__(self, worker: Any, task) -> None:
        self.cfg, self.task = worker, task
        self.steps: int = worker.steps
        self.options = worker.inner_options()
        self.local: torch.Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None
        self._saved: dict | None = None
        self.loss = float("nan")

    def job(
        self,
        read: torch.Tensor,
        batches: Batches,
        j: int,
        between: Callable[[], bool] | None = None,
    ) -> torch.Tensor | None:
        """The ``j``-th job from the parameters ``read``: its pseudo-gradient (a new
        tensor), and the mean loss of its steps in :attr:`loss`. With ``between`` (asked
        between steps; True abandons the job, which returns None) the job can be undone."""
        task = self.task
        if self.opt is None or self.cfg.reset_state:
            self.local = read.detach().clone()
            self.opt = build_optimizer(
                self.cfg.optimizer, [self.local], self.cfg.lr, "worker", **self.options
            )
        local, opt = self.local, self.opt
        assert local is not None
        self._saved = copy.deepcopy(opt.state_dict()) if between is not None else None
        with torch.no_grad():
            local.copy_(read)
        grad = torch.empty_like(local)
        total = 0.0
        with task.bound_to(local):
            for i in range(self.steps):
                if i and between is not None and between():
                    self.undo()
                    return None
                x, y = batches(j * self.steps + i)
                total += task.grad(local, x, y, out=grad)[1]
                local.grad = grad
                opt.step()
                local.grad = None
        self.loss = total / self.steps
        return read - local

    def undo(self) -> None:
        """Forget the last job's steps: its result was never sent."""
        if self.opt is not None and self._saved is not None:
            self.opt.load_state_dict(self._saved)
        self._saved = None
