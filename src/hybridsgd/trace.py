"""Everything a run did, as three tables and a summary (the only input of reports).

A run directory holds::

    summary.json    config, policy, totals, final loss/accuracy, times
    config.toml     the validated config: `hybridsgd run DIR/config.toml` repeats the run
    gradients.csv   gid, worker, minibatch, read_version, start_time, end_time,
                    staleness, fate, update
    updates.csv     version, time, n_gradients, mean_staleness, max_staleness, regime,
                    lr, momentum (what each update was applied with)
    evals.csv       version, time, loss, accuracy

Each table reads in one line: ``pandas.read_csv("runs/x/gradients.csv")``.
``update`` is the version the gradient's update produced (-1 when not applied). Runs of the
hybrid partition reading add ``sync_update``: the version whose update averaged the
gradient into the synchronous tensors; runs whose jobs are sized by time
(``worker.steps = "time:T"``) add ``steps``: the local steps each job computed and sent
(0: cancelled before it sent).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hybridsgd.errors import ConfigError, DiskFull, NotSaved
from hybridsgd.record import FATES, OVER_BUDGET, Evals, Schedule

TABLES = ("gradients", "updates", "evals")


@dataclass
class Trace:
    gradients: pd.DataFrame
    updates: pd.DataFrame
    evals: pd.DataFrame
    summary: dict[str, Any]

    @classmethod
    def from_schedule(cls, schedule: Schedule, evals: Evals, summary: dict[str, Any]) -> Trace:
        s = schedule
        gradients = pd.DataFrame(
            {
                "gid": np.arange(s.n_gradients),
                "worker": s.worker,
                "minibatch": s.minibatch,
                "read_version": s.read_version,
                "start_time": s.start,
                "end_time": s.end,
                "staleness": s.staleness,
                "fate": pd.Categorical.from_codes(s.fate, categories=[str(f) for f in FATES]),
                "update": np.where(s.update >= 0, s.update + 1, -1),
            }
        )
        if s.reasons or s.overran is not None:  # why the server rejected a gradient, or
            reason = np.full(s.n_gradients, "", dtype=object)  # a job was abandoned
            for gid, why in s.reasons.items():
                reason[gid] = why
            for gid in s.overran if s.overran is not None else ():
                reason[gid] = OVER_BUDGET
            gradients["reason"] = reason
        if s.steps is not None:  # jobs sized by time: the local steps each job sent
            gradients["steps"] = s.steps
        if s.pull is not None and s.push is not None:  # a real run's messages, timed apart
            gradients["pull"], gradients["push"] = s.pull, s.push
        if s.partitioned and s.sync_update is not None:  # where the synchronous part went
            gradients["sync_update"] = np.where(s.sync_update >= 0, s.sync_update + 1, -1)
        n, mean, mx = s.per_update()
        updates = pd.DataFrame(
            {
                "version": np.arange(1, s.n_updates + 1),
                "time": s.update_time,
                "n_gradients": n,
                "mean_staleness": mean,
                "max_staleness": mx,
                "regime": s.update_regime,
            }
        )
        if s.update_lr is not None:  # the lr and momentum each update used
            updates["lr"] = s.update_lr
            updates["momentum"] = s.update_momentum
        ev = pd.DataFrame(
            {
                "version": evals.version,
                "time": evals.time,
                "loss": evals.loss,
                "accuracy": evals.accuracy,
            }
        )
        return cls(gradients, updates, ev, summary)

    def write(self, out: str | Path, config_toml: str | None = None) -> Path:
        """Write the run directory; each file appears whole (written aside, then renamed).
        The small files go first (config.toml, summary.json, then the tables from the
        smallest), so a disk that fills keeps what says what the run did."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if config_toml is not None:
            _atomic(out / "config.toml", lambda p: Path(p).write_text(config_toml))
        _atomic(
            out / "summary.json",
            lambda p: Path(p).write_text(json.dumps(json_safe(self.summary), indent=2)),
        )
        for name in ("evals", "updates", "gradients"):
            _atomic(out / f"{name}.csv", lambda p, n=name: getattr(self, n).to_csv(p, index=False))
        return out

    @classmethod
    def read(cls, run_dir: str | Path) -> Trace:
        """A run directory's trace; a missing or damaged file is a ConfigError naming it."""
        d = Path(run_dir)
        tables = {n: _read_table(d / f"{n}.csv", COLUMNS[n]) for n in TABLES}
        path = d / "summary.json"
        try:
            summary = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(str(path), "is missing: the run directory is incomplete") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(str(path), f"cannot be read as JSON ({exc})") from None
        if not isinstance(summary, dict):
            raise ConfigError(str(path), "is not a run summary (a JSON object)")
        return cls(**tables, summary=summary)


#: the columns each table must have (more may follow)
COLUMNS = {
    "gradients": (
        "gid", "worker", "minibatch", "read_version", "start_time", "end_time", "staleness",
        "fate", "update",
    ),
    "updates": ("version", "time", "n_gradients", "mean_staleness", "max_staleness", "regime"),
    "evals": ("version", "time", "loss", "accuracy"),
}  # fmt: skip


def _read_table(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ConfigError(str(path), "is missing: the run directory is incomplete") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(str(path), f"cannot be read as CSV ({first})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConfigError(
            str(path), f"is not a hybridsgd trace table: no column {', '.join(missing)}"
        )
    return df


def _atomic(path: Path, write) -> None:
    """Write ``path`` whole or not at all: into a temp file unique to this process, fsync,
    rename. A failed write removes its temp file; for want of space it raises DiskFull."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except Exception as exc:
        # torch.save reports a full disk as "unexpected pos": look at the device itself
        full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or _no_room(path.parent)
        tmp.unlink(missing_ok=True)
        if full:
            raise DiskFull(
                f"no space left on the device of {path.parent} while writing {path.name}"
            ) from None
        if isinstance(exc, OSError):
            raise NotSaved(f"cannot write {path} ({exc.strerror or exc})") from None
        raise
    os.replace(tmp, path)


def _no_room(directory: Path, least: int = 1 << 16) -> bool:
    try:
        return shutil.disk_usage(directory).free < least
    except OSError:
        return False


def json_safe(value: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN and infinities to null."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
