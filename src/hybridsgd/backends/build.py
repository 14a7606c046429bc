"""A run's parts, built from its config: the timing model, the server and its optimizer,
each worker's minibatch stream, the task as the run trains it; and the torch settings a
replay runs under. Every backend and every way of running (``run``, ``resume``, grid runs,
``forecast``) builds them here, once."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import torch

from hybridsgd.config import Config
from hybridsgd.core.compensation import DelayCompensation
from hybridsgd.core.hyper import Hyper, parse_schedule
from hybridsgd.core.server import ParameterServer, _optimizer_class, optimizer_parameters
from hybridsgd.core.tables import GradientTable
from hybridsgd.errors import ConfigError
from hybridsgd.logs import update_metrics
from hybridsgd.record import Schedule
from hybridsgd.tasks import StreamTask, Task, build_task, samplers
from hybridsgd.timing import Cluster, parse_model, parse_slowdowns, parse_speeds, parse_transient


def build_cluster(cfg: Config, nbytes: float = 0) -> Cluster:
    """The timing model of a config: compute and communication per worker."""
    tm, W = cfg.timing, cfg.policy.workers
    return Cluster(
        parse_model(tm.compute, "timing.compute"),
        W,
        seed=cfg.run.seed,
        comm=parse_model(tm.comm, "timing.comm", allow_link=True),
        speeds=parse_speeds(tm.speed, W),
        slowdowns=parse_slowdowns(tm.slowdowns, W),
        transient=parse_transient(tm.transient),
        nbytes=nbytes,
        steps=1 if isinstance(cfg.worker.steps, str) else cfg.worker.steps,
        step_time=cfg.worker.step_time,
        cores=float(tm.cores) or None,
        server=parse_model(tm.server, "timing.server") if tm.server else None,
    )


def training_task(cfg: Config, task: Task | None = None) -> Task:
    """The task a run of ``cfg`` trains: ``task`` (a user's own) or the configured one, on
    its training split when ``task.validation`` holds part of it out for tuning."""
    task = task or build_task(cfg.task, cfg.run.seed)
    if cfg.task.validation:  # tuning: evaluate on a split of the training set, not the test set
        try:
            task = task.holdout(cfg.task.validation, cfg.task.data_seed)
        except ValueError as exc:
            raise ConfigError("task.validation", str(exc)) from None
    if cfg.task.split == "dirichlet" and task.metric != "accuracy":
        raise ConfigError(
            "task.split", f"dirichlet (label skew) needs a classification task, not {task.name}"
        )
    return task


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block on ``threads`` torch threads, then restore; 0 leaves torch's own
    default, one per core (a simulated run resolves 0 first: hybridsgd.threads)."""
    before = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def on_device(task: Task, device: torch.device) -> Iterator[None]:
    """The task on ``device`` inside the block, back on the CPU after it (a user's module
    too, so it ends where it started)."""
    task.to(device)
    try:
        yield
    finally:
        task.to("cpu")


@contextlib.contextmanager
def seeded(seed: int, state: torch.Tensor | None = None) -> Iterator[None]:
    """torch's random state for a simulated run (a model's dropout, ...): from ``run.seed``,
    or the ``state`` a checkpoint saved; the caller's own state is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        if state is not None:
            torch.set_rng_state(state)
        else:
            torch.manual_seed(seed)
        yield


@functools.cache
def fused_on_cpu(name: str) -> bool:
    """Whether this torch has the CPU fused kernel of ``torch.optim.<name>`` (torch >= 2.4
    for SGD and Adam; older versions accept ``fused=True`` and fail at the first step)."""
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    try:
        cast(Any, getattr(torch.optim, name))([p], lr=0.1, fused=True).step()
    except (RuntimeError, NotImplementedError, TypeError, ValueError):
        return False
    return True


def optimizer_settings(cfg: Config, partial_updates: bool = False) -> tuple[str, float, dict]:
    """The configured optimizer as (name, lr, constructor options). Momentum and weight
    decay go only to optimizers that take them; optimizers with a fused kernel use it unless
    ``optimizer.options`` sets ``fused`` or ``foreach``, or updates may be partial."""
    o = cfg.optimizer
    accepted = optimizer_parameters(o.name)
    # TOML has arrays, torch's signatures tuples (betas): older torch keeps a list as given
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in o.options.items()}
    for key, value in (("momentum", o.momentum), ("weight_decay", o.weight_decay)):
        if key in accepted:
            options.setdefault(key, value)
        elif value:
            raise ConfigError(
                f"optimizer.{key}",
                f"{o.name} does not take {key}; set it to 0 or use optimizer.options",
            )
    # the fused kernel steps every tensor at once (docs/performance.md); it cannot step a
    # subset of tensors whose momentum buffers are partly unset
    cls = _optimizer_class(o.name)
    default_fused = "fused" in accepted and not partial_updates and fused_on_cpu(cls.__name__)
    if default_fused and "fused" not in options and "foreach" not in options:
        options["fused"] = True
    return o.name, o.lr, options


def samplers_for(cfg: Config, task: Task) -> list:
    """Each worker's minibatch stream in a run of ``cfg`` on ``task``: the training-sample
    indices of the gradient in a trace row are
    ``samplers_for(cfg, task)[row.worker].batch(row.minibatch)``, on every backend. A stream
    task (hybridsgd.tasks.stream) gives every worker fresh samples instead of a shard."""
    p, t = cfg.policy, cfg.task
    if isinstance(task, StreamTask):
        if t.split != "iid":
            raise ConfigError(
                "task.split", f"{task.name} is a stream with no data set to split: use iid"
            )
        return task.samplers(p.workers, t.batch_size, cfg.run.seed)
    labels = (
        task.y_train.numpy()
        if task.metric == "accuracy"
        else np.zeros(task.n_train, dtype=np.int64)
    )
    return samplers(labels, p.workers, t.batch_size, t.split, t.alpha, cfg.run.seed)


def build_server(
    cfg: Config,
    params: torch.Tensor,
    layout: list[torch.Size] | None = None,
    partial_updates: bool = False,
    table: str | None = None,
    compensation: tuple[float, bool] | None = None,
) -> ParameterServer:
    """The parameter server with the configured optimizer (see :func:`optimizer_settings`),
    and the policy's gradient table of kind ``table`` and its delay ``compensation``
    (lambda, adaptive), if it has them."""
    name, lr, options = optimizer_settings(cfg, partial_updates)
    server = ParameterServer(params, name, lr, layout=layout, hyper=hyper_of(cfg), **options)
    if table is not None:
        server.table = GradientTable(table, cfg.policy.workers, server.numel, params.device)
    if compensation is not None and compensation[0] > 0:  # lambda 0: nothing to correct
        server.compensation = DelayCompensation(*compensation)
    return server


def hyper_of(cfg: Config) -> Hyper:
    """Each update's lr and momentum under ``cfg`` (:class:`~hybridsgd.core.hyper.Hyper`)."""
    o = cfg.optimizer
    takes = "momentum" in optimizer_parameters(o.name)
    return Hyper(
        o.lr,
        o.momentum if takes else None,
        parse_schedule(o.schedule, cfg.run_length(o.schedule_unit)),
        unit=o.schedule_unit,
        scale=o.scale_lr,
        async_lr=o.async_lr,
        async_momentum=o.async_momentum,
        batch_size=cfg.task.batch_size,
    )


def record_hyper(schedule: Schedule, server: ParameterServer) -> None:
    """The lr and momentum each update was applied with, into the schedule (the updates
    table's ``lr`` and ``momentum``): what the server set, or the optimizer's own."""
    n = schedule.per_update()[0]
    if server.used:
        used = np.asarray(server.used, dtype=np.float64).reshape(-1, 2)
        schedule.update_lr, schedule.update_momentum = used[:, 0].copy(), used[:, 1].copy()
    else:
        group = server.optimizer.param_groups[0]
        schedule.update_lr = np.full(schedule.n_updates, float(group["lr"]))
        schedule.update_momentum = np.full(schedule.n_updates, float(group.get("momentum", np.nan)))
    if len(schedule.update_lr) != schedule.n_updates:  # a bug: one entry per update
        raise RuntimeError("the server recorded the lr of another number of updates")
    schedule.update_lr[n == 0] = np.nan  # nothing was applied
    schedule.update_momentum[n == 0] = np.nan


def metrics_of(cfg: Config, updates, gradients, partial_updates: bool):
    """Each update's metrics (hybridsgd.logs.update_metrics) for a run of ``cfg``."""
    lr = optimizer_settings(cfg, partial_updates)[1]
    return update_metrics(updates, gradients, cfg.policy.workers, cfg.task.batch_size, lr)
