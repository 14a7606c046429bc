"""Real workers as a :class:`~hybridsgd.backends.base.Backend`: a
:class:`~hybridsgd.backends.driver.Driver` (processes or Ray actors) trains against the
same :class:`~hybridsgd.coordinator.Coordinator` as the simulator; the snapshots it kept
are evaluated after the run, and the versions between them, when kept, feed the exact
search for the first update at the target (hybridsgd.target)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hybridsgd.backends.base import Backend, RunContext, Trained
from hybridsgd.backends.driver import Driver, RealResult
from hybridsgd.backends.local.driver import available_cores
from hybridsgd.coordinator import Coordinator
from hybridsgd.errors import WorkerLost
from hybridsgd.record import Evals
from hybridsgd.target import TargetSearch, reached


class RealBackend(Backend):
    """What the local and Ray backends share; each names its driver and its options."""

    driver: type[Driver]

    def options(self, ctx: RunContext) -> dict[str, Any]:
        """The driver's own keyword arguments."""
        return {}

    def extras(self, ctx: RunContext, result: RealResult) -> dict[str, Any]:
        """What the summary says beyond what every real backend says."""
        return {}

    def run(self, ctx: RunContext) -> Trained:
        cfg, progress = ctx.cfg, ctx.progress
        attack = ctx.faults.attack_update if ctx.faults.omniscient else None
        coordinator = Coordinator(
            ctx.policy, ctx.server, ctx.aggregator, ctx.staleness, ctx.check, attack
        )
        driver = self.driver(
            ctx.task,
            ctx.feeds,
            coordinator,
            ctx.cluster,
            time_unit=cfg.run.time_unit,
            worker_timeout=cfg.run.worker_timeout,
            shrink=cfg.policy.on_worker_loss == "shrink",
            eval_every=cfg.run.eval_every,
            progress=started(progress, cfg.run.updates or 0),
            faults=ctx.faults,
            fine_snapshots=cfg.run.target_accuracy is not None and cfg.run.target_search == "exact",
            worker=None if cfg.worker.plain else cfg.worker,
            loads=cfg.run.loads(cfg.policy.workers),
            **self.options(ctx),
        )
        if progress:  # starting W processes or Ray actors takes seconds: say so meanwhile
            progress("start", 0, 1)
        result = driver.run(cfg.run.updates, cfg.run.time)
        if not result.snapshots:  # stopped while the workers started: there is no run
            if result.interrupted:
                raise KeyboardInterrupt
            raise WorkerLost(result.error or "the workers did not start")
        evals, exact = _evaluate(ctx, result)
        extra = {
            "clock": "seconds",
            # with every version kept (run.target_search = "exact", within the driver's
            # budget) the first update at the target; else the first evaluation at it, up
            # to eval_every - 1 updates late
            "time_to_target_resolution": "update" if exact else "evaluation",
            "torch_threads": result.threads,
            "cores": available_cores(),
            "startup_s": result.startup_s,
            "server_cpu_s": result.server_cpu_s,
            "time_unit": cfg.run.time_unit,
            "worker_pids": result.pids,
            "lost_workers": result.lost,
            "interrupted": result.interrupted,
            "error": result.error,
            "hung_workers": result.hung,
            "worker_devices": result.devices,
        }
        extra |= self.extras(ctx, result)
        extra["signal"] = ctx.signals.name
        return Trained(result.schedule, evals, extra, result.snapshots[-1][2])


def _evaluate(ctx: RunContext, result: RealResult) -> tuple[Evals, bool]:
    """The snapshots' evaluations, and whether the time to target is exact (every version
    up to the crossing was kept)."""
    cfg, task, progress = ctx.cfg, ctx.task, ctx.progress
    evals = Evals()
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
    return evals, cfg.run.target_search == "exact" and not short  # (short: budget ran out)


def started(progress, total: int) -> Callable[[int], None] | None:
    """A real backend's progress (updates done): its first report also ends "start"."""
    if not progress:
        return None
    begun: list[bool] = []

    def report(version: int) -> None:
        if not begun:
            begun.append(True)
            progress("start", 1, 1)
        progress("train", version, total)

    return report
