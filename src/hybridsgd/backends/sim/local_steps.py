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
import copy
from typing import Any

import numpy as np
import torch

from hybridsgd.backends.inner import LocalSteps, Span, inner_optimizer, minibatches, quantized
from hybridsgd.backends.sim.replay import _Replay
from hybridsgd.record import APPLIED, DROPPED

#: inner optimizers whose step is elementwise, with a step count per tensor: W workers'
#: parameters stacked as one [W, n] tensor step exactly as W tensors of n do
STACKABLE = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adamax")


class InnerSteps:
    """Every worker's :class:`~hybridsgd.backends.inner.LocalSteps` in one run's replay.

    While every worker has finished the same jobs (a synchronous run: every round, one job
    from each worker, all read at the same version), the W workers' steps run side by
    side: their parameters are the rows of one ``[W, n]`` tensor, the gradients of a step
    one vmapped call (:meth:`Task.grads_at`), and one inner optimizer steps the stack,
    which for the :data:`STACKABLE` optimizers is each worker's own step, row by row. The
    first round that is not such a round splits the stack into each worker's parameters
    and state, and the jobs run one at a time from then on."""

    def __init__(self, worker: Any, task, samplers, faults) -> None:
        self.cfg, self.task = worker, task
        W = len(samplers)
        self.workers = [LocalSteps(worker.of_worker(w), task) for w in range(W)]
        classes = int(task.y_train.max()) + 1 if any(map(faults.flips_labels, range(W))) else 0
        self.batches = [
            minibatches(task, samplers[w], classes if faults.flips_labels(w) else 0)
            for w in range(W)
        ]
        #: the stacked parameters and their optimizer while the workers are in lockstep
        self.lockstep = (
            worker.optimizer.lower() in STACKABLE and len(samplers) > 1 and worker.uniform
        )
        self.stack: torch.Tensor | None = None
        self.opt: torch.optim.Optimizer | None = None

    def job(self, w: int, read: torch.Tensor, j: int | Span) -> torch.Tensor:
        """Worker ``w``'s ``j``-th job (or the job of a :class:`Span`) from the parameters
        ``read``: its pseudo-gradient."""
        self.split()
        delta = self.workers[w].job(read, self.batches[w], j)
        assert delta is not None  # (nothing abandons a simulated job)
        return delta

    def round(self, read: torch.Tensor, js: list[int]) -> torch.Tensor | None:
        """Every worker's job from ``read`` (worker w's ``js[w]``-th), side by side: the
        pseudo-gradients as rows; None when the model cannot be vmapped (then nothing
        changed, and the workers go one at a time from now on)."""
        H, W, cfg = self.cfg.steps_of(0), len(self.workers), self.cfg
        if self.stack is None or cfg.reset_state:
            self.stack = read.detach().expand(W, -1).clone()
            self.opt = inner_optimizer(cfg, self.stack)
        stack, opt = self.stack, self.opt
        assert opt is not None
        with torch.no_grad():
            stack.copy_(read.expand(W, -1))
        for i in range(H):
            pairs = [self.batches[w](js[w] * H + i) for w in range(W)]
            xs, ys = torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])
            try:
                stack.grad = self.task.grads_at(stack, xs, ys)
            except Exception:  # a model torch.func cannot batch: one at a time instead
                if i:  # (it batched before: a real error, said with its cause)
                    raise
                self.split()  # (no step of this round was taken: the state is the last's)
                return None
            opt.step()
            stack.grad = None
        return quantized(read[None] - stack, self.task.shapes, cfg.quantize)

    def split(self) -> None:
        """Out of lockstep: each worker takes its row of the stack and of its optimizer's
        state, and goes on alone."""
        self.lockstep = False
        if self.stack is None or self.opt is None:
            return
        state = self.opt.state[self.stack]
        for w, one in enumerate(self.workers):
            one.local = self.stack[w].detach().clone()
            one.opt = inner_optimizer(one.cfg, one.local)
            one.opt.state[one.local] = {
                k: (v[w].clone() if torch.is_tensor(v) and v.dim() else _copy(v))
                for k, v in state.items()
            }
        self.stack, self.opt = None, None

    def state(self) -> dict[str, Any]:
        """The inner optimizers' state, for a checkpoint (each worker's, or the stack's)."""

        def of(opt: torch.optim.Optimizer | None) -> dict | None:
            return None if opt is None else copy.deepcopy(opt.state_dict())

        return {
            "lockstep": self.lockstep,
            "stack": of(self.opt),
            "workers": [of(one.opt) for one in self.workers],
        }

    def load(self, state: dict[str, Any], numel: int, device: torch.device) -> None:
        """Restore :meth:`state` (each optimizer rebuilt on fresh parameters: a job's
        parameters are overwritten by the version it reads before its first step)."""
        self.lockstep = state["lockstep"]
        cfg = self.cfg
        if state["stack"] is not None:
            self.stack = torch.zeros(len(self.workers), numel, device=device)
            self.opt = inner_optimizer(cfg, self.stack)
            self.opt.load_state_dict(state["stack"])
        for one, saved in zip(self.workers, state["workers"], strict=True):
            if saved is not None:
                one.local = torch.zeros(numel, device=device)
                one.opt = inner_optimizer(one.cfg, one.local)
                one.opt.load_state_dict(saved)


