"""A schedule: who computed on which version, when, and what became of it.

The schedule depends only on timing and on the policy's decisions, never on parameter
values (DESIGN.md section 2), so the simulator computes it first and replays the numerics
after. Gradient ids are row numbers, in the order the policy saw pushes and cancellations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridsgd.policies.base import Fate

FATES = (Fate.APPLIED, Fate.DROPPED, Fate.CANCELLED, Fate.PENDING)
APPLIED, DROPPED, CANCELLED, PENDING = range(4)
FATE_CODE = {f: i for i, f in enumerate(FATES)}


@dataclass
class Schedule:
    """Column arrays, one row per gradient; ``update_time[u]`` is when version u+1 appeared."""

    worker: np.ndarray  # int64
    minibatch: np.ndarray  # int64: the worker's k-th minibatch (its data slot)
    read_version: np.ndarray  # int64
    start: np.ndarray  # float64: when the worker read the parameters
    end: np.ndarray  # float64: arrival, or cancellation
    fate: np.ndarray  # int8 code into FATES
    update: np.ndarray  # int64: index u of the update (new version u+1) or -1
    staleness: np.ndarray  # int64: version at arrival (or cancellation) minus read version
    update_time: np.ndarray  # float64 [updates]
    workers: int
    path: str  # "events", "rounds" or "renewal": how it was produced
    update_regime: np.ndarray | None = None  # float64 [updates]: synchrony level used
    # hybrid partition reading only: the update that averaged each gradient into the
    # synchronous tensors (-1: none), and how many leading tensors were synchronous per update
    sync_update: np.ndarray | None = None
    update_sync_tensors: np.ndarray | None = None

    @property
    def partitioned(self) -> bool:
        return self.update_sync_tensors is not None and bool((self.update_sync_tensors > 0).any())

    @property
    def n_updates(self) -> int:
        return len(self.update_time)

    @property
    def n_gradients(self) -> int:
        return len(self.worker)

    @property
    def end_time(self) -> float:
        return float(self.update_time[-1]) if self.n_updates else 0.0

    def counts(self) -> dict[str, int]:
        c = np.bincount(self.fate, minlength=len(FATES))
        return {f: int(c[i]) for i, f in enumerate(FATES)}

    def per_update(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Gradients per update, their mean and max staleness."""
        mask = self.fate == APPLIED
        u, s = self.update[mask], self.staleness[mask]
        n = np.bincount(u, minlength=self.n_updates)
        total = np.bincount(u, weights=s, minlength=self.n_updates)
        mx = np.full(self.n_updates, -1, dtype=np.int64)
        np.maximum.at(mx, u, s)
        with np.errstate(invalid="ignore", divide="ignore"):
            return n, total / n, mx

    def equals(self, other: Schedule) -> bool:
        """Bit-for-bit equality of every column."""
        cols = (
            "worker",
            "minibatch",
            "read_version",
            "start",
            "end",
            "fate",
            "update",
            "staleness",
        )
        return all(
            np.array_equal(getattr(self, c), getattr(other, c)) for c in cols
        ) and np.array_equal(self.update_time, other.update_time)
