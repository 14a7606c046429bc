"""Replay a schedule's numerics: compute exactly the gradients it applied, on exactly the
parameters their workers read, and apply the updates in order.

The trick: a gradient that read version r is computed while the server is at version r,
so no parameter snapshot is ever kept. Gradients that read the same version and join the
same update share one batched forward/backward over their stacked minibatches (their mean
is all a linear aggregator needs); a robust aggregator gets one row per gradient from a
single vmapped call instead. Cancelled and dropped work is never computed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hybridsgd.backends.sim import versions
from hybridsgd.backends.sim.engine import Engine, Groups
from hybridsgd.core.aggregators import Aggregator
from hybridsgd.core.faults import Faults, GradientCheck, flip_labels
from hybridsgd.core.server import ParameterServer
from hybridsgd.core.staleness import StalenessRule
from hybridsgd.core.update import Part, UpdateBuilder, compensated, scaled
from hybridsgd.errors import HybridSGDError, UserCodeFailed, raised
from hybridsgd.record import APPLIED, Evals, Schedule
from hybridsgd.target import TargetSearch, evaluate_apart
from hybridsgd.tasks.base import Task
from hybridsgd.tasks.data import WorkerSampler


@dataclass
class ReplayState:
    """Where a replay stands after applying update ``version``: enough to go on from there
    and end bit for bit where the uninterrupted replay ends (a checkpoint's content)."""

    version: int
    pending: dict[int, list[Part]]  # computed, for updates not yet applied
    evals: Evals
    reasons: dict[int, str]  # gradients rejected so far
    faults: dict
    # the versions since the last evaluation, kept while the target is not reached
    # (:class:`~hybridsgd.target.TargetSearch`); older checkpoints have none
    kept: list[tuple[int, float, torch.Tensor]] = field(default_factory=list)
    # the workers' inner optimizers of a run with local steps (hybridsgd.backends.sim.
    # local_steps.InnerSteps.state); None otherwise, and in older checkpoints
    inner: Any = None


def replay(
    schedule: Schedule,
    task: Task,
    samplers: Sequence[WorkerSampler],
    server: ParameterServer,
    aggregator: Aggregator,
    staleness: StalenessRule,
    *,
    eval_every: int,
    on_update: Callable[[int], None] | None = None,
    faults: Faults | None = None,
    check: GradientCheck | None = None,
    resume: ReplayState | None = None,
    checkpoint: Callable[[ReplayState], None] | None = None,
    checkpoint_every: int = 0,
    on_eval: Callable[[Evals], None] | None = None,
    batch_versions: bool | None = None,
    target: float | None = None,
    target_search: str = "exact",
    stop: Callable[[], bool] | None = None,
    inner: Any = None,
) -> Evals:
    """Apply every update of ``schedule`` to ``server``; evaluate every ``eval_every``.

    ``faults`` corrupts the gradients of faulty workers; ``check`` is the server's gradient
    check. Gradients it refuses are marked rejected in ``schedule`` (with a reason). Groups
    with a faulty member, a robust aggregator or a norm bound are computed one gradient per
    row; other groups as one batched mean, rejected whole if that mean is not finite.

    ``checkpoint`` receives the :class:`ReplayState` every ``checkpoint_every`` updates;
    ``resume`` (with ``server`` restored to its version) continues from one.
    ``on_eval`` is called with the evaluations so far each time one is added.
    ``batch_versions``: compute lone gradients read at different versions together
    (:mod:`hybridsgd.backends.sim.versions`); ``False`` computes each at its read version;
    ``None`` follows ``versions.ENABLED``.
    ``target``: an accuracy whose first crossing is found by ``target_search``
    (:mod:`hybridsgd.target`): the evaluations of the versions up to it join the returned
    evaluations. ``stop()`` is asked after each update: True ends the replay there (the
    server then holds that version). ``inner``: the workers' local steps
    (:class:`~hybridsgd.backends.sim.local_steps.InnerSteps`); each job is then that many
    steps of the worker's own optimizer, and sends its pseudo-gradient.
    """
    faults = faults or Faults()
    check = check or GradientCheck()
    if schedule.partitioned:
        if resume is not None or checkpoint is not None:
            raise ValueError("the partition reading has no checkpoints")
        part = _Partition(
            schedule, task, samplers, server, aggregator, staleness, eval_every, on_update,
            on_eval, target, target_search, stop,
        )  # fmt: skip
        return part.replay()
    args = (schedule, task, samplers, server, aggregator, staleness, eval_every, faults, check,
            resume)  # fmt: skip
    if inner is None:
        one = _Replay(*args)
    else:
        from hybridsgd.backends.sim.local_steps import LocalStepsReplay

        one = LocalStepsReplay(*args, inner=inner)
    one.hooks(on_update, on_eval, checkpoint, checkpoint_every, stop, target, target_search)
    one.plan_versions(batch_versions)
    try:
        with task.bound_to(server.params):
            if resume is None:
                one.appeared(0, 0.0, True)
            one.run(one.first)
    except HybridSGDError:  # said already (a full disk at a checkpoint, ...)
        raise
    except Exception as exc:  # the model, its loss or its data raised: one line, with where
        said = _failure(exc, one.doing, one.gs, samplers)
        raise UserCodeFailed(said, server.version, one.evals) from exc
    return one.evals


class _Replay(Engine):
    """One run's replay (see :func:`replay`)."""

    def __init__(
        self, schedule, task, samplers, server, aggregator, staleness, eval_every, faults,
        check, resume,
    ) -> None:  # fmt: skip
        super().__init__(schedule, eval_every)
        self.task, self.samplers, self.server = task, samplers, server
        self.staleness, self.faults, self.check = staleness, faults, check
        # rows apart: a robust rule or the gradient check needs each gradient; and a
        # BatchNorm model's gradient depends on its own minibatch as a whole, so several
        # workers' minibatches never go through one forward pass (one vmapped call instead)
        # (an omniscient attack needs every row of the update it joins, too)
        # (and a gradient table folds each gradient into its sender's row; delay compensation
        # corrects each gradient with the parameters it read)
        table, self.compensation = server.table, server.compensation
        self.apart = (
            not aggregator.linear
            or check.per_gradient
            or faults.omniscient
            or table is not None
            or self.compensation is not None
        )
        self.gs = gs = Groups(schedule)
        self.members = (gs.gids, gs.worker, faults, check, schedule)
        # an update fed by one group gets that group's gradient as is (per-tensor parts, no
        # flat copy); updates fed by several groups stack flat rows from a reused pool
        U = self.U
        self.groups_per_update = (
            np.bincount(gs.update, minlength=U).tolist() if gs.update else [0] * U
        )
        self.pending: dict[int, list[Part]] = {}
        self.pool: list[torch.Tensor] = []  # reused flat buffers: fresh pages cost a copy
        # the update from its parts, as the coordinator builds it (parts are scratch here)
        attack = faults.attack_update if faults.omniscient else None
        self.builder = UpdateBuilder(aggregator, attack, owned=True, table=table)
        self.resets, self.scales = schedule.update_reset, schedule.update_scale
        self.evals = Evals()
        self.first = 0
        if resume is not None:
            self.first, self.evals = resume.version, resume.evals
            self.pending = {u: [_as_part(c) for c in cs] for u, cs in resume.pending.items()}
            for gid, why in resume.reasons.items():
                schedule.reject(gid, why)
            faults.load_state(resume.faults)
        self.resumed = resume
        self.verified: set[int] = set()  # updates of one lone gradient already checked finite
        self.doing: object = None  # what the replay computes now (see _failure)
        self.lazy: versions.Plan | None = None
        # next group: those read before ``first`` were computed
        self.g = bisect.bisect_left(gs.read, self.first)

    def hooks(
        self, on_update, on_eval, checkpoint, checkpoint_every, stop, target, target_search
    ) -> None:
        self.on_update, self.on_eval, self.stop = on_update, on_eval, stop
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.target, self.target_search = target, target_search

    def plan_versions(self, batch_versions: bool | None) -> None:
        """The plan for lone gradients read at different versions, computed together
        (:mod:`hybridsgd.backends.sim.versions`), and the target's search."""
        task, gs = self.task, self.gs
        kept = self.resumed.kept if self.resumed is not None else None
        self.search = TargetSearch(
            self.target, evaluate_apart(task), self.evals, kept, self.target_search
        )
        self.smallest = versions.min_batch(task.closed_form)
        if not (versions.ENABLED if batch_versions is None else batch_versions) or not gs.read:
            return
        if self.compensation is not None:  # each gradient keeps the parameters it read
            return
        per_gradient = len(self.samplers[gs.worker[0]].batch(gs.minibatch[0]))
        self.lazy = versions.Plan.make(
            gs.read,
            gs.update,
            gs.sizes,
            self.U,
            limit=versions.batch_limit(
                task.numel, per_gradient, task.stack_limit, task.closed_form
            ),
            row_floats=task.numel,
            min_batch=self.smallest,
            first=self.first,
            checkpoint_every=self.checkpoint_every if self.checkpoint is not None else 0,
            device=self.server.params.device,
        )

    # -- what was read at v ------------------------------------------------------------------
    def read_at(self, v: int) -> None:
        gs, lazy = self.gs, self.lazy
        if lazy is not None:
            lazy.ring.keep(v, self.server.params)
        n_groups = len(gs.read)
        while self.g < n_groups and gs.read[self.g] == v:
            if lazy is None or not lazy.lone[self.g]:
                self.compute_group(self.g, v)
            self.g += 1
        if lazy is not None:
            for chosen in lazy.due(v):
                self.compute_lone(chosen)

    def compute_group(self, g: int, v: int) -> None:
        """The gradients of group ``g`` (read at ``v``), at the server's parameters."""
        task, gs, params, pending = self.task, self.gs, self.server.params, self.pending
        a, b, u = gs.starts[g], gs.ends[g], gs.update[g]
        self.doing = (a, b)
        n = b - a
        if n == 1:
            idx = self.samplers[gs.worker[a]].batch(gs.minibatch[a])
        else:
            pairs = zip(gs.worker[a:b], gs.minibatch[a:b], strict=True)
            idx = np.concatenate([self.samplers[w].batch(k) for w, k in pairs])
        x, y = task.batch(idx)
        scale = self.staleness.scale(u - v)
        coupled = n > 1 and task.batch_coupled
        if self.apart or coupled or self.faults.touches(gs.worker[a:b]):
            rows, kept = _rows(task, params, x, y, gs.gids[a:b], gs.worker[a:b], self.faults,
                               self.check, self.schedule)  # fmt: skip
            read = params.clone() if self.compensation is not None else None
            if len(rows) and (self.builder.per_row or read is not None):
                pending.setdefault(u, []).append(Part(rows, 1, scale, kept, True, read))
            elif len(rows):
                pending.setdefault(u, []).append(Part(rows.mean(dim=0), len(rows), scale))
        elif self.groups_per_update[u] == 1:
            parts, _ = task.grad_parts(params, x, y, len(x) // n)
            if n > 1 and not self.check.finite(parts):
                _reject_apart(task, params, x, y, a, b, u, scale, pending, *self.members)
            else:
                pending[u] = [Part(parts, n, scale)]
        else:
            pool = self.pool
            mean, _ = task.grad(
                params, x, y, out=pool.pop() if pool else None, minibatch=len(x) // n
            )
            if not self.check.finite(mean):
                pool.append(mean)
                _reject_apart(task, params, x, y, a, b, u, scale, pending, *self.members)
            else:
                pending.setdefault(u, []).append(Part(mean, n, scale))

    def compute_lone(self, chosen: list[int]) -> None:
        """Gradients of the lone groups ``chosen`` in one call, on their own versions."""
        lazy, gs, task, faults = self.lazy, self.gs, self.task, self.faults
        assert lazy is not None
        first_members = [gs.starts[c] for c in chosen]
        self.doing = first_members
        ws = [gs.worker[a] for a in first_members]
        pairs = zip(ws, first_members, strict=True)
        x, y = task.batch(
            np.concatenate([self.samplers[w].batch(gs.minibatch[a]) for w, a in pairs])
        )
        m = len(chosen)
        xs, ys = x.view(m, -1, *x.shape[1:]), y.view(m, -1, *y.shape[1:])
        if any(faults.flips_labels(w) for w in ws):
            ys = ys.clone()
            classes = int(task.y_train.max()) + 1
            for i, w in enumerate(ws):
                if faults.flips_labels(w):
                    ys[i] = flip_labels(ys[i], classes)
        rows = lazy.ring.gather([gs.read[c] for c in chosen])
        grads: list = []
        finite = [False] * m
        if m >= self.smallest and lazy.vmap_ok:
            try:
                batched = task.grads_at(rows, xs, ys, flat=False)
                grads = [[p[i] for p in batched] for i in range(m)]
                finite = _rows_finite(batched, m)
            except Exception:  # a model torch.func cannot batch (.item(), in-place ops...)
                lazy.vmap_ok = False  # one at a time from now on; a real error raises below
        if not grads:  # too few to gain from one batched call: one at a time, on the ring
            for i in range(m):
                with task.bound_to(rows[i]):  # (loading would write the server's storage)
                    grads.append(task.grad_parts(rows[i], xs[i], ys[i])[0])
        for i, c in enumerate(chosen):
            scale = self.staleness.scale(gs.update[c] - gs.read[c])
            self.settle(grads[i], first_members[i], gs.update[c], scale, finite[i])

    def settle(self, parts: list[torch.Tensor], a: int, u: int, scale: float, finite: bool) -> None:
        """A lone gradient computed by ``lazy`` (one tensor per model tensor), taken as the
        one-at-a-time path takes it. ``finite``: its batch showed it finite already."""
        gs, faults, check, pending = self.gs, self.faults, self.check, self.pending
        gid, w = int(gs.gids[a]), gs.worker[a]
        if not self.apart and not faults.touches([w]) and self.groups_per_update[u] == 1:
            # alone in its update: per-tensor parts, as grad_parts gives them; a gradient
            # that is not finite is rejected when the update is built, below (unless its
            # batch already showed it finite, and the update leaves it as it is)
            pending[u] = [Part(list(parts), 1, scale)]
            if finite and scale == 1.0:
                self.verified.add(u)
            return
        row = torch.cat([p.reshape(-1) for p in parts])
        if self.apart or faults.touches([w]):
            faults.corrupt_one(w, row)
            why = check.row(row)
            if why:
                self.schedule.reject(gid, why)
            elif self.builder.per_row:
                pending.setdefault(u, []).append(Part(row[None], 1, scale, [w], rows=True))
            else:
                pending.setdefault(u, []).append(Part(row, 1, scale))
        elif not check.finite(row):
            self.schedule.reject(gid, check.row(row))
        else:
            pending.setdefault(u, []).append(Part(row, 1, scale))

    # -- update v ----------------------------------------------------------------------------
    def update(self, v: int) -> None:
        schedule, server, check = self.schedule, self.server, self.check
        contributions = self.pending.pop(v, [])
        if self.compensation is not None and contributions:
            contributions = compensated(contributions, self.compensation, server.params)
        reset = self.resets is not None and bool(self.resets[v])
        grad = self.builder.build(contributions, reset=reset) if contributions else None
        if grad is not None and self.scales is not None:
            grad = scaled(grad, float(self.scales[v]))
        if len(contributions) > 1 and not self.builder.per_row:  # flat means: scratch again
            self.pool.extend(c.grad for c in contributions)  # type: ignore[misc]
        # a gradient that is not finite is rejected alone, as the Coordinator does: a
        # batched group whose mean is not finite was recomputed row by row above; what is
        # left is an update made of one gradient, or one that overflowed combining
        checked = v in self.verified and len(contributions) == 1
        self.verified.discard(v)
        if grad is not None and not checked and not check.finite(grad):
            for bad in np.flatnonzero((schedule.update == v) & (schedule.fate == APPLIED)):
                schedule.reject(int(bad), "non-finite")
            grad = None
        if grad is None:
            server.skip()  # nothing acceptable: a new version, the same parameters
        elif server.hyper is None:
            server.apply(grad)
        else:  # this update's lr and momentum follow its gradients, time and regime
            n = sum(len(c.workers) if c.rows else c.count for c in contributions)
            t, level = float(schedule.update_time[v]), _level(schedule, v)
            server.apply(grad, n=n, time=t, level=level)

    def appeared(self, version: int, t: float, due: bool) -> None:
        if due:
            self.doing = version
        _appeared(self.task, self.server, self.evals, self.search, version, t, due,
                  self.on_eval)  # fmt: skip

    def inner_state(self) -> Any:
        """What a checkpoint keeps of the workers beyond the server (local steps' state)."""
        return None

    def after(self, version: int) -> bool:
        every = self.checkpoint_every
        if self.checkpoint is not None and version % every == 0 and version < self.U:
            reasons = dict(self.schedule.reasons)
            st = ReplayState(version, self.pending, self.evals, reasons, self.faults.state(),
                             self.search.kept, self.inner_state())  # fmt: skip
            self.checkpoint(st)
        if self.on_update is not None:
            self.on_update(version)
        return self.stop is not None and self.stop()


def _appeared(task, server, evals, search, version, t, due, on_eval) -> None:
    """Version ``version`` appeared at time ``t``: evaluated if ``due``, else kept for the
    search for the first update at the target (:mod:`hybridsgd.target`)."""
    if not due:
        search.keep(version, t, server.params)
        return
    loss, acc = task.evaluate(server.params)
    evals.add(version, t, loss, acc)
    search.evaluated(evals)
    if on_eval is not None:
        on_eval(evals)


def _failure(exc: Exception, doing, gs: Groups, samplers) -> str:
    """One line for an exception the replay met: what raised and where in the user's code
    (:func:`~hybridsgd.errors.raised`), and what the replay was computing: an evaluation,
    or the gradients of which workers' minibatches (their sample indices)."""
    what = raised(exc)
    if isinstance(doing, int):
        return f"{what}, evaluating version {doing}"
    if doing is None:
        return what
    members = range(*doing) if isinstance(doing, tuple) else doing
    parts = []
    for a in list(members)[:3]:
        w, k = gs.worker[a], gs.minibatch[a]
        idx = [int(i) for i in samplers[w].batch(k)]
        shown = ", ".join(map(str, idx[:8])) + (", ..." if len(idx) > 8 else "")
        parts.append(f"worker {w}'s minibatch {k} (samples {shown})")
    more = f" and {len(members) - 3} more" if len(members) > 3 else ""
    read = gs.read[bisect.bisect_right(gs.starts, list(members)[0]) - 1]
    return f"{what}, computing the gradient of {'; '.join(parts)}{more}, read at version {read}"


def _rows_finite(parts: list[torch.Tensor], m: int) -> list[bool]:
    """Per row of a batch of gradients (one ``[m, ...]`` tensor per model tensor): whether
    the sum of its per-tensor sums is finite. True implies each per-tensor sum is finite,
    which is what :meth:`~hybridsgd.core.faults.GradientCheck.finite` asks of one gradient;
    a row that is False is simply checked again the usual way."""
    total = torch.stack([p.reshape(m, -1).sum(dim=1) for p in parts]).sum(dim=0)
    return torch.isfinite(total).tolist()


class _Partition(Engine):
    """The hybrid partition reading: an update sets the tensors past the first
    ``sync_tensors`` from its (asynchronous) member, and, when a synchronous round ends
    there, the first ``sync_tensors`` from the mean of the round's gradients; tensors it does
    not touch get no gradient (the optimizer leaves them and their state alone)."""

    def __init__(
        self, schedule, task, samplers, server, aggregator, staleness, eval_every, on_update,
        on_eval, target, target_search, stop,
    ) -> None:  # fmt: skip
        if not aggregator.linear:
            raise ValueError(
                f"the partition reading needs a linear aggregator, not {aggregator.name}"
            )
        super().__init__(schedule, eval_every)
        s = schedule
        assert s.sync_update is not None and s.update_sync_tensors is not None  # a partition
        self.task, self.samplers, self.server = task, samplers, server
        self.aggregator, self.staleness = aggregator, staleness
        self.on_update, self.on_eval, self.stop = on_update, on_eval, stop
        self.n_tensors = len(task.shapes)
        used = (s.fate == APPLIED) | (s.sync_update >= 0)
        gids = np.flatnonzero(used)
        self.last_use = np.maximum(np.where(s.fate == APPLIED, s.update, -1), s.sync_update)
        self.by_read: dict[int, list[int]] = {}
        for gid in gids[np.argsort(s.read_version[gids], kind="stable")].tolist():
            self.by_read.setdefault(int(s.read_version[gid]), []).append(gid)
        self.async_of = {int(s.update[g]): g for g in np.flatnonzero(s.fate == APPLIED).tolist()}
        self.sync_of: dict[int, list[int]] = {}
        for g in np.flatnonzero(s.sync_update >= 0).tolist():
            self.sync_of.setdefault(int(s.sync_update[g]), []).append(g)
        self.held: dict[int, list[torch.Tensor]] = {}
        self.evals = Evals()
        self.target, self.target_search = target, target_search

    def replay(self) -> Evals:
        task, evals = self.task, self.evals
        with task.bound_to(self.server.params):
            # version 0 is evaluated before the search starts (it has always been: the
            # search never sees the initial evaluation of this reading)
            loss, acc = task.evaluate(self.server.params)
            evals.add(0, 0.0, loss, acc)
            if self.on_eval is not None:
                self.on_eval(evals)
            self.search = TargetSearch(
                self.target, evaluate_apart(task), evals, search=self.target_search
            )
            self.run()
        return evals

    def read_at(self, v: int) -> None:
        s, task = self.schedule, self.task
        for gid in self.by_read.get(v, ()):
            x, y = task.batch(self.samplers[int(s.worker[gid])].batch(int(s.minibatch[gid])))
            self.held[gid] = task.grad_parts(self.server.params, x, y)[0]  # type: ignore[assignment]

    def update(self, v: int) -> None:
        s, held = self.schedule, self.held
        m = int(s.update_sync_tensors[v])  # type: ignore[index]
        grad: list[torch.Tensor | None] = [None] * self.n_tensors
        if v in self.async_of:
            gid = self.async_of[v]
            w = self.aggregator.weights(
                [1.0], [self.staleness.scale(v - int(s.read_version[gid]))]
            )[0]
            for i in range(m, self.n_tensors):
                grad[i] = held[gid][i] * w if w != 1.0 else held[gid][i]
        if v in self.sync_of:
            members = self.sync_of[v]
            weights = self.aggregator.weights([1.0] * len(members), [1.0] * len(members))
            for i in range(m):
                parts = [held[g][i] for g in members]
                grad[i] = sum(wt * t for wt, t in zip(weights, parts, strict=True))  # type: ignore[assignment]
        for gid in [self.async_of.get(v), *self.sync_of.get(v, ())]:
            if gid is not None and self.last_use[gid] <= v:
                held.pop(gid, None)
        n = int(v in self.async_of) + len(self.sync_of.get(v, ()))
        self.server.apply(grad, n=n, time=float(s.update_time[v]), level=_level(s, v))

    def appeared(self, version: int, t: float, due: bool) -> None:
        _appeared(self.task, self.server, self.evals, self.search, version, t, due,
                  self.on_eval)  # fmt: skip

    def after(self, version: int) -> bool:
        if self.on_update is not None:
            self.on_update(version)
        return self.stop is not None and self.stop()


def _level(schedule: Schedule, v: int) -> float:
    """The synchrony level update ``v`` was made under (1 when the schedule has none)."""
    regime = schedule.update_regime
    return 1.0 if regime is None else float(regime[v])


def _reject_apart(task, params, x, y, a, b, u, scale, pending, gids, workers, faults, check, s):
    """A batched group whose mean is not finite: its gradients again, one row each, so that
    only those that are not finite are rejected; the mean of the others joins update ``u``."""
    rows, _ = _rows(task, params, x, y, gids[a:b], workers[a:b], faults, check, s)
    if len(rows):
        pending.setdefault(u, []).append(Part(rows.mean(dim=0), len(rows), scale))


def _rows(task, params, x, y, gids, workers, faults, check, schedule):
    """One gradient per member, corrupted where its worker is faulty, checked by the
    server; the rows that pass, and their workers."""
    n = len(gids)
    if any(faults.flips_labels(w) for w in workers):
        y = y.clone()
        per_member = y.view(n, -1)
        classes = int(task.y_train.max()) + 1
        for i, w in enumerate(workers):
            if faults.flips_labels(w):
                per_member[i] = flip_labels(per_member[i], classes)
    rows = task.grads(params, x.view(n, -1, *x.shape[1:]), y.view(n, -1, *y.shape[1:]))
    faults.corrupt(rows, workers)
    keep = []
    for i, gid in enumerate(gids):
        why = check.row(rows[i])
        if why:
            schedule.reject(int(gid), why)
        else:
            keep.append(i)
    kept = [workers[i] for i in keep]
    return (rows, kept) if len(keep) == n else (rows[keep], kept)


def _as_part(c: Part | tuple) -> Part:
    """A pending contribution as a :class:`Part` (checkpoints before 0.x held tuples:
    ``(mean, count, scale)`` or ``(rows, 1, scale, workers)``)."""
    if isinstance(c, Part):
        if not hasattr(c, "read"):  # pickled before Part had it
            c.read = None
        return c
    if len(c) == 4:
        return Part(c[0], 1, c[2], list(c[3]), rows=True)
    return Part(c[0], c[1], c[2])
