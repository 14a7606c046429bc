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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hybridsgd.core.faults import flip_labels
from hybridsgd.core.server import build_optimizer

#: a minibatch of the worker's stream by its number: (x, y)
Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def minibatches(task, sampler, classes: int = 0) -> Batches:
    """Minibatch k of a worker's stream; ``classes > 0``: a label-flipping (Byzantine)
    worker's, its labels flipped."""

    def batch(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = task.batch(sampler.batch(k))
        return (x, flip_labels(y, classes)) if classes else (x, y)

    return batch


def inner_optimizer(worker: Any, params: torch.Tensor) -> torch.optim.Optimizer:
    """The ``[worker]`` section's inner optimizer over ``params`` (a worker's parameters,
    or the simulator's stack of them)."""
    return build_optimizer(
        worker.optimizer, [params], worker.lr, "worker", **worker.inner_options()
    )


@dataclass(frozen=True)
class Span:
    """The minibatches of a job sized by time (``worker.steps = "time:T"``): ``steps`` of
    them from the ``first`` of the worker's stream (drawn with the job's time: the
    simulator, injected delays), or with ``seconds`` as many as the worker computes until
    that many seconds of its own clock have passed, at least one (a real clock)."""

    first: int
    steps: int = 0
    seconds: float = 0.0


class LocalSteps:
    """One worker's inner optimizer and parameters (``worker``: the ``[worker]`` section)."""

    def __init__(self, worker: Any, task) -> None:
        self.cfg, self.task = worker, task
        #: H of jobs sized by count (0 when sized by time: each job's Span says)
        self.steps: int = worker.steps if isinstance(worker.steps, int) else 0
        self.local: torch.Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None
        self._saved: dict | None = None
        self.loss = float("nan")
        self.taken = 0  # the steps of the last job

    def job(
        self,
        read: torch.Tensor,
        batches: Batches,
        j: int | Span,
        between: Callable[[], bool] | None = None,
    ) -> torch.Tensor | None:
        """The ``j``-th job from the parameters ``read`` (minibatches ``j H`` to ``j H + H -
        1``; or those of a :class:`Span`): its pseudo-gradient (a new tensor), the mean
        loss of its steps in :attr:`loss` and their number in :attr:`taken`. With
        ``between`` (asked between steps; True abandons the job, which returns None) the
        job can be undone."""
        if isinstance(j, Span):
            first, n, seconds = j.first, j.steps, j.seconds
        else:
            first, n, seconds = j * self.steps, self.steps, 0.0
        task = self.task
        if self.opt is None or self.cfg.reset_state:
            self.local = read.detach().clone()
            self.opt = inner_optimizer(self.cfg, self.local)
        local, opt = self.local, self.opt
        assert local is not None
        self._saved = copy.deepcopy(opt.state_dict()) if between is not None else None
        with torch.no_grad():
            local.copy_(read)
        grad = torch.empty_like(local)
        total, i, t0 = 0.0, 0, time.perf_counter()
        with task.bound_to(local):
            while i < n if not seconds else (i == 0 or time.perf_counter() - t0 < seconds):
                if i and between is not None and between():
                    self.undo()
                    return None
                x, y = batches(first + i)
                total += task.grad(local, x, y, out=grad)[1]
                local.grad = grad
                opt.step()
                local.grad = None
                i += 1
        self.loss, self.taken = total / i, i
        return quantized(read - local, task.shapes, self.cfg.quantize)

    def undo(self) -> None:
        """Forget the last job's steps: its result was never sent."""
        if self.opt is not None and self._saved is not None:
            self.opt.load_state_dict(self._saved)
        self._saved = None


#: the largest magnitude each format represents (int8's symmetric range; fp8 e4m3)
_LIMIT = {"int8": 127.0, "fp8": 448.0}


def quantized(delta: torch.Tensor, shapes: list, kind: str) -> torch.Tensor:
    """``delta`` (``[n]``, or ``[W, n]`` rows) as a worker sends it with ``worker.quantize``:
    each model tensor (of each row) scaled by its largest magnitude onto int8's -127..127
    (rounded to nearest, ties to even) or fp8 e4m3's range, and back. In place; "none"
    leaves it as it is."""
    if kind == "none":
        return delta
    offset = 0
    for shape in shapes:
        size = math.prod(shape)
        part = delta[..., offset : offset + size]
        offset += size
        amax = part.abs().amax(dim=-1, keepdim=True)
        scale = torch.where(amax > 0, amax / _LIMIT[kind], torch.ones_like(amax))
        if kind == "int8":
            part.copy_(torch.round(part / scale).clamp_(-127, 127) * scale)
        else:
            part.copy_((part / scale).to(torch.float8_e4m3fn).to(delta.dtype) * scale)
    return delta


def message_bytes(numel: int, shapes: list, kind: str) -> float:
    """The mean of a job's two messages in bytes: the parameters down (float32), the
    pseudo-gradient up (float32, or 1 byte an entry and a float32 scale per tensor)."""
    up = 4 * numel if kind == "none" else numel + 4 * len(shapes)
    return (4 * numel + up) / 2
