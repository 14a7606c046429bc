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

import numpy as np
import torch

from hybridsgd.backends.sim import versions
from hybridsgd.core.aggregators import Aggregator
from hybridsgd.core.faults import Faults, GradientCheck, flip_labels
from hybridsgd.core.server import ParameterServer
from hybridsgd.core.staleness import StalenessRule
from hybridsgd.core.update import Part, UpdateBuilder
from hybridsgd.errors import HybridSGDError, UserCodeFailed, raised
from hybridsgd.record import APPLIED, Evals, Schedule
from hybridsgd.target import TargetSearch, evaluate_apart
from hybridsgd.tasks.base import Task
from hybridsgd.tasks.data import WorkerSampler


class Groups:
    """A schedule's applied gradients in (read version, update) groups, the unit the
    replays compute together: ``gids`` sorted by read version, then update, then gid;
    group g is ``gids[starts[g]:ends[g]]``, read at ``read[g]`` for ``update[g]``. Plain
    lists (the replays read them one scalar at a time), with each member's worker and
    minibatch."""

    def __init__(self, schedule: Schedule) -> None:
        applied = np.flatnonzero(schedule.fate == APPLIED)
        r_all, u_all = schedule.read_version[applied], schedule.update[applied]
        order = np.lexsort((applied, u_all, r_all))
        self.gids = applied[order]
        r_sorted, u_sorted = r_all[order], u_all[order]
        cut = np.flatnonzero((np.diff(r_sorted) != 0) | (np.diff(u_sorted) != 0)) + 1
        starts = np.concatenate([[0], cut]).astype(np.int64)
        ends = np.concatenate([cut, [len(self.gids)]]).astype(np.int64)
        if not len(self.gids):
            starts = ends = np.empty(0, np.int64)
        self.read: list[int] = r_sorted[starts].tolist()
        self.update: list[int] = u_sorted[starts].tolist()
        self.sizes = ends - starts
        self.starts: list[int] = starts.tolist()
        self.ends: list[int] = ends.tolist()
        self.worker: list[int] = schedule.worker[self.gids].tolist()
        self.minibatch: list[int] = schedule.minibatch[self.gids].tolist()


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
    server then holds that version).
    """
    faults = faults or Faults()
    check = check or GradientCheck()
    if schedule.partitioned:
        if resume is not None or checkpoint is not None:
            raise ValueError("the partition reading has no checkpoints")
        return _replay_partition(
            schedule,
            task,
            samplers,
            server,
            aggregator,
            staleness,
            eval_every,
            on_update,
            on_eval,
            target,
            target_search,
            stop,
        )
    U = schedule.n_updates
    # rows apart: a robust rule or the gradient check needs each gradient; and a BatchNorm
    # model's gradient depends on its own minibatch as a whole, so several workers'
    # minibatches never go through one forward pass (one vmapped call instead)
    # (an omniscient attack needs every row of the update it joins, too)
    apart = not aggregator.linear or check.per_gradient or faults.omniscient
    gs = Groups(schedule)
    gids, group_r, group_u = gs.gids, gs.read, gs.update
    members_w, members_k, starts, ends = gs.worker, gs.minibatch, gs.starts, gs.ends
    members = (gids, members_w, faults, check, schedule)

    # an update fed by one group gets that group's gradient as is (per-tensor parts, no
    # flat copy); updates fed by several groups stack flat rows from a reused pool
    groups_per_update = np.bincount(group_u, minlength=U).tolist() if group_u else [0] * U
    pending: dict[int, list[Part]] = {}
    pool: list[torch.Tensor] = []  # reused flat buffers: fresh pages cost a copy's time
    # the update from its parts, as the coordinator builds it (the parts are scratch here)
    attack = faults.attack_update if faults.omniscient else None
    builder = UpdateBuilder(aggregator, attack, owned=True)
    evals = Evals()
    first = 0
    if resume is not None:
        first, evals = resume.version, resume.evals
        pending = {u: [_as_part(c) for c in cs] for u, cs in resume.pending.items()}
        for gid, why in resume.reasons.items():
            schedule.reject(gid, why)
        faults.load_state(resume.faults)
    kept = resume.kept if resume is not None else None
    search = TargetSearch(target, evaluate_apart(task), evals, kept, target_search)
    g = bisect.bisect_left(group_r, first)  # next group: those read before were computed
    n_groups = len(group_r)
    per_gradient = len(samplers[members_w[0]].batch(members_k[0])) if n_groups else 1
    lazy = None
    smallest = versions.min_batch(task.closed_form)
    if (versions.ENABLED if batch_versions is None else batch_versions) and n_groups:
        per_gradient = len(samplers[members_w[0]].batch(members_k[0]))
        lazy = versions.Plan.make(
            group_r,
            group_u,
            gs.sizes,
            U,
            limit=versions.batch_limit(
                task.numel, per_gradient, task.stack_limit, task.closed_form
            ),
            row_floats=task.numel,
            min_batch=smallest,
            first=first,
            checkpoint_every=checkpoint_every if checkpoint is not None else 0,
            device=server.params.device,
        )

    verified: set[int] = set()  # updates of one lone gradient already checked finite

    def settle(parts: list[torch.Tensor], a: int, u: int, scale: float, finite: bool) -> None:
        """A lone gradient computed by ``lazy`` (one tensor per model tensor), taken as the
        one-at-a-time path takes it. ``finite``: its batch showed it finite already."""
        gid, w = int(gids[a]), members_w[a]
        if not apart and not faults.touches([w]) and groups_per_update[u] == 1:
            # alone in its update: per-tensor parts, as grad_parts gives them; a gradient
            # that is not finite is rejected when the update is built, below (unless its
            # batch already showed it finite, and the update leaves it as it is)
            pending[u] = [Part(list(parts), 1, scale)]
            if finite and scale == 1.0:
                verified.add(u)
            return
        row = torch.cat([p.reshape(-1) for p in parts])
        if apart or faults.touches([w]):
            faults.corrupt_one(w, row)
            why = check.row(row)
            if why:
                schedule.reject(gid, why)
            elif builder.per_row:
                pending.setdefault(u, []).append(Part(row[None], 1, scale, [w], rows=True))
            else:
                pending.setdefault(u, []).append(Part(row, 1, scale))
        elif not check.finite(row):
            schedule.reject(gid, check.row(row))
        else:
            pending.setdefault(u, []).append(Part(row, 1, scale))

    def compute(chosen: list[int]) -> None:
        """Gradients of the lone groups ``chosen`` in one call, on their own versions."""
        assert lazy is not None
        first_members = [starts[c] for c in chosen]
        doing[0] = first_members
        ws = [members_w[a] for a in first_members]
        pairs = zip(ws, first_members, strict=True)
        x, y = task.batch(np.concatenate([samplers[w].batch(members_k[a]) for w, a in pairs]))
        m = len(chosen)
        xs, ys = x.view(m, -1, *x.shape[1:]), y.view(m, -1, *y.shape[1:])
        if any(faults.flips_labels(w) for w in ws):
            ys = ys.clone()
            classes = int(task.y_train.max()) + 1
            for i, w in enumerate(ws):
                if faults.flips_labels(w):
                    ys[i] = flip_labels(ys[i], classes)
        rows = lazy.ring.gather([group_r[c] for c in chosen])
        grads = []
        finite = [False] * m
        if m >= smallest and lazy.vmap_ok:
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
            scale = staleness.scale(group_u[c] - group_r[c])
            settle(grads[i], first_members[i], group_u[c], scale, finite[i])

    doing: list = [None]  # what the replay computes now (see _failure)
    try:
        with task.bound_to(server.params):
            if resume is None:
                doing[0] = 0
                loss, acc = task.evaluate(server.params)
                evals.add(0, 0.0, loss, acc)
                search.evaluated(evals)
                if on_eval is not None:
                    on_eval(evals)
            for v in range(first, U):
                params = server.params
                if lazy is not None:
                    lazy.ring.keep(v, params)
                while g < n_groups and group_r[g] == v:
                    if lazy is not None and lazy.lone[g]:
                        g += 1
                        continue
                    a, b, u = starts[g], ends[g], group_u[g]
                    doing[0] = (a, b)
                    n = b - a
                    if n == 1:
                        idx = samplers[members_w[a]].batch(members_k[a])
                    else:
                        pairs = zip(members_w[a:b], members_k[a:b], strict=True)
                        idx = np.concatenate([samplers[w].batch(k) for w, k in pairs])
                    x, y = task.batch(idx)
                    scale = staleness.scale(u - v)
                    coupled = n > 1 and task.batch_coupled
                    if apart or coupled or faults.touches(members_w[a:b]):
                        rows, kept = _rows(
                            task, params, x, y, gids[a:b], members_w[a:b], faults, check, schedule
                        )
                        if len(rows) and builder.per_row:
                            pending.setdefault(u, []).append(Part(rows, 1, scale, kept, rows=True))
                        elif len(rows):
                            pending.setdefault(u, []).append(
                                Part(rows.mean(dim=0), len(rows), scale)
                            )
                    elif groups_per_update[u] == 1:
                        parts, _ = task.grad_parts(params, x, y, len(x) // n)
                        if n > 1 and not check.finite(parts):
                            _reject_apart(task, params, x, y, a, b, u, scale, pending, *members)
                        else:
                            pending[u] = [Part(parts, n, scale)]
                    else:
                        mean, _ = task.grad(
                            params, x, y, out=pool.pop() if pool else None, minibatch=len(x) // n
                        )
                        if not check.finite(mean):
                            pool.append(mean)
                            _reject_apart(task, params, x, y, a, b, u, scale, pending, *members)
                        else:
                            pending.setdefault(u, []).append(Part(mean, n, scale))
                    g += 1
                if lazy is not None:
                    for chosen in lazy.due(v):
                        compute(chosen)
                contributions = pending.pop(v, [])
                grad = builder.build(contributions) if contributions else None
                if len(contributions) > 1 and not builder.per_row:  # flat means: scratch again
                    pool.extend(c.grad for c in contributions)  # type: ignore[misc]
                # a gradient that is not finite is rejected alone, as the Coordinator does: a
                # batched group whose mean is not finite was recomputed row by row above; what
                # is left is an update made of one gradient, or one that overflowed combining
                checked = v in verified and len(contributions) == 1
                verified.discard(v)
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
                version = v + 1
                due = version % eval_every == 0 or version == U
                if due:
                    doing[0] = version
                t = float(schedule.update_time[v])
                _appeared(task, server, evals, search, version, t, due, on_eval)
                if checkpoint is not None and version % checkpoint_every == 0 and version < U:
                    reasons = dict(schedule.reasons)
                    st = ReplayState(version, pending, evals, reasons, faults.state(), search.kept)
                    checkpoint(st)
                if on_update is not None:
                    on_update(version)
                if stop is not None and stop():
                    break
    except HybridSGDError:  # said already (a full disk at a checkpoint, ...)
        raise
    except Exception as exc:  # the model, its loss or its data raised: one line, with where
        said = _failure(exc, doing[0], gs, samplers)
        raise UserCodeFailed(said, server.version, evals) from exc
    return evals


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


def _replay_partition(
    schedule: Schedule,
    task: Task,
    samplers: Sequence[WorkerSampler],
    server: ParameterServer,
    aggregator: Aggregator,
    staleness: StalenessRule,
    eval_every: int,
    on_update: Callable[[int], None] | None,
    on_eval: Callable[[Evals], None] | None = None,
    target: float | None = None,
    target_search: str = "exact",
    stop: Callable[[], bool] | None = None,
) -> Evals:
    """The hybrid partition reading: an update sets the tensors past the first
    ``sync_tensors`` from its (asynchronous) member, and, when a synchronous round ends
    there, the first ``sync_tensors`` from the mean of the round's gradients; tensors it does
    not touch get no gradient (the optimizer leaves them and their state alone)."""
    if not aggregator.linear:
        raise ValueError(f"the partition reading needs a linear aggregator, not {aggregator.name}")
    U, n_tensors = schedule.n_updates, len(task.shapes)
    s = schedule
    assert s.sync_update is not None and s.update_sync_tensors is not None  # a partition run
    used = (s.fate == APPLIED) | (s.sync_update >= 0)
    gids = np.flatnonzero(used)
    last_use = np.maximum(np.where(s.fate == APPLIED, s.update, -1), s.sync_update)
    by_read: dict[int, list[int]] = {}
    for gid in gids[np.argsort(s.read_version[gids], kind="stable")].tolist():
        by_read.setdefault(int(s.read_version[gid]), []).append(gid)
    async_of = {int(s.update[g]): g for g in np.flatnonzero(s.fate == APPLIED).tolist()}
    sync_of: dict[int, list[int]] = {}
    for g in np.flatnonzero(s.sync_update >= 0).tolist():
        sync_of.setdefault(int(s.sync_update[g]), []).append(g)
    held: dict[int, list[torch.Tensor]] = {}
    evals = Evals()
    with task.bound_to(server.params):
        loss, acc = task.evaluate(server.params)
        evals.add(0, 0.0, loss, acc)
        if on_eval is not None:
            on_eval(evals)
        search = TargetSearch(target, evaluate_apart(task), evals, search=target_search)
        for v in range(U):
            for gid in by_read.get(v, ()):
                x, y = task.batch(samplers[int(s.worker[gid])].batch(int(s.minibatch[gid])))
                held[gid] = task.grad_parts(server.params, x, y)[0]  # type: ignore[assignment]
            m = int(s.update_sync_tensors[v])
            grad: list[torch.Tensor | None] = [None] * n_tensors
            if v in async_of:
                gid = async_of[v]
                w = aggregator.weights([1.0], [staleness.scale(v - int(s.read_version[gid]))])[0]
                for i in range(m, n_tensors):
                    grad[i] = held[gid][i] * w if w != 1.0 else held[gid][i]
            if v in sync_of:
                members = sync_of[v]
                weights = aggregator.weights([1.0] * len(members), [1.0] * len(members))
                for i in range(m):
                    parts = [held[g][i] for g in members]
                    grad[i] = sum(wt * t for wt, t in zip(weights, parts, strict=True))  # type: ignore[assignment]
            for gid in [async_of.get(v), *sync_of.get(v, ())]:
                if gid is not None and last_use[gid] <= v:
                    held.pop(gid, None)
            n = int(v in async_of) + len(sync_of.get(v, ()))
            server.apply(grad, n=n, time=float(s.update_time[v]), level=_level(s, v))
            version = v + 1
            due = version % eval_every == 0 or version == U
            _appeared(task, server, evals, search, version, float(s.update_time[v]), due, on_eval)
            if on_update is not None:
                on_update(version)
            if stop is not None and stop():
                break
    return evals


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
        return c
    if len(c) == 4:
        return Part(c[0], 1, c[2], list(c[3]), rows=True)
    return Part(c[0], c[1], c[2])
