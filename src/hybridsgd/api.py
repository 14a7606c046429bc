"""Sweeps from Python: ``h.compare`` and ``h.tune``, the functions behind ``hybridsgd
compare`` and ``hybridsgd tune``, returning the tables they write.

>>> import hybridsgd as h                                               # doctest: +SKIP
>>> r = h.tune("own.toml", ["sync", "async"], {"optimizer.lr": [0.03, 0.1, 0.3]},
...            out="runs/own", final_seeds=3)
>>> r.chosen["async"]["settings"], r.verdict

The task is the config's (a built-in, or ``task.name = "FILE.py:build"``), or ``task=``:
a ``"FILE.py:build"`` spec, or an :class:`~hybridsgd.tasks.Task` built in Python (every run
trains it, as ``h.run(cfg, task=...)`` does; it is pickled to the sweep's processes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hybridsgd.config import Config
from hybridsgd.errors import ConfigError
from hybridsgd.tasks.base import Task


@dataclass
class SweepResult:
    """What a comparison or a tuning wrote to ``out``, read back."""

    out: Path
    #: one row per policy and seed (``out/summary.csv``): final loss and accuracy, time to
    #: target, updates, staleness, idle share; a tuning's chosen settings too
    summary: pd.DataFrame
    #: the report's first paragraph: the winner, its margin with a 95% interval, or a tie
    verdict: str
    report: Path  # out/report.html
    #: a tuning's choice per policy label: ``settings``, ``objective``, ``diverged``, ...
    chosen: dict[str, dict] = field(default_factory=dict)
    trials: pd.DataFrame | None = None  # a tuning's every grid run (``out/tune.csv``)
    warnings: list[str] = field(default_factory=list)


def _base(cfg: Config | str | Path, task: Task | str | None, overrides: Sequence[str]):
    """The sweep's base config and the Task object it trains (None: its config's)."""
    if isinstance(cfg, str | Path):
        cfg = Config.load(cfg, list(overrides))
    elif not isinstance(cfg, Config):
        raise ConfigError("cfg", f"expected an h.Config or a TOML path, got {type(cfg).__name__}")
    elif overrides:
        cfg = cfg.replace(*overrides)
    if task is None or isinstance(task, Task):
        return cfg, task
    if isinstance(task, str):
        return cfg.replace(f"task.name={task}"), None
    raise ConfigError(
        "task", f'expected an h.Task or a "FILE.py:build" spec, got {type(task).__name__}'
    )


def read_result(out: Path, html: Path) -> SweepResult:
    """The tables a sweep wrote to ``out`` (its report built at ``html``)."""
    from hybridsgd.report.tuning import read as read_tuning
    from hybridsgd.report.verdict import lead

    summary = pd.read_csv(out / "summary.csv")
    tuned = read_tuning(out)
    objective = tuned[1]["objective"] if tuned is not None else None
    verdict = lead(summary, objective, tuned=tuned is not None)
    result = SweepResult(out, summary, verdict, html)
    if tuned is not None:
        result.trials, record = tuned
        result.chosen, result.warnings = record["chosen"], list(record["warnings"])
    return result


def compare(
    cfg: Config | str | Path,
    policies: Sequence[str],
    *,
    out: str | Path,
    seeds: int = 1,
    task: Task | str | None = None,
    overrides: Sequence[str] = (),
    jobs: int | None = None,
    ray_address: str = "",
    force: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> SweepResult:
    """Run every policy spec (``"backup:backups=2"``, as ``--policy``) on the same task,
    data, timing model and ``seeds`` seeds into ``out``, build its report, and return its
    tables (:class:`SweepResult`). ``hybridsgd compare`` runs exactly this."""
    from hybridsgd.app.compare import compare as run_comparison
    from hybridsgd.report import build_report

    base, own = _base(cfg, task, overrides)
    out = Path(out)
    run_comparison(
        base, list(policies), seeds, out, progress, jobs=jobs, ray_address=ray_address,
        force=force, task=own,
    )  # fmt: skip
    return read_result(out, build_report(out))


def tune(
    cfg: Config | str | Path,
    policies: Sequence[str],
    grid: Mapping[str, Sequence[Any]] | None = None,
    *,
    out: str | Path,
    task: Task | str | None = None,
    overrides: Sequence[str] = (),
    seeds: int = 1,
    final_seeds: int | None = None,
    objective: str = "final-loss",
    validation: float = 0.2,
    studies: int = 0,
    trials: int = 0,
    space: Sequence[str] = (),
    grouped: bool = False,
    jobs: int | None = None,
    ray_address: str = "",
    force: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> SweepResult:
    """Tune every policy on its own (``grid``: ``{"optimizer.lr": [0.01, 0.1]}``, default
    the lr grid of docs/tuning.md; or ``studies`` x ``trials`` from ``space``) on a
    ``validation`` split of the training set, rerun each winner on ``final_seeds`` fresh
    seeds on the test set, build the report, and return its tables: ``chosen`` holds each
    policy's settings. ``hybridsgd tune`` runs exactly this (docs/tuning.md)."""
    from hybridsgd.app.tuning import plan
    from hybridsgd.app.tuning import tune as run_tuning
    from hybridsgd.report import build_report

    base, own = _base(cfg, task, overrides)
    p = plan(
        base, list(policies), {k: list(v) for k, v in (grid or {}).items()}, seeds=seeds,
        final_seeds=final_seeds, objective=objective, validation=validation, grouped=grouped,
        studies=studies, trials=trials, space=space, task=own,
    )  # fmt: skip
    out = Path(out)
    run_tuning(p, out, jobs=jobs, ray_address=ray_address, progress=progress, force=force, task=own)
    return read_result(out, build_report(out))
