"""What a prediction is: :class:`Prediction` and its :class:`Stability`, and the inputs
every family of models shares (docs/analysis.md)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hybridsgd.errors import ConfigError
from hybridsgd.timing.models import TimingModel


@dataclass
class Stability:
    model: str  # "discrete" or "continuous"
    stable: bool
    convergence_rate: float  # per unit of time (continuous: -Re s*; discrete: -ln|z| * rate)
    max_stable_lr: float
    best_workers: int | None = None
    workers_stop_helping: int | None = None  # beyond the best, adding workers slows training
    workers_unstable: int | None = None  # the smallest W that diverges at this learning rate
    continuous: dict[str, float] = field(default_factory=dict)  # the other model's answer


@dataclass(kw_only=True)
class Prediction:
    policy: str
    workers: int
    quorum: float  # gradients per update
    mean_update_time: float
    update_time_quantiles: dict[str, float]
    throughput: float  # samples per unit of time
    mean_staleness: float
    staleness_quantiles: dict[str, float]
    wasted_fraction: float  # of started minibatches, cancelled or dropped
    method: dict[str, str]
    assumptions: list[str]
    stability: Stability | None = None
    staleness_pmf: np.ndarray = field(default_factory=lambda: np.array([1.0]), repr=False)
    lockstep: int = 0  # ssp s=0: gradients of a round all read the round's start (W of them)
    update_time_se: float = 0.0  # Monte Carlo standard error of mean_update_time (0: exact)
    regimes: list[dict[str, Any]] = field(default_factory=list)  # hybrid: one row per regime
    # bytes a job sends and receives per sample it computes (predict_config, when the
    # message size is known); None: not known
    bytes_per_sample: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("staleness_pmf")
        if self.stability is not None:
            for key in ("stable", "convergence_rate", "max_stable_lr", "best_workers"):
                d[key] = d["stability"][key]
        return d


def finite_mean(model: TimingModel, field: str) -> None:
    """Refuse a timing model whose mean is infinite (Pareto with alpha <= 1): time per
    update, throughput and staleness are then infinite or undefined, so there is nothing to
    predict (the simulator can still run it)."""
    if not math.isfinite(model.mean()):
        raise ConfigError(
            field,
            f"{model} has an infinite mean time, so time per update, throughput and staleness "
            "are undefined; use a finite-mean model (e.g. pareto with alpha > 1)",
        )


def worker_cycles(
    compute: TimingModel, comm: TimingModel, workers: int, speeds
) -> tuple[np.ndarray, float]:
    s = np.ones(workers) if speeds is None else np.asarray(speeds, dtype=float)
    shift = 2.0 * comm.mean()
    return s * compute.mean() + shift, shift
