"""Batching across configurations: several simulated runs that share a schedule, replayed in
one pass (docs/performance.md, "Batching across configurations").

Runs whose configs differ only in ``optimizer.lr`` and ``optimizer.momentum`` (an lr or
momentum grid on one seed) simulate the same schedule: the same workers read the same
versions of their own runs and compute on the same minibatches.
:func:`~hybridsgd.runner.run_grid` simulates that schedule once and replays it for all G
configurations together: every group of gradients (one read version, one update) is
computed for the G parameter vectors in one ``vmap``-ed call
(:meth:`hybridsgd.tasks.Task.grads_at`, with the minibatch shared), and each
configuration's own server (or one :class:`BatchedSGD` for all) applies its updates. Lone
gradients of different versions (``async`` and its family) are also batched across
versions, as in :mod:`hybridsgd.backends.sim.versions`: a ring holds each version's G
parameter vectors, and one call computes several versions for every configuration.

* **When.** :func:`grid_key` says whether a config may join a grid, and with which others:
  the simulator on the CPU; a linear aggregator; no faults, gradient bound, lr schedule,
  per-regime settings, streamed logs or checkpoints; a built-in task without BatchNorm;
  not the partition reading. :func:`grid_jobs` also leaves models above
  :data:`GRID_MAX_NUMEL` parameters apart. Anything else runs on its own, as before.
* **Divergence.** A configuration whose gradient or update stops being finite leaves the
  pass at once and is rerun on its own (``run``), which rejects such gradients one by one
  as it always does: the results are those of separate runs.
* **Equal to separate runs** to float tolerance (a batched product rounds differently from
  a single one); the schedules, and so the traces' times and fates, are identical. Each
  run's summary reports the pass's wall time divided by G and ``replayed_with`` G.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Any, cast

import numpy as np
import torch

from hybridsgd.backends.sim.engine import Engine, Groups
from hybridsgd.backends.sim.versions import Plan, batch_limit
from hybridsgd.config import Config, grid_rules
from hybridsgd.core.aggregators import Aggregator, build_aggregator
from hybridsgd.core.server import ParameterServer
from hybridsgd.core.staleness import StalenessRule
from hybridsgd.core.update import Part, UpdateBuilder
from hybridsgd.record import Evals, Schedule
from hybridsgd.target import TargetSearch
from hybridsgd.tasks.base import Task

#: the most configurations replayed together (their parameter vectors are stacked)
MAX_GRID = 16
#: the largest model (parameters) whose grids replay together: larger ones, whose gradients
#: are compute-bound, lose by it (docs/performance.md, "Batching across configurations")
GRID_MAX_NUMEL = 50_000
#: the fewest versions a call must be able to hold for a grid to batch across versions
#: (fewer lose by it: docs/performance.md, "Batching across configurations")
GRID_MIN_VERSIONS = 4


def grid_key(cfg: Config) -> str | None:
    """What the configs that can share ``cfg``'s pass have in common (a string), or None
    when ``cfg`` must run on its own. Each config section declares how its keys bear on
    a grid (hybridsgd.config: ``_apart``, ``_varies``): a key declared apart and set keeps
    the run apart; keys declared varying may differ within a grid; every other key must
    match. And the aggregator must be linear (a robust rule needs each gradient's row), and
    the policy without a gradient table (server state of each config's own) or an update
    rule of its own."""
    if not build_aggregator(cfg.policy.aggregator).linear:
        return None
    from hybridsgd.policies.registry import REGISTRY

    entry = REGISTRY[cfg.policy.name]
    if entry.table is not None or entry.update_rule:
        return None
    d = cfg.to_dict()
    for name, section in cfg.sections():
        default = type(section)()
        for key, rule, when in grid_rules(section):
            value, unset = attrgetter(key)(section), attrgetter(key)(default)
            if rule == "varies":
                d[name].pop(key, None)
            elif when(value) if when is not None else value != unset:
                return None
    return repr(sorted((k, sorted(v.items()) if isinstance(v, dict) else v) for k, v in d.items()))


def grid_jobs(configs: Sequence[Config]) -> list[list[int]]:
    """The configs (indices) in jobs: those that share a :func:`grid_key` together, at most
    :data:`MAX_GRID` a job, in order; every other config alone, and every config of a model
    above :data:`GRID_MAX_NUMEL` parameters."""
    from hybridsgd.tasks import build_task

    sizes: dict[str, int] = {}

    def small(c: Config) -> bool:
        key = repr(c.task)
        if key not in sizes:
            sizes[key] = build_task(c.task, c.run.seed).numel
        return sizes[key] <= GRID_MAX_NUMEL

    groups: dict[str, list[int]] = {}
    jobs: list[list[int]] = []
    for i, c in enumerate(configs):
        key = grid_key(c)
        if key is None or not small(c):
            jobs.append([i])
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        for s in range(0, len(members), MAX_GRID):
            jobs.append(members[s : s + MAX_GRID])
    return sorted(jobs)


class BatchedSGD:
    """``torch.optim.SGD`` (momentum, weight decay, no dampening or Nesterov) for G
    parameter vectors at once, each with its own lr and momentum: one step for all rows,
    where G servers would take G optimizer steps (about 0.1 ms of overhead each).

    Per row this is torch's rule: d = g + wd * p; with momentum, the buffer starts as d and
    is then ``mu * buf + d`` (mu = 0 keeps it equal to d); p += -lr * buf."""

    def __init__(self, params: torch.Tensor, lrs, momenta, weight_decay: float) -> None:
        self.params = params  # [G, numel], stepped in place
        self.neg_lr = -torch.tensor(lrs, dtype=params.dtype)[:, None]
        self.mu = torch.tensor(momenta, dtype=params.dtype)[:, None]
        self.momentum = any(m != 0 for m in momenta)
        self.wd = weight_decay
        self.buf: torch.Tensor | None = None

    @staticmethod
    def fits(cfg: Config) -> bool:
        o = cfg.optimizer
        return o.name.lower() == "sgd" and not o.options

    def step(self, rows: list[int], grads: torch.Tensor) -> None:
        """Step the rows ``rows`` (all rows when they are 0..G-1) with ``grads`` [len, numel]."""
        every = len(rows) == len(self.params)
        p = self.params if every else self.params[rows]
        d = grads if not self.wd else grads.add(p, alpha=self.wd)
        neg_lr = self.neg_lr if every else self.neg_lr[rows]
        if self.momentum:
            if self.buf is None:
                self.buf = d.clone() if every else torch.zeros_like(self.params)
                if not every:
                    self.buf[rows] = d
            elif every:
                self.buf.mul_(self.mu).add_(d)
            else:
                self.buf[rows] = self.buf[rows] * self.mu[rows] + d
            d = self.buf if every else self.buf[rows]
        if every:
            self.params.addcmul_(neg_lr, d)
        else:
            self.params[rows] = p.addcmul(neg_lr, d)


def replay_grid(
    schedule: Schedule,
    task: Task,
    samplers: Sequence[Any],
    servers: Sequence[ParameterServer],
    aggregator: Aggregator,
    staleness: StalenessRule,
    *,
    eval_every: int,
    sgd: BatchedSGD | None = None,
    target: float | None = None,
    target_search: str = "exact",
) -> list[Evals | None]:
    """Replay ``schedule`` for every server at once (see the module doc); the evaluations of
    each, or None for a server whose gradient or update stopped being finite (it left the
    pass there, and its parameters are not meaningful). With ``sgd`` (the servers' own
    optimizer, batched), the parameters are its rows while the pass lasts and are copied
    into the servers at the end. ``target``: each run's first crossing of it is found
    exactly, as :func:`~hybridsgd.backends.sim.replay.replay` finds it."""
    if not aggregator.linear:
        raise ValueError(f"a grid replay needs a linear aggregator, not {aggregator.name}")
    grid = _Grid(schedule, task, samplers, servers, aggregator, staleness, eval_every, sgd)
    grid.searches = [
        TargetSearch(target, task.evaluate, ev, None, target_search) for ev in grid.evals
    ]
    grid.evaluate(0, 0.0)
    grid.run()
    if sgd is not None:
        with torch.no_grad():
            for c in grid.alive:
                servers[c].params.copy_(sgd.params[c])
                servers[c].version = grid.U
    return [None if c in grid.gone else grid.evals[c] for c in range(grid.G)]


class _Grid(Engine):
    """G runs' replay in one pass (see :func:`replay_grid`)."""

    def __init__(
        self, schedule, task, samplers, servers, aggregator, staleness, eval_every, sgd
    ) -> None:
        super().__init__(schedule, eval_every)
        self.task, self.samplers, self.servers = task, samplers, servers
        self.staleness, self.sgd = staleness, sgd
        self.G = G = len(servers)
        self.gs = gs = Groups(schedule)
        # lone gradients of several versions, for every configuration at once (G rows a
        # version), when a call can hold enough versions
        per_gradient = len(samplers[gs.worker[0]].batch(gs.minibatch[0])) if len(gs.gids) else 1
        limit = batch_limit(G * task.numel, G * per_gradient, task.stack_limit)
        self.plan = None
        if limit >= GRID_MIN_VERSIONS:  # else G rows a version already fill a call
            self.plan = Plan.make(
                gs.read, gs.update, gs.sizes, self.U, limit=limit, row_floats=G * task.numel,
                min_batch=2,
            )  # fmt: skip
        self.lone = self.plan.lone if self.plan is not None else [False] * len(gs.read)
        self.ring = self.plan.ring if self.plan is not None else None
        self.builders = [UpdateBuilder(aggregator, owned=True) for _ in servers]
        self.pending: list[dict[int, list[Part]]] = [{} for _ in servers]
        self.evals = [Evals() for _ in servers]
        self.alive = list(range(G))
        self.gone: set[int] = set()
        self.stacked = torch.empty(G, task.numel)
        self.searches: list[TargetSearch] = []  # set by replay_grid: each run's target
        self.g = 0

    def params_of(self, c: int) -> torch.Tensor:
        return self.sgd.params[c] if self.sgd is not None else self.servers[c].params

    def rows_of(self, chunk: list[int]) -> torch.Tensor:
        if self.sgd is not None:
            return self.sgd.params if len(chunk) == self.G else self.sgd.params[chunk]
        rows = self.stacked[: len(chunk)]
        torch.stack([self.servers[c].params for c in chunk], out=rows)
        return rows

    def every_row(self) -> torch.Tensor:
        if self.sgd is not None:
            return self.sgd.params.reshape(-1)
        torch.stack([s.params for s in self.servers], out=self.stacked)
        return self.stacked.reshape(-1)

    def evaluate(self, version: int, t: float) -> None:
        for c in self.alive:
            loss, acc = self.task.evaluate(self.params_of(c))
            self.evals[c].add(version, t, loss, acc)
            self.searches[c].evaluated(self.evals[c])

    # -- what was read at v ------------------------------------------------------------------
    def read_at(self, v: int) -> None:
        gs = self.gs
        if self.ring is not None:
            self.ring.keep(v, self.every_row())
        n_groups = len(gs.read)
        while self.g < n_groups and gs.read[self.g] == v:
            if not self.lone[self.g]:
                self.compute_group(self.g, v)
            self.g += 1
        for chosen in self.plan.due(v) if self.plan is not None else ():
            self.compute_lone(chosen)

    def compute_group(self, g: int, v: int) -> None:
        """Group ``g``'s gradients for every live run, its minibatch shared."""
        gs, task = self.gs, self.task
        a, b, u = gs.starts[g], gs.ends[g], gs.update[g]
        n = b - a
        pairs = zip(gs.worker[a:b], gs.minibatch[a:b], strict=True)
        x, y = task.batch(np.concatenate([self.samplers[w].batch(k) for w, k in pairs]))
        scale = self.staleness.scale(u - v)
        per_call = task.stack_limit // len(x)
        alive = self.alive
        step = len(alive) if per_call >= len(alive) else max(1, per_call)
        for s in range(0, len(alive), step):
            chunk = alive[s : s + step]
            if per_call >= 2:
                grads = task.grads_at(self.rows_of(chunk), x, y, shared=True)
            else:  # too many samples for one pass with several parameter vectors
                grads = []
                for c in chunk:
                    own = self.params_of(c).clone()
                    with task.bound_to(own):
                        grads.append(task.grad(own, x, y, minibatch=len(x) // n)[0])
            for i, c in enumerate(chunk):
                self.pending[c].setdefault(u, []).append(Part(grads[i], n, scale))

    def compute_lone(self, chosen: list[int]) -> None:
        """Lone gradients of several versions, for every configuration, in one call: the
        ring's rows are [versions, G x numel], each version's minibatch repeated G times."""
        assert self.ring is not None
        gs, task, G = self.gs, self.task, self.G
        m = len(chosen)
        firsts = [gs.starts[c] for c in chosen]
        pairs = [(gs.worker[a], gs.minibatch[a]) for a in firsts]
        x, y = task.batch(np.concatenate([self.samplers[w].batch(k) for w, k in pairs]))
        b = len(x) // m
        xs = x.view(m, 1, b, *x.shape[1:]).expand(m, G, b, *x.shape[1:])
        ys = y.view(m, 1, b, *y.shape[1:]).expand(m, G, b, *y.shape[1:])
        rows = self.ring.gather([gs.read[c] for c in chosen]).view(m * G, task.numel)
        grads = task.grads_at(rows, xs.reshape(m * G, b, *x.shape[1:]), ys.reshape(m * G, b))
        for i, c in enumerate(chosen):
            u = gs.update[c]
            scale = self.staleness.scale(u - gs.read[c])
            for k in self.alive:
                self.pending[k].setdefault(u, []).append(Part(grads[i * G + k], 1, scale))

    # -- update v ----------------------------------------------------------------------------
    def update(self, v: int) -> None:
        built = []
        for c in self.alive:
            contributions = self.pending[c].pop(v, [])
            built.append(self.builders[c].build(contributions) if contributions else None)
        if built and built[0] is not None:  # one schedule: every run has this update or none
            self.apply([cast(torch.Tensor, d) for d in built])
        elif self.sgd is None:
            for c in self.alive:
                self.servers[c].skip()

    def apply(self, built: list[torch.Tensor]) -> None:
        """The live runs' update; a run whose update is not finite leaves the pass."""
        flat = torch.stack(built)
        ok = torch.isfinite(flat).all(dim=1).tolist()
        self.gone.update(c for c, fine in zip(self.alive, ok, strict=True) if not fine)
        if self.gone:
            keep = [i for i, fine in enumerate(ok) if fine]
            self.alive = [self.alive[i] for i in keep]
            flat = flat[keep]
        if self.sgd is not None:
            if self.alive:
                self.sgd.step(self.alive, flat)
        else:
            for i, c in enumerate(self.alive):
                self.servers[c].apply(flat[i])

    def appeared(self, version: int, t: float, due: bool) -> None:
        if due:
            self.evaluate(version, t)
        elif any(self.searches[c].active for c in self.alive):
            for c in self.alive:
                self.searches[c].keep(version, t, self.params_of(c))
