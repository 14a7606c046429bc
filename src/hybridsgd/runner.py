"""Build a run from its config, run it on a backend, and record its trace.

>>> from hybridsgd import Config, run
>>> result = run(Config.from_dict({"policy": {"name": "backup", "workers": 6, "backups": 1},
...                                "run": {"updates": 30}}))
>>> int(result.trace.updates["n_gradients"].iloc[0])
5
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hybridsgd.backends.base import Backend, RunContext, Trained, backend_for
from hybridsgd.backends.build import (  # noqa: F401  (the runner's names since 0.1)
    build_cluster,
    build_server,
    hyper_of,
    metrics_of,
    optimizer_settings,
    record_hyper,
    samplers_for,
    seeded,
    torch_threads,
    training_task,
)
from hybridsgd.backends.inner import message_bytes
from hybridsgd.backends.sim import simulate_schedule
from hybridsgd.backends.sim.grid import BatchedSGD, grid_key, replay_grid
from hybridsgd.config import Config
from hybridsgd.core.aggregators import build_aggregator
from hybridsgd.core.faults import Faults, GradientCheck
from hybridsgd.core.staleness import build_staleness
from hybridsgd.errors import ConfigError, NotSaved, WorkerLost
from hybridsgd.interrupts import Interrupts
from hybridsgd.logs import Stream, open_sinks
from hybridsgd.policies import build_policy
from hybridsgd.progress import progress_of
from hybridsgd.record import Schedule
from hybridsgd.rundir import (
    CHECKPOINT,
    RUN_FILES,
    SAFE_TO_CHANGE,
    claimed,
    completed,
    read_checkpoint,
    replaced_note,
    to_toml,
)
from hybridsgd.summary import summarize
from hybridsgd.tasks import Task
from hybridsgd.threads import Load
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
    backend = backend_for(cfg.run.backend)
    # the simulator's replay asks between updates; a real run's loop is interrupted
    signals = Interrupts(cooperative=backend.cooperative)
    with progress_of(progress) as progress, signals.deferred():
        if out is None:
            return _run(backend, cfg, task, None, progress, state, signals, attack)
        with claimed(Path(out), force=force, resuming=state is not None) as out:
            return _run(backend, cfg, task, out, progress, state, signals, attack)


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
    backend: Backend,
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
    backend.warm_up()
    if task is not None:
        cfg = cfg.replace(f"task.custom={custom_task_marker(task)}")
    elif cfg.task.custom:
        raise ConfigError(
            "task.custom",
            f"this config comes from a run on a user's own task ({cfg.task.custom}); "
            "rerun it from Python with h.run(h.Config.load(PATH), task=YOUR_TASK)",
        )
    task = training_task(cfg, task)
    cfg, settled = backend.settle(cfg, task, load, resuming=state is not None)
    ctx = build_run(cfg, task, backend, signals, attack)
    ctx.out, ctx.progress, ctx.state = out, progress, state
    ctx.stream = _stream(cfg, out, ctx.policy)
    try:
        trained = backend.run(ctx)
        trained.extra = settled | trained.extra
        return _finish(ctx, trained, backend, time.perf_counter() - wall0)
    finally:
        if ctx.stream is not None:
            ctx.stream.close()


def build_run(
    cfg: Config,
    task: Task,
    backend: Backend,
    signals: Interrupts | None = None,
    attack: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> RunContext:
    """The parts of a run of ``cfg`` on ``task`` (see :class:`RunContext`), for ``backend``:
    the simulator replays on ``run.device``; real backends keep the server in CPU memory
    (the local backend on its workers' GPU with ``run.local.server``) and place their
    workers themselves (hybridsgd.devices)."""
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
    policy = build_policy(
        cfg.policy, cfg.run.seed, task.n_train / cfg.task.batch_size, len(task.shapes)
    )
    initial = task.initial_params().to(backend.device(cfg))
    return RunContext(
        cfg=cfg,
        task=task,
        policy=policy,
        server=build_server(
            cfg,
            initial,
            task.shapes,
            policy.partial_updates,
            policy.table,
            policy.delay_compensation,
        ),  # fmt: skip
        cluster=build_cluster(
            cfg, nbytes=message_bytes(task.numel, task.shapes, cfg.worker.quantize)
        ),
        feeds=samplers_for(cfg, task),
        aggregator=build_aggregator(cfg.policy.aggregator),
        staleness=build_staleness(cfg.policy.staleness, cfg.policy.max_staleness),
        faults=faults,
        check=GradientCheck(cfg.optimizer.max_grad_norm, cfg.optimizer.large_gradients),
        signals=signals or Interrupts(),
    )


def _stream(cfg: Config, out: Path | None, policy) -> Stream | None:
    """The TensorBoard / MLflow writers ``run.log`` asks for, given the run's parameters."""
    if not cfg.run.log:
        return None
    name = out.name if out is not None else policy.describe()
    return Stream(open_sinks(cfg.run.log, out, name), cfg.to_dict(), policy.describe())


def _finish(ctx: RunContext, trained: Trained, backend: Backend, wall: float) -> RunResult:
    """The run's trace from what its backend did: summarized, streamed, written to its
    directory; a failure the run met is raised once the trace up to it is written."""
    cfg, task, schedule, evals, extra = (
        ctx.cfg,
        ctx.task,
        trained.schedule,
        trained.evals,
        trained.extra,
    )
    record_hyper(schedule, ctx.server)
    summary = summarize(cfg, task, ctx.policy.describe(), schedule, evals, wall) | extra
    if extra.get("hung_workers"):
        summary["warnings"].append(
            f"workers {extra['hung_workers']} did not stop when the run ended and were killed"
        )
    trace = Trace.from_schedule(schedule, evals, summary)
    if ctx.stream is not None:
        if not backend.streams:  # evaluated after the run: written now
            metrics = metrics_of(cfg, trace.updates, trace.gradients, ctx.policy.partial_updates)
            ctx.stream.rows(metrics)
            ctx.stream.evals(evals.version, evals.loss, evals.accuracy)
        ctx.stream.final(summary)
    out = ctx.out
    if out is not None:
        save_run(trace, out, to_toml(cfg.to_dict()))
        if not extra.get("error") and not extra.get("interrupted"):  # the run is complete
            (out / CHECKPOINT).unlink(missing_ok=True)
            completed(out)  # the run --force replaced, if any, can go
    if extra.get("error"):
        where = f"; the trace up to there is in {out}" if out is not None else ""
        raise WorkerLost(f"{extra['error']}{where}")
    final = trained.final
    params = final if final is not None else ctx.server.params.detach().cpu().clone()
    task.load(params)  # the task's module (a user's own model too) ends with the result
    return RunResult(cfg, trace, params, schedule)


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
    task = training_task(cfg)
    # the first config's run, as run builds it; the configs share its policy (grid_key),
    # and so its schedule and its name, and differ only in their servers' lr and momentum
    ctx = build_run(cfg, task, backend_for("sim"))
    policy = ctx.policy
    if policy.partial_updates:
        return [run(c, progress=False) for c in configs]
    initial = task.initial_params()
    servers = [ctx.server, *(build_server(c, initial, task.shapes) for c in configs[1:])]
    if any(s.hyper is not None for s in servers):  # an lr that changes along the run
        return [run(c, progress=False) for c in configs]
    schedule = simulate_schedule(
        policy,
        ctx.cluster,
        cfg.run.updates,
        cfg.run.time,
        shrink=cfg.policy.on_worker_loss == "shrink",
    )
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
            ctx.feeds,
            servers,
            ctx.aggregator,
            ctx.staleness,
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
        record_hyper(s, server)
        extra = {"torch_threads": threads, "device": "cpu", "replayed_with": len(configs)}
        extra |= {"lost_workers": [], "error": None}
        summary = summarize(c, task, policy.describe(), s, ev, share) | extra
        params = server.params.detach().clone()
        out.append(RunResult(c, Trace.from_schedule(s, ev, summary), params, s))
    return out
