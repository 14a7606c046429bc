"""Experiment logging people already watch: TensorBoard and MLflow (docs/logging.md).

``run.log = ["tensorboard", "mlflow"]`` (or ``--log tensorboard:DIR``, ``--log mlflow:URI``)
streams, with the update's version as the step:

* per update: ``time``, ``lr``, ``n_gradients``, ``staleness/mean``, ``staleness/max``,
  ``throughput`` (applied samples per unit time so far) and ``idle_fraction`` (the share
  of worker time, so far, in which workers computed nothing);
* per evaluation: ``eval/loss`` and ``eval/accuracy``;

and the config, flattened (``policy.name``, ``policy.workers``, ...), as run parameters.
The simulator streams while it replays; the real backends evaluate their snapshots after
the run, so their metrics are written when it ends. ``hybridsgd report DIR --tensorboard
OUT`` writes an existing trace the same way. Both writers are optional extras:
``pip install 'hybridsgd[tensorboard]'`` or ``'hybridsgd[mlflow]'``.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridsgd.errors import ConfigError

#: logger name -> (the module it needs, the extra that installs it)
KINDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}


def parse(entries: list[str], field: str = "run.log") -> list[tuple[str, str]]:
    """``["tensorboard:DIR", "mlflow"]`` as (kind, where) pairs; a kind that is unknown or
    not installed is a ConfigError naming the entry and the fix."""
    out = []
    for i, entry in enumerate(entries):
        kind, _, where = entry.partition(":")
        name = f"{field}[{i}]"
        if kind not in KINDS:
            raise ConfigError(
                name, f"unknown logger {kind!r}; use tensorboard[:DIR] or mlflow[:TRACKING_URI]"
            )
        module, extra = KINDS[kind]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(name, f"{kind} is not installed: pip install 'hybridsgd[{extra}]'")
        out.append((kind, where))
    return out


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    """A config dict as ``section.key -> text`` (what both loggers take as parameters); a
    section's table (``[run.ray]``) as ``run.ray.key``, its ``options`` as one text."""
    flat = {}

    def add(prefix: str, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, dict) and key != "options":
                add(f"{prefix}{key}.", value)
            elif value not in (None, "", [], {}):
                flat[f"{prefix}{key}"] = str(value)

    for section, values in config.items():
        if isinstance(values, dict):
            add(f"{section}.", values)
    return flat


def update_metrics(
    updates: pd.DataFrame, gradients: pd.DataFrame, workers: int, batch_size: int, lr: float
) -> pd.DataFrame:
    """The per-update metrics that are logged, from a trace's tables (one row per update).

    ``idle_fraction`` at time t is 1 - busy(t) / (W t), where busy(t) sums, over every
    gradient started by t, the part of [start, end] before t (work that was later cancelled
    counts as busy: the worker computed it).
    """
    t = updates["time"].to_numpy(dtype=float)
    start = np.sort(gradients["start_time"].to_numpy(dtype=float))
    end = np.sort(gradients["end_time"].to_numpy(dtype=float))
    cs, ce = np.concatenate([[0.0], np.cumsum(start)]), np.concatenate([[0.0], np.cumsum(end)])
    ns, ne = np.searchsorted(start, t, side="right"), np.searchsorted(end, t, side="right")
    busy = (ns * t - cs[ns]) - (ne * t - ce[ne])
    applied = updates["n_gradients"].to_numpy(dtype=float).cumsum()
    with np.errstate(divide="ignore", invalid="ignore"):
        idle = np.where(t > 0, 1.0 - busy / (workers * t), np.nan)
        throughput = np.where(t > 0, applied * batch_size / t, np.nan)
    lrs = updates["lr"].to_numpy(dtype=float) if "lr" in updates else np.full(len(t), lr)
    return pd.DataFrame(
        {
            "version": updates["version"].to_numpy(),
            "time": t,
            "lr": lrs,
            "n_gradients": updates["n_gradients"].to_numpy(),
            "staleness/mean": updates["mean_staleness"].to_numpy(dtype=float),
            "staleness/max": updates["max_staleness"].to_numpy(dtype=float),
            "throughput": throughput,
            "idle_fraction": np.clip(idle, 0.0, 1.0),
        }
    )