def _copy(value: Any) -> Any:
    return value.clone() if torch.is_tensor(value) else value


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
        #: jobs sized by time: where each job's minibatches begin in its worker's stream,
        #: after those of every earlier job the worker sent (a cancelled one sent none)
        self.begins: np.ndarray | None = None
        if s.steps is not None:
            self.begins = np.zeros(len(s.steps), dtype=np.int64)
            for w in range(s.workers):
                rows = np.flatnonzero(s.worker == w)
                self.begins[rows] = np.cumsum(s.steps[rows]) - s.steps[rows]
        self.k = bisect.bisect_left(self.read, self.first)
        if self.resumed is not None and self.resumed.inner is not None:
            params = self.server.params
            inner.load(self.resumed.inner, params.numel(), params.device)

    def span(self, gid: int) -> int | Span:
        """Which minibatches job ``gid`` computed: its slot j (H of them from j H), or, for
        jobs sized by time, the :class:`Span` of its steps."""
        s = self.schedule
        if self.begins is None or s.steps is None:
            return int(s.minibatch[gid])
        return Span(int(self.begins[gid]), int(s.steps[gid]))

    def inner_state(self) -> Any:
        return self.inner.state()

    def plan_versions(self, batch_versions: bool | None) -> None:
        super().plan_versions(False)  # each job from its own version, in order

    def read_at(self, v: int) -> None:
        """Each job read at ``v``, on its worker (all side by side in a lockstep round); an
        applied job's pseudo-gradient is taken as a lone gradient is (checked, faulted,
        scaled for staleness)."""
        s, inner, params = self.schedule, self.inner, self.server.params
        first = self.k
        while self.k < len(self.jobs) and self.read[self.k] == v:
            self.k += 1
        gids = self.jobs[first : self.k]
        if not gids:
            return
        workers = [int(s.worker[gid]) for gid in gids]
        deltas = None
        if inner.lockstep and sorted(workers) == list(range(len(inner.workers))):
            js = [0] * len(workers)
            for gid, w in zip(gids, workers, strict=True):
                js[w] = int(s.minibatch[gid])
            self.doing = [self.position.get(gids[0], 0)]
            rows = inner.round(params, js)
            if rows is not None:
                deltas = [rows[w] for w in workers]
        for i, gid in enumerate(gids):
            self.doing = [self.position.get(gid, 0)]
            delta = (
                deltas[i] if deltas is not None else inner.job(workers[i], params, self.span(gid))
            )
            if s.fate[gid] == APPLIED:
                a, u = self.position[gid], int(s.update[gid])
                parts = list(self.task.unflatten(delta).values())
                self.settle(parts, a, u, self.staleness.scale(u - v), False)
