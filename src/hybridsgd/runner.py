"""Build a run from its config, run it on a backend, and record its trace.

>>> from hybridsgd import Config, run
>>> result = run(Config.from_dict({"policy": {"name": "backup", "workers": 6, "backups": 1},
...                                "run": {"updates": 30}}))
>>> int(result.trace.updates["n_gradients"].iloc[0])
5
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from hybridsgd.backends.driver import Driver
from hybridsgd.backends.local import available_cores
from hybridsgd.backends.sim import replay, simulate_schedule
from hybridsgd.backends.sim.grid import BatchedSGD, grid_key, replay_grid
from hybridsgd.config import Config
from hybridsgd.coordinator import Coordinator
from hybridsgd.core.aggregators import build_aggregator
from hybridsgd.core.faults import Faults, GradientCheck
from hybridsgd.core.hyper import Hyper, parse_schedule
from hybridsgd.core.server import ParameterServer, _optimizer_class, optimizer_parameters
from hybridsgd.core.staleness import build_staleness
from hybridsgd.devices import simulator_device, worker_devices
from hybridsgd.errors import ConfigError, NotSaved, UserCodeFailed, WorkerLost
from hybridsgd.interrupts import Interrupts
from hybridsgd.logs import Stream, open_sinks, update_metrics
from hybridsgd.policies import build_policy
from hybridsgd.progress import progress_of
from hybridsgd.record import Evals, Schedule
from hybridsgd.rundir import (
    CHECKPOINT,
    RUN_FILES,
    SAFE_TO_CHANGE,
    checkpointer,
    claimed,
    completed,
    read_checkpoint,
    replaced_note,
    to_toml,
)
from hybridsgd.summary import summarize
from hybridsgd.target import TargetSearch, reached
from hybridsgd.tasks import StreamTask, Task, build_task, samplers
from hybridsgd.threads import Load
from hybridsgd.threads import choose as choose_threads
from hybridsgd.timing import Cluster, parse_model, parse_slowdowns, parse_speeds, parse_transient
from hybridsgd.trace import Trace


@dataclass
class RunResult:
    config: Config
    trace: Trace
    params: torch.Tensor  # final flat parameters
    schedule: Schedule

    @property
    def summary(self) -> dict[str, Any]:
        return self.trace.summary


def build_cluster(cfg: Config, nbytes: int = 0) -> Cluster:
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
    )


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
    # the fused kernel steps every tensor at once (Adam: 2.3x faster per step on this CPU);
    # it cannot step a subset of tensors whose momentum buffers are partly unset
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
) -> ParameterServer:
    """The parameter server with the configured optimizer (see :func:`optimizer_settings`)."""
    name, lr, options = optimizer_settings(cfg, partial_updates)
    return ParameterServer(params, name, lr, layout=layout, hyper=hyper_of(cfg), **options)


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


def run(
    config: Config,
    *,
    task: Task | None = None,
    out: str | Path | None = None,
    progress: Any = "auto",
    force: bool = False,
    attack: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RunResult:
    """Train under ``config`` on its backend; write the run directory to ``out`` if given.

    ``task`` replaces the built-in ``task.name`` with a user's own :class:`Task`. When the
    run ends, the task's module (your own ``nn.Module`` given to :meth:`Task.from_module`)
    holds the final parameters, as ``result.params`` does; a later run of the same task
    still starts from the parameters the module had when the task was made.
    ``progress``: ``True`` for a progress bar on stderr, ``False`` for none, a callable
    ``(phase, done, total)`` of your own, or ``"auto"``: a bar in a terminal or a notebook
    (hybridsgd.progress). With
    ``run.checkpoint_every`` the run directory also holds a checkpoint while the run lasts
    (see :func:`resume`). A directory that already holds a run is refused unless ``force``
    (the CLI's ``--force``), which removes that run's files before anything is written.
    ``attack`` is a Byzantine attack of your own, for ``faults.attack = "custom"``: given
    the honest gradients of an update ``[h, d]``, it returns the vector every Byzantine
    worker in that update sends.
    """
    return _execute(_config(config), _task(task), out, progress, None, force, attack)


def _config(config: Any) -> Config:
    """``run``'s config: a :class:`Config`, or a TOML file's path, or a dict of sections."""
    if isinstance(config, Config):
        return config
    if isinstance(config, str | Path):
        return Config.load(config)
    if isinstance(config, dict):
        return Config.from_dict(config)
    raise ConfigError(
        "config",
        f"expected a hybridsgd.Config (h.Config.load(PATH)), a TOML file's path or a dict "
        f"of sections (got {type(config).__name__})",
    )


def _task(task: Any) -> Task | None:
    if task is None or isinstance(task, Task):
        return task
    hint = (
        "; wrap the module: h.Task.from_module(model, (inputs, targets), loss)"
        if isinstance(task, torch.nn.Module)
        else ""
    )
    raise ConfigError("task", f"expected a hybridsgd.Task (got {type(task).__name__}){hint}")


def resume(
    out: str | Path,
    *,
    task: Task | None = None,
    progress: Any = "auto",
    allow_change: list[str] | tuple[str, ...] = (),
) -> RunResult:
    """Continue the simulated run whose last checkpoint is in ``out``. It ends bit for bit
    where the uninterrupted run would have ended (same parameters, same trace). A
    ``config.toml`` edited since the checkpoint is refused, except for the keys in
    ``allow_change`` (``--allow-change``), which must be among :data:`SAFE_TO_CHANGE`."""
    unsafe = sorted(set(allow_change) - set(SAFE_TO_CHANGE))
    if unsafe:
        raise ConfigError(
            "allow_change",
            f"{', '.join(unsafe)} would change what is trained; "
            f"a resumed run may change only {', '.join(SAFE_TO_CHANGE)}",
        )
    out = Path(out)
    path = out / CHECKPOINT
    if not out.is_dir():
        raise ConfigError("run directory", f"{out}: no such directory")
    if not path.is_file():
        raise ConfigError(
            "run directory", f"{out} holds no checkpoint ({CHECKPOINT}); nothing to resume"
        )
    cfg = Config.load(out / "config.toml")
    state = read_checkpoint(out, cfg, allow_change)
    return _execute(cfg, _task(task), out, progress, state)


def _execute(
    cfg, task, out, progress, state: dict | None, force: bool = False, attack=None
) -> RunResult:
    # the simulator's replay asks between updates; a real run's loop is interrupted
    signals = Interrupts(cooperative=cfg.run.backend == "sim")
    with progress_of(progress) as progress, signals.deferred():
        if out is None:
            return _run(cfg, task, None, progress, state, signals, attack)
        with claimed(Path(out), force=force, resuming=state is not None) as out:
            return _run(cfg, task, out, progress, state, signals, attack)


def custom_task_marker(task: Task) -> str:
    """What a user's own task was, for its run's config.toml: name, sizes, a fingerprint of
    its initial parameters and training data."""
    digest = hashlib.sha256()
    for t in (task.initial_params(), task.x_train, task.y_train):
        digest.update(t.detach().contiguous().cpu().numpy().tobytes())
    return (
        f"{task.name}: {task.numel} parameters in {len(task.shapes)} tensors, "
        f"{task.n_train} training samples, sha256 {digest.hexdigest()[:16]}"
    )


def _run(
    cfg: Config,
    task: Task | None,
    out,
    progress,
    state: dict | None,
    signals: Interrupts,
    attack: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RunResult:
    wall0 = time.perf_counter()
    load = Load()  # how busy the other processes keep the cores while the task is built
    if cfg.run.backend == "local":  # its workers' server starts while the task is built
        from hybridsgd.backends.local import warm_up

        warm_up()
    if task is not None:
        cfg = cfg.replace(f"task.custom={custom_task_marker(task)}")
    elif cfg.task.custom:
        raise ConfigError(
            "task.custom",
            f"this config comes from a run on a user's own task ({cfg.task.custom}); "
            "rerun it from Python with h.run(h.Config.load(PATH), task=YOUR_TASK)",
        )
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
    threads_choice = None
    if state is None and cfg.run.backend == "sim" and cfg.run.threads == 0:
        # chosen by measurement (hybridsgd.threads). The simulator's numerics depend on the
        # number of torch threads (a reduction sums in an order that follows it): the run
        # says how many it used in its config, so that its config.toml repeats it bit for
        # bit on any machine
        if simulator_device(cfg.run.device, cfg.run.devices).type == "cpu":
            n, threads_choice = choose_threads(
                task, cfg.policy.workers, cfg.task.batch_size, torch.get_num_threads(), load
            )
        else:
            n, threads_choice = torch.get_num_threads(), "gradients on a GPU: torch's default"
        cfg = cfg.replace(f"run.threads={n}")
    faults = Faults.from_config(cfg.faults, cfg.policy.workers, cfg.run.seed)
    if (attack is not None) != (faults.attack == "custom"):
        raise ConfigError(
            "faults.attack",
            'a custom attack is faults.attack = "custom" with h.run(cfg, attack=fn), both',
        )
    faults.custom = attack
    if faults.attack == "label-flip" and faults.byzantine and task.metric != "accuracy":
        raise ConfigError(
            "faults.attack", f"label-flip needs a classification task, not {task.name}"
        )
    check = GradientCheck(cfg.optimizer.max_grad_norm, cfg.optimizer.large_gradients)
    policy = build_policy(
        cfg.policy, cfg.run.seed, task.n_train / cfg.task.batch_size, len(task.shapes)
    )
    # the simulator replays on run.device; real backends keep the server in CPU memory and
    # place their workers themselves (hybridsgd.devices)
    sim = cfg.run.backend == "sim"
    device = simulator_device(cfg.run.device, cfg.run.devices) if sim else torch.device("cpu")
    initial = task.initial_params().to(device)
    server = build_server(cfg, initial, task.shapes, policy.partial_updates)
    cluster = build_cluster(cfg, nbytes=4 * task.numel)
    feeds = samplers_for(cfg, task)
    stream = _stream(cfg, out, policy)
    try:
        return _train(
            cfg,
            task,
            out=out,
            progress=progress,
            state=state,
            signals=signals,
            faults=faults,
            check=check,
            policy=policy,
            server=server,
            cluster=cluster,
            feeds=feeds,
            stream=stream,
            wall0=wall0,
            threads_choice=threads_choice,
        )
    finally:
        if stream is not None:
            stream.close()


def _stream(cfg: Config, out: Path | None, policy) -> Stream | None:
    """The TensorBoard / MLflow writers ``run.log`` asks for, given the run's parameters."""
    if not cfg.run.log:
        return None
    name = out.name if out is not None else policy.describe()
    return Stream(open_sinks(cfg.run.log, out, name), cfg.to_dict(), policy.describe())


def _train(
    cfg: Config,
    task: Task,
    *,
    out: Path | None,
    progress,
    state: dict | None,
    signals: Interrupts,
    faults: Faults,
    check: GradientCheck,
    policy,
    server: ParameterServer,
    cluster: Cluster,
    feeds: list,
    stream: Stream | None,
    wall0: float,
    threads_choice: str | None = None,
) -> RunResult:
    """Train (simulated or real), then write the trace: the second half of :func:`_run`."""
    aggregator = build_aggregator(cfg.policy.aggregator)
    staleness = build_staleness(cfg.policy.staleness, cfg.policy.max_staleness)
    extra: dict[str, Any] = {"threads_choice": threads_choice} if threads_choice else {}
    final = None
    if cfg.run.backend in ("local", "ray"):
        attack = faults.attack_update if faults.omniscient else None
        coordinator = Coordinator(policy, server, aggregator, staleness, check, attack)
        schedule, evals, extra, final = _run_real(
            cfg, task, feeds, coordinator, cluster, faults, progress
        )
        extra["signal"] = signals.name
    else:
        if progress:
            progress("schedule", 0, 1)
        shrink = cfg.policy.on_worker_loss == "shrink"
        schedule = simulate_schedule(
            policy, cluster, cfg.run.updates, cfg.run.time, crashes=faults.crashes, shrink=shrink
        )
        if progress:
            progress("schedule", 1, 1)
        if signals.stopped:  # while the schedule was drawn: nothing was trained
            raise KeyboardInterrupt
        U = schedule.n_updates
        tick = (lambda v: progress("train", v, U)) if progress else None
        on_eval = None
        if stream is not None:  # stream each update's metrics as it is applied
            metrics = _update_metrics(cfg, Trace.from_schedule(schedule, Evals(), {}), policy)
            show = tick

            lr_column = metrics.columns.get_loc("lr")

            def tick(v: int) -> None:
                if server.used:  # the lr this update was applied with
                    metrics.iat[v - 1, lr_column] = server.used[v - 1][0]
                stream.rows(metrics, v - 1, v)
                if show is not None:
                    show(v)

            def on_eval(ev: Evals) -> None:
                stream.evals(ev.version, ev.loss, ev.accuracy)

        fingerprint = [schedule.n_gradients, U, float(schedule.update_time.sum())]
        saver, resumed = None, None
        if cfg.run.checkpoint_every:
            if out is None:
                raise ConfigError(
                    "run.checkpoint_every", "checkpoints need a run directory (--out)"
                )
            saver = checkpointer(cfg, out, server, fingerprint)
        if state is not None:
            if state["fingerprint"] != fingerprint:
                raise ConfigError("checkpoint", "it does not match the schedule of its config.toml")
            server.load_state_dict(state["server"])
            resumed = state["replay"]
            extra["resumed_from"] = resumed.version
        device = server.params.device
        rng = state.get("rng") if state is not None else None
        with torch_threads(cfg.run.threads), on_device(task, device), seeded(cfg.run.seed, rng):
            extra["torch_threads"] = torch.get_num_threads()
            extra["device"] = str(device)
            evals, failed = _replay_or_failure(
                schedule,
                task,
                feeds,
                server,
                aggregator,
                staleness,
                eval_every=cfg.run.eval_every,
                on_update=tick,
                faults=faults,
                check=check,
                resume=resumed,
                checkpoint=saver,
                checkpoint_every=cfg.run.checkpoint_every,
                on_eval=on_eval,
                target=cfg.run.target_accuracy,
                target_search=cfg.run.target_search,
                stop=lambda: signals.stopped,
            )
            if failed:  # the user's model raised: the trace up to the last whole update
                schedule = schedule.truncated(server.version)
                if not evals.version:  # it raised evaluating the initial parameters
                    evals.add(0, 0.0, float("nan"), float("nan"))
                extra["error"] = f"the model or its loss raised on the simulator: {failed}"
            elif signals.stopped and server.version < U:  # the trace up to the last update
                schedule = schedule.truncated(server.version)
                if evals.version[-1] != server.version:  # where it stopped, evaluated
                    loss, acc = task.evaluate(server.params)
                    evals.add(server.version, schedule.end_time, loss, acc)
                extra |= {"interrupted": True, "signal": signals.name}
        extra["lost_workers"] = [
            {"worker": w, "time": t, "why": "crashed (faults)"} for t, w in schedule.lost
        ]
        extra["error"] = extra.get("error") or schedule.stopped or None
    wall = time.perf_counter() - wall0
    _record_hyper(schedule, server, cfg)

    summary = summarize(cfg, task, policy.describe(), schedule, evals, wall) | extra
    if extra.get("hung_workers"):
        summary["warnings"].append(
            f"workers {extra['hung_workers']} did not stop when the run ended and were killed"
        )
    trace = Trace.from_schedule(schedule, evals, summary)
    if stream is not None:
        if cfg.run.backend != "sim":  # evaluated after the run: written now
            stream.rows(_update_metrics(cfg, trace, policy))
            stream.evals(evals.version, evals.loss, evals.accuracy)
        stream.final(summary)
    if out is not None:
        save_run(trace, out, to_toml(cfg.to_dict()))
        if not extra.get("error") and not extra.get("interrupted"):  # the run is complete
            (out / CHECKPOINT).unlink(missing_ok=True)
            completed(out)  # the run --force replaced, if any, can go
    if extra.get("error"):
        where = f"; the trace up to there is in {out}" if out is not None else ""
        raise WorkerLost(f"{extra['error']}{where}")
    params = final if final is not None else server.params.detach().cpu().clone()
    task.load(params)  # the task's module (a user's own model too) ends with the result
    return RunResult(cfg, trace, params, schedule)


def _replay_or_failure(*args, **kwargs) -> tuple[Evals, str]:
    """:func:`replay`, and "" ; or, when the user's model, loss or data raised, the
    evaluations made before it and the one-line account of it."""
    try:
        return replay(*args, **kwargs), ""
    except UserCodeFailed as exc:
        return exc.evals, str(exc)


def save_run(trace: Trace, out: Path, config_toml: str) -> None:
    """Write a finished run into ``out``; if that fails (a full disk, a directory made
    unwritable), write it whole into a fallback directory and raise :class:`NotSaved`
    naming what ``out`` kept and where the fallback is. A finished run is never lost
    quietly: the fallback is in the system's temporary directory."""
    try:
        trace.write(out, config_toml=config_toml)
        return
    except NotSaved as exc:
        failure = str(exc)
    kept = [n for n in RUN_FILES if (out / n).exists()]
    missing = [n for n in RUN_FILES[:-1] if n not in kept]
    try:  # say in the summary what the directory lacks (small: it may still fit)
        summary = trace.summary | {"incomplete": missing}
        Trace(trace.gradients, trace.updates, trace.evals, summary).write(out)
    except NotSaved:
        pass
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rescue = Path(tempfile.gettempdir()) / f"hybridsgd-rescued-{out.name}-{stamp}-{os.getpid()}"
    try:
        trace.write(rescue, config_toml=config_toml)
        where = f"the whole run is in {rescue}"
    except NotSaved as again:
        where = f"the fallback {rescue} failed too ({again})"
    held = f"{out} keeps {', '.join(kept)}" if kept else f"{out} keeps nothing of it"
    raise NotSaved(f"{failure}; {held}; {where}{replaced_note(out)}") from None


def run_grid(configs: Sequence[Config]) -> list[RunResult]:
    """Run configs that share a :func:`~hybridsgd.backends.sim.grid.grid_key` in one pass
    (:mod:`hybridsgd.backends.sim.grid`); a :class:`RunResult` each, in order, as ``run``
    returns for each."""
    configs = list(configs)
    keys = {grid_key(c) for c in configs}
    if None in keys or len(keys) != 1:
        raise ValueError("run_grid takes configs that share one grid_key")
    if len(configs) == 1:
        return [run(configs[0], progress=False)]
    wall0 = time.perf_counter()
    cfg = configs[0]
    task = build_task(cfg.task, cfg.run.seed)
    if cfg.task.validation:
        task = task.holdout(cfg.task.validation, cfg.task.data_seed)
    # one policy: the configs share it (grid_key), and so its schedule and its name
    policy = build_policy(
        cfg.policy, cfg.run.seed, task.n_train / cfg.task.batch_size, len(task.shapes)
    )
    if policy.partial_updates:
        return [run(c, progress=False) for c in configs]
    initial = task.initial_params()
    servers = [build_server(c, initial, task.shapes) for c in configs]
    if any(s.hyper is not None for s in servers):  # an lr that changes along the run
        return [run(c, progress=False) for c in configs]
    schedule = simulate_schedule(
        policy,
        build_cluster(cfg, nbytes=4 * task.numel),
        cfg.run.updates,
        cfg.run.time,
        shrink=cfg.policy.on_worker_loss == "shrink",
    )
    aggregator = build_aggregator(cfg.policy.aggregator)
    staleness = build_staleness(cfg.policy.staleness, cfg.policy.max_staleness)
    sgd = None
    if all(BatchedSGD.fits(c) for c in configs):
        sgd = BatchedSGD(
            initial.repeat(len(configs), 1),
            [c.optimizer.lr for c in configs],
            [c.optimizer.momentum for c in configs],
            cfg.optimizer.weight_decay,
        )
    with torch_threads(cfg.run.threads), seeded(cfg.run.seed):
        threads = torch.get_num_threads()
        evals = replay_grid(
            schedule,
            task,
            samplers_for(cfg, task),
            servers,
            aggregator,
            staleness,
            eval_every=cfg.run.eval_every,
            sgd=sgd,
            target=cfg.run.target_accuracy,
            target_search=cfg.run.target_search,
        )
    share = (time.perf_counter() - wall0) / len(configs)
    out = []
    for c, server, ev in zip(configs, servers, evals, strict=True):
        if ev is None:  # diverged: on its own, as run rejects what is not finite
            out.append(run(c, progress=False))
            continue
        s = copy.deepcopy(schedule)
        _record_hyper(s, server, c)
        extra = {"torch_threads": threads, "device": "cpu", "replayed_with": len(configs)}
        extra |= {"lost_workers": [], "error": None}
        summary = summarize(c, task, policy.describe(), s, ev, share) | extra
        params = server.params.detach().clone()
        out.append(RunResult(c, Trace.from_schedule(s, ev, summary), params, s))
    return out


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


def _record_hyper(schedule: Schedule, server: ParameterServer, cfg: Config) -> None:
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


def _update_metrics(cfg: Config, trace: Trace, policy):
    lr = optimizer_settings(cfg, policy.partial_updates)[1]
    return update_metrics(
        trace.updates, trace.gradients, cfg.policy.workers, cfg.task.batch_size, lr
    )


def _started(progress, total: int) -> Callable[[int], None] | None:
    """A real backend's progress (updates done): its first report also ends "start"."""
    if not progress:
        return None
    started: list[bool] = []

    def report(version: int) -> None:
        if not started:
            started.append(True)
            progress("start", 1, 1)
        progress("train", version, total)

    return report


def _run_real(cfg: Config, task: Task, feeds, coordinator, cluster, faults, progress):
    """Train on real workers (processes or Ray actors); evaluate the snapshots the run
    kept, after it. Returns the schedule, evaluations, summary extras, final parameters."""
    total = cfg.run.updates or 0
    if cfg.run.backend == "ray":
        from hybridsgd.backends.ray import RayBackend, ray_threads

        kind: type[Driver] = RayBackend
        options: dict[str, Any] = {
            "address": cfg.run.ray_address,
            "max_restarts": cfg.run.max_worker_restarts,
            "threads": ray_threads(cfg.run.threads),
            "shards": cfg.run.ps_shards,
            "share_memory": cfg.run.ray_transport == "auto",
            "optimizer": optimizer_settings(cfg),
            "device": cfg.run.device,
        }
    else:
        from hybridsgd.backends.local import LocalBackend

        devices = worker_devices(cfg.run.device, cfg.run.devices, cfg.policy.workers)
        kind, options = LocalBackend, {"threads": cfg.run.threads, "devices": devices}
    backend = kind(
        task,
        feeds,
        coordinator,
        cluster,
        time_unit=cfg.run.time_unit,
        worker_timeout=cfg.run.worker_timeout,
        shrink=cfg.policy.on_worker_loss == "shrink",
        eval_every=cfg.run.eval_every,
        progress=_started(progress, total),
        faults=faults,
        fine_snapshots=cfg.run.target_accuracy is not None and cfg.run.target_search == "exact",
        **options,
    )
    if progress:  # starting W processes or Ray actors takes seconds: say so meanwhile
        progress("start", 0, 1)
    result = backend.run(cfg.run.updates, cfg.run.time)
    if not result.snapshots:  # stopped while the workers started: there is no run to report
        if result.interrupted:
            raise KeyboardInterrupt
        raise WorkerLost(result.error or "the workers did not start")
    evals = Evals()
    # the versions between the snapshots, kept when asked, feed the exact search for the
    # first update at the target (hybridsgd.target), as the simulator's replay does
    search = TargetSearch(cfg.run.target_accuracy, task.evaluate, evals)
    fine = iter(result.fine)
    between = next(fine, None)
    for i, (version, t, params) in enumerate(result.snapshots):
        while between is not None and between[0] < version:
            search.keep(*between)
            between = next(fine, None)
        loss, acc = task.evaluate(params)
        evals.add(version, t, loss, acc)
        search.evaluated(evals)
        if progress:
            progress("evaluate", i + 1, len(result.snapshots))
    hit = next((v for v, a in zip(evals.version, evals.accuracy, strict=True)
                if reached(a, cfg.run.target_accuracy)), None)  # fmt: skip
    short = result.fine_until is not None and (hit is None or hit > result.fine_until)
    exact = cfg.run.target_search == "exact" and not short  # (short: the budget ran out)
    extra = {
        "clock": "seconds",
        # with every version kept (run.target_search = "exact", within the driver's budget)
        # the first update at the target; else the first evaluation at it, up to
        # eval_every - 1 updates late
        "time_to_target_resolution": "update" if exact else "evaluation",
        "torch_threads": result.threads,
        "cores": available_cores(),
        "startup_s": result.startup_s,
        "time_unit": cfg.run.time_unit,
        "worker_pids": result.pids,
        "lost_workers": result.lost,
        "interrupted": result.interrupted,
        "error": result.error,
        "hung_workers": result.hung,
        "worker_devices": result.devices,
    }
    if cfg.run.backend == "ray":
        extra |= {
            "worker_restarts": result.restarts,
            "ps_shards": cfg.run.ps_shards,
            "shared_memory_workers": result.shared,
        }
    return result.schedule, evals, extra, result.snapshots[-1][2]
