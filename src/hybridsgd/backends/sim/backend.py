"""The simulator as a :class:`~hybridsgd.backends.base.Backend`: draw the schedule in
virtual time (:func:`simulate_schedule`), then replay its numerics (:func:`replay`) with
checkpoints, streamed metrics and a cooperative stop."""

from __future__ import annotations

from typing import Any

import torch

from hybridsgd.backends.base import Backend, RunContext, Trained
from hybridsgd.backends.build import metrics_of, on_device, seeded, torch_threads
from hybridsgd.backends.sim import simulate_schedule
from hybridsgd.backends.sim.local_steps import InnerSteps
from hybridsgd.backends.sim.replay import replay
from hybridsgd.config import Config
from hybridsgd.devices import simulator_device
from hybridsgd.errors import ConfigError, UserCodeFailed
from hybridsgd.record import Evals, Schedule
from hybridsgd.rundir import checkpointer
from hybridsgd.tasks.base import Task
from hybridsgd.threads import Load
from hybridsgd.threads import choose as choose_threads
from hybridsgd.trace import Trace


class SimBackend(Backend):
    name = "sim"
    cooperative = True
    streams = True

    def device(self, cfg: Config) -> torch.device:
        return simulator_device(cfg.run.device, cfg.run.local.devices)

    def settle(self, cfg: Config, task: Task, load: Load, resuming: bool) -> tuple[Config, dict]:
        if resuming or cfg.run.threads != 0:
            return cfg, {}
        # chosen by measurement (hybridsgd.threads). The simulator's numerics depend on the
        # number of torch threads (a reduction sums in an order that follows it): the run
        # says how many it used in its config, so that its config.toml repeats it bit for
        # bit on any machine
        if self.device(cfg).type == "cpu":
            n, why = choose_threads(
                task, cfg.policy.workers, cfg.task.batch_size, torch.get_num_threads(), load
            )
        else:
            n, why = torch.get_num_threads(), "gradients on a GPU: torch's default"
        return cfg.replace(f"run.threads={n}"), {"threads_choice": why}

    def run(self, ctx: RunContext) -> Trained:
        cfg, progress = ctx.cfg, ctx.progress
        if progress:
            progress("schedule", 0, 1)
        schedule = simulate_schedule(
            ctx.policy,
            ctx.cluster,
            cfg.run.updates,
            cfg.run.time,
            crashes=ctx.faults.crashes,
            shrink=cfg.policy.on_worker_loss == "shrink",
        )
        if progress:
            progress("schedule", 1, 1)
        if ctx.signals.stopped:  # while the schedule was drawn: nothing was trained
            raise KeyboardInterrupt
        extra: dict[str, Any] = {}
        evals, schedule = self._replay(ctx, schedule, extra)
        extra["lost_workers"] = [
            {"worker": w, "time": t, "why": "crashed (faults)"} for t, w in schedule.lost
        ]
        extra["error"] = extra.get("error") or schedule.stopped or None
        return Trained(schedule, evals, extra)

    def _replay(self, ctx: RunContext, schedule: Schedule, extra: dict) -> tuple[Evals, Schedule]:
        cfg, server, task, state = ctx.cfg, ctx.server, ctx.task, ctx.state
        fingerprint = [schedule.n_gradients, schedule.n_updates, float(schedule.update_time.sum())]
        saver, resumed = None, None
        if cfg.run.checkpoint_every:
            if ctx.out is None:
                raise ConfigError(
                    "run.checkpoint_every", "checkpoints need a run directory (--out)"
                )
            saver = checkpointer(cfg, ctx.out, server, fingerprint)
        if state is not None:
            if state["fingerprint"] != fingerprint:
                raise ConfigError("checkpoint", "it does not match the schedule of its config.toml")
            server.load_state_dict(state["server"])
            resumed = state["replay"]
            extra["resumed_from"] = resumed.version
        device = server.params.device
        rng = state.get("rng") if state is not None else None
        on_update, on_eval = _hooks(ctx, schedule)
        with torch_threads(cfg.run.threads), on_device(task, device), seeded(cfg.run.seed, rng):
            extra["torch_threads"] = torch.get_num_threads()
            extra["device"] = str(device)
            failed = ""
            try:
                evals = replay(
                    schedule,
                    task,
                    ctx.feeds,
                    server,
                    ctx.aggregator,
                    ctx.staleness,
                    eval_every=cfg.run.eval_every,
                    on_update=on_update,
                    faults=ctx.faults,
                    check=ctx.check,
                    resume=resumed,
                    checkpoint=saver,
                    checkpoint_every=cfg.run.checkpoint_every,
                    on_eval=on_eval,
                    target=cfg.run.target_accuracy,
                    target_search=cfg.run.target_search,
                    stop=lambda: ctx.signals.stopped,
                    inner=None
                    if cfg.worker.plain
                    else InnerSteps(cfg.worker, task, ctx.feeds, ctx.faults),
                )
            except UserCodeFailed as exc:  # the user's model, loss or data raised
                evals, failed = exc.evals, str(exc)
            return evals, _cut(ctx, schedule, evals, failed, extra)


def _hooks(ctx: RunContext, schedule: Schedule):
    """The replay's ``on_update`` (progress; each update's metrics streamed to run.log's
    writers as it is applied) and ``on_eval`` (each evaluation streamed)."""
    progress, stream, server = ctx.progress, ctx.stream, ctx.server
    U = schedule.n_updates
    tick = (lambda v: progress("train", v, U)) if progress else None
    if stream is None:
        return tick, None
    trace = Trace.from_schedule(schedule, Evals(), {})
    metrics = metrics_of(ctx.cfg, trace.updates, trace.gradients, ctx.policy.partial_updates)
    lr_column = metrics.columns.get_loc("lr")

    def on_update(v: int) -> None:
        if server.used:  # the lr this update was applied with
            metrics.iat[v - 1, lr_column] = server.used[v - 1][0]
        stream.rows(metrics, v - 1, v)
        if tick is not None:
            tick(v)

    def on_eval(ev: Evals) -> None:
        stream.evals(ev.version, ev.loss, ev.accuracy)

    return on_update, on_eval


def _cut(ctx: RunContext, schedule: Schedule, evals: Evals, failed: str, extra: dict) -> Schedule:
    """The schedule up to the last whole update when the replay ended early: the user's
    model raised (``failed``), or a signal stopped it."""
    server = ctx.server
    if failed:  # the trace up to the last whole update
        schedule = schedule.truncated(server.version)
        if not evals.version:  # it raised evaluating the initial parameters
            evals.add(0, 0.0, float("nan"), float("nan"))
        extra["error"] = f"the model or its loss raised on the simulator: {failed}"
    elif ctx.signals.stopped and server.version < schedule.n_updates:
        schedule = schedule.truncated(server.version)
        if evals.version[-1] != server.version:  # where it stopped, evaluated
            loss, acc = ctx.task.evaluate(server.params)
            evals.add(server.version, schedule.end_time, loss, acc)
        extra |= {"interrupted": True, "signal": ctx.signals.name}
    return schedule