class Sink:
    """One logger's writer: parameters once, scalars by step, then close."""

    def params(self, params: dict[str, str], text: str) -> None: ...

    def scalars(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink(Sink):
    """Event files in ``directory`` (``tensorboard --logdir`` shows them)."""

    def __init__(self, directory: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.directory = Path(directory)
        self.writer = SummaryWriter(log_dir=str(self.directory))

    def params(self, params: dict[str, str], text: str) -> None:
        table = "\n".join(f"| {k} | {v} |" for k, v in params.items())
        self.writer.add_text("config", f"| key | value |\n|---|---|\n{table}", 0)
        self.writer.add_text("policy", text, 0)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()


class MLflowSink(Sink):
    """An MLflow run in experiment ``hybridsgd`` at ``uri`` (MLflow's own default when
    empty: ``MLFLOW_TRACKING_URI``). Metrics go in batches (one file write per batch on a
    file store, not one per value)."""

    BATCH = 900  # MLflow takes at most 1000 metrics per batch

    def __init__(self, uri: str, run_name: str) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri or None)
        self.uri = uri or mlflow.get_tracking_uri()
        exp = self.client.get_experiment_by_name("hybridsgd")
        exp_id = exp.experiment_id if exp else self.client.create_experiment("hybridsgd")
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        self._pending: list = []

    def params(self, params: dict[str, str], text: str) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:500]) for k, v in params.items()]
        for i in range(0, len(items), 90):  # at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[i : i + 90])
        self.client.set_tag(self.run_id, "policy", text)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in values.items():
            if value is not None and math.isfinite(value):
                self._pending.append(Metric(key.replace("/", "_"), float(value), now, step))
        if len(self._pending) >= self.BATCH:
            self._flush()

    def _flush(self) -> None:
        while self._pending:
            chunk, self._pending = self._pending[: self.BATCH], self._pending[self.BATCH :]
            self.client.log_batch(self.run_id, metrics=chunk)

    def close(self) -> None:
        self._flush()
        self.client.set_terminated(self.run_id)


def open_sinks(entries: list[str], out: Path | None, run_name: str) -> list[Sink]:
    """The writers ``run.log`` names. ``tensorboard:DIR`` writes into ``DIR/<run name>``
    (so that the runs of a comparison sit side by side under one ``--logdir``); plain
    ``tensorboard`` into the run directory's ``tensorboard/``. The MLflow run is named
    ``run_name``."""
    sinks: list[Sink] = []
    for kind, where in parse(entries):
        if kind == "tensorboard":
            if not where and out is None:
                raise ConfigError(
                    "run.log", "tensorboard needs a directory: tensorboard:DIR, or a run --out"
                )
            if where:
                sinks.append(TensorBoardSink(Path(where) / run_name))
            else:
                assert out is not None  # refused above
                sinks.append(TensorBoardSink(out / "tensorboard"))
        else:
            sinks.append(MLflowSink(where, run_name))
    return sinks


class Stream:
    """Feeds the sinks as a run goes: :meth:`update` per applied version, :meth:`evals`
    whenever evaluations were added. ``metrics`` is the table of :func:`update_metrics`
    (known before the replay on the simulator)."""

    def __init__(self, sinks: list[Sink], config: dict[str, Any], policy: str) -> None:
        self.sinks = sinks
        self._evals = 0
        for s in sinks:
            s.params(flat_params(config), policy)

    def rows(self, metrics: pd.DataFrame, first: int = 0, last: int | None = None) -> None:
        cols = [c for c in metrics.columns if c != "version"]
        block = metrics.iloc[first:last]
        for version, *values in zip(block["version"], *(block[c] for c in cols), strict=True):
            row = dict(zip(cols, (float(v) for v in values), strict=True))
            for s in self.sinks:
                s.scalars(int(version), row)

    def evals(self, version: list[int], loss: list[float], accuracy: list[float]) -> None:
        for i in range(self._evals, len(version)):
            row = {"eval/loss": float(loss[i]), "eval/accuracy": float(accuracy[i])}
            for s in self.sinks:
                s.scalars(int(version[i]), row)
        self._evals = len(version)

    def final(self, summary: dict[str, Any]) -> None:
        """The run's totals, at its last update."""
        final = {
            f"final/{k}": float(v)
            for k, v in summary.items()
            if k in ("final_loss", "final_accuracy", "end_time", "updates", "diverged")
            and isinstance(v, int | float)
        }
        step = int(summary.get("updates", 0) or 0)
        for s in self.sinks:
            s.scalars(step, final)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
        self.sinks = []


def export(trace, sinks: list[Sink]) -> None:
    """Write a finished trace (a :class:`~hybridsgd.trace.Trace`) to ``sinks``."""
    cfg = trace.summary.get("config", {})
    metrics = update_metrics(
        trace.updates,
        trace.gradients,
        int(cfg.get("policy", {}).get("workers", 1)),
        int(cfg.get("task", {}).get("batch_size", 1)),
        float(cfg.get("optimizer", {}).get("lr", math.nan)),
    )
    stream = Stream(sinks, cfg, str(trace.summary.get("policy", "")))
    stream.rows(metrics)
    ev = trace.evals
    stream.evals(ev["version"].tolist(), ev["loss"].tolist(), ev["accuracy"].tolist())
    stream.final(trace.summary)
    stream.close()
