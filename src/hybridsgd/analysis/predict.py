"""Predictions for a policy, W workers and a timing model, without training.

Every prediction says which method produced each number and what it assumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hybridsgd.analysis import dynamics, heterogeneous
from hybridsgd.analysis.order_stats import expected_kth, kth_quantiles
from hybridsgd.analysis.predict_async import (
    async_staleness_pmf,
    estimated,
    per_update_staleness,
    ssp_zero,
    trim_pmf,
)
from hybridsgd.analysis.predict_hybrid import (
    hybrid_prediction,
    hybrid_regimes,
    hybrid_stability,
    regime,
)
from hybridsgd.analysis.predict_stability import (
    stability_of,
    stability_pmf,
)
from hybridsgd.analysis.predict_sync import k_batch_sync_time
from hybridsgd.analysis.prediction import Prediction, Stability, finite_mean, worker_cycles
from hybridsgd.errors import ConfigError
from hybridsgd.policies import REGISTRY
from hybridsgd.policies.optimal_time import parse_budgets
from hybridsgd.policies.registry import ASYNC, SYNC, PolicyConfig, family
from hybridsgd.timing.models import Constant, TimingModel

#: the registered policies each family of closed forms covers (``Registered.family``)
SYNC_FAMILY = family(SYNC)

ASYNC_FAMILY = family(ASYNC)

#: the policy keys predict() takes by name: a policy's own keys of these names reach it
PREDICT_KEYS = (
    "backups", "k", "staleness_bound", "sample", "progress", "delay_threshold", "stops", "late",
    "budgets", "alpha",
)  # fmt: skip

#: the registered policies predicted regime by regime (predictor "per-regime")
PER_REGIME = tuple(n for n, e in REGISTRY.items() if e.model == "per-regime")


@dataclass
class Inputs:
    """What :func:`predict` was given, and what every predictor derives from it."""

    policy: str
    W: int
    compute: TimingModel
    comm: TimingModel
    speeds: Any
    batch_size: int
    backups: int
    k: int | None
    staleness_bound: float | None
    sample: int | None
    threshold: Callable[[float], float] | None
    progress: str
    updates: int
    gradients_per_epoch: float
    lr: float | None
    curvature: float | None
    continuous: bool
    sweep: bool
    mc_budget: float
    seed: int
    quorum: int | None
    delay_threshold: float | None
    stops: bool
    late: str
    budgets: list[float] | None = None  # each worker's time budget per minibatch (MindFlayer)
    alpha: float | str = "empirical"  # ATA's confidence scale
    assumptions: list[str] = field(default_factory=list)
    qs: tuple[float, ...] = (0.5, 0.9, 0.99)

    def __post_init__(self) -> None:
        self.cycles, self.shift = worker_cycles(self.compute, self.comm, self.W, self.speeds)

    @staticmethod
    def label(q: float) -> str:
        return f"p{round(q * 100)}"

    def finish(self, pred: Prediction) -> Prediction:
        """With an lr and a curvature: the prediction's stability too."""
        if self.lr is not None and self.curvature is not None:
            pred.stability = stability_of(
                pred,
                lr=self.lr,
                h=self.curvature,
                compute=self.compute,
                comm=self.comm,
                speeds=self.speeds,
                batch_size=self.batch_size,
                policy=self.policy,
                k=self.k,
                backups=self.backups,
                s_bound=self.staleness_bound,
                continuous=self.continuous,
                sweep=self.sweep,
                sample=self.sample,
            )
        return pred

    def steady(self) -> list[str]:
        return [*self.assumptions, "steady state: the start-up transient is dropped"]

    def from_dynamics(
        self, est, wasted: float, method: dict[str, str], steady: bool = True
    ) -> Prediction:
        """A prediction from a Monte Carlo of a policy's exact dynamics (and its waste), in
        its steady state or (``steady`` False) over whole runs."""
        assumptions = self.steady() if steady else list(self.assumptions)
        pred = estimated(
            self.policy, self.W, est, self.batch_size, self.qs, self.label, assumptions, method
        )
        pred.wasted_fraction = wasted
        return self.finish(pred)

    def monte_carlo(
        self, est, wasted: float, dynamics: str, staleness: str, steady: bool = True,
        replicas: int = 8,
    ) -> Prediction:  # fmt: skip
        """A prediction from a Monte Carlo of the exact ``dynamics`` (said in words), its
        standard error stated, and how its ``staleness`` is known."""
        se = est.standard_error / est.mean_update_time
        method = {
            "update_time": f"the exact dynamics ({dynamics}), Monte Carlo of {replicas} replicas: "
            f"+-{se:.2%} (1 standard error)",
            "staleness": staleness,
        }
        return self.from_dynamics(est, wasted, method, steady)

    def draws(self, per_unit: int) -> int:
        return max(1000, round(per_unit * self.mc_budget))


def predict(
    policy: str,
    workers: int,
    compute: TimingModel,
    comm: TimingModel | None = None,
    *,
    speeds=None,
    batch_size: int = 32,
    backups: int = 0,
    k: int | None = None,
    staleness_bound: float | None = None,
    sample: int | None = None,
    threshold: Callable[[float], float] | None = None,
    progress: str = "updates",
    updates: int = 20_000,
    gradients_per_epoch: float = 1.0,
    lr: float | None = None,
    curvature: float | None = None,
    continuous: bool = True,
    sweep: bool = True,
    mc_budget: float = 1.0,
    seed: int = 0,
    quorum: int | None = None,
    delay_threshold: float | None = None,
    stops: bool = False,
    late: str = "cancel",
    budgets: float | list[float] | str | None = None,
    alpha: float | str = "empirical",
) -> Prediction:
    """Mean time per update and its spread, throughput, staleness and wasted work; with
    ``lr`` and ``curvature`` (largest Hessian eigenvalue), stability and speed too.

    Each policy names its predictor in the registry (``Registered.predictor``, one of
    :data:`PREDICTORS`). ``k_async`` (1 < K) and ``ssp`` / ``psp`` with 0 < s < inf are
    estimated by Monte Carlo of their exact dynamics (:mod:`~hybridsgd.analysis.dynamics`;
    ``mc_budget`` scales its size, ``seed`` seeds it); ``hybrid`` (quorum reading) is
    predicted regime by regime over ``updates`` updates of ``threshold(progress)``."""
    comm = comm or Constant(0.0)
    finite_mean(compute, "--compute")
    finite_mean(comm, "--comm")
    assumptions = ["workers' times are independent from minibatch to minibatch"]
    if not comm.is_constant:
        assumptions.append("random communication time replaced by its mean")
    entry = REGISTRY.get(policy)
    how = PREDICTORS.get(entry.model) if entry is not None else None
    if entry is None or how is None:
        # the synchronous family, the asynchronous one, then the others with a model
        rank = {SYNC: 0, ASYNC: 1}
        modelled = [(n, e) for n, e in REGISTRY.items() if e.model in PREDICTORS]
        known = [n for n, e in sorted(modelled, key=lambda ne: rank.get(ne[1].family or "", 2))]
        raise ConfigError(
            "policy", f"no analytical model for {policy!r}; use one of: " + ", ".join(known)
        )
    if quorum is None and entry.family == SYNC and not entry.required:
        quorum = _quorum_of(entry, workers, backups)
    x = Inputs(
        policy, workers, compute, comm, speeds, batch_size, backups, k, staleness_bound,
        sample, threshold, progress, updates, gradients_per_epoch, lr, curvature, continuous,
        sweep, mc_budget, seed, quorum, delay_threshold, stops, late,
        None if budgets in (None, "") else parse_budgets(budgets, workers), alpha, assumptions,
    )  # fmt: skip
    return how(x)


def _quorum_of(entry, workers: int, backups: int) -> int:
    """The quorum of a synchronous policy that requires no key of its own, from its registry
    entry (min_gradients: all W, or W - backups); one that requires a key (K, B, m) gets
    its quorum as ``quorum`` or ``k``."""
    own: dict[str, Any] = {"backups": backups} if "backups" in entry.keys else {}
    return entry.min_gradients(PolicyConfig(name=entry.name, workers=workers, options=own))


def _ringmaster(x: Inputs) -> Prediction:
    if x.delay_threshold is None or not x.delay_threshold >= 1:
        raise ConfigError("policy.delay_threshold", f"{x.policy} needs R >= 1 (or inf)")
    est, wasted = dynamics.ringmaster(
        x.compute, x.comm, x.W, x.delay_threshold, x.stops, x.speeds, x.draws(40_000), x.seed
    )
    how = "stopped when its delay reaches R" if x.stops else "ignored when its delay is >= R"
    return x.monte_carlo(
        est, wasted, f"every gradient {how}",
        "updates between a gradient's read and its arrival, same Monte Carlo",
    )  # fmt: skip


def _malenia(x: Inputs) -> Prediction:
    """Rounds that end at the slowest worker's first minibatch, every worker restarted."""
    est, wasted = heterogeneous.malenia(x.compute, x.comm, x.W, x.speeds, x.draws(20_000), x.seed)
    return x.monte_carlo(
        est, wasted, "a round ends when every worker has sent one minibatch; all restart",
        "none by construction (every worker restarts on each version)",
    )  # fmt: skip


def _mindflayer(x: Inputs) -> Prediction:
    """Rennala's rounds whose attempts end at their worker's time budget."""
    if x.quorum is None or x.quorum < 1 or x.budgets is None:
        raise ConfigError("policy", f"{x.policy} needs a batch B >= 1 and time budgets")
    est, wasted = heterogeneous.mindflayer(
        x.compute, x.comm, x.W, x.quorum, x.budgets, x.speeds, x.draws(20_000), x.seed
    )
    return x.monte_carlo(
        est, wasted, "the B-th minibatch of a round from anyone; an attempt past its budget "
        "is abandoned and retried", "none by construction (every worker restarts on each "
        "version)",
    )  # fmt: skip


def _ata(x: Inputs) -> Prediction:
    """Rounds of B minibatches allocated by ATA's bandit."""
    if x.quorum is None or x.quorum < 1:
        raise ConfigError("policy.batch", f"{x.policy} needs a batch B >= 1")
    est = heterogeneous.ata(x.compute, x.comm, x.W, x.quorum, x.alpha, x.speeds, x.updates, x.seed)
    x.assumptions.append(
        f"a run of {x.updates} updates from its start (--updates): the bandit keeps "
        "exploring, so its time per update depends on the run's length"
    )
    return x.monte_carlo(
        est, 0.0, "rounds of B minibatches shared out by the bandit; a round lasts the "
        "longest worker's share; whole runs", "none by construction (every worker reads "
        "the round's version)", steady=False, replicas=4,
    )  # fmt: skip


def _ringleader(x: Inputs) -> Prediction:
    """Cycles of a gathering and W steps over W uninterrupted renewal streams."""
    est = heterogeneous.ringleader(x.compute, x.comm, x.W, x.speeds, x.draws(40_000), x.seed)
    return x.monte_carlo(
        est, 0.0, "cycles: gather until every worker has sent one, then one step per worker",
        "updates between a gradient's read and its arrival, same Monte Carlo",
    )  # fmt: skip


def _fresh_drop(x: Inputs) -> Prediction:
    """The first B fresh gradients from any workers, stale ones dropped."""
    if x.quorum is None or x.quorum < 1:
        raise ConfigError("policy.batch", f"{x.policy} needs a batch B >= 1")
    est, wasted = dynamics.rennala_drop(
        x.compute, x.comm, x.W, x.quorum, x.speeds, x.draws(20_000), x.seed
    )
    return x.monte_carlo(
        est, wasted, "no worker is interrupted: the B-th fresh arrival of W renewal streams "
        "fires", "none by construction (stale gradients are dropped)",
    )  # fmt: skip


def _first_k(x: Inputs, any_workers: bool, most: float) -> Prediction:
    """The first K gradients of a version (k_sync's model), from distinct workers or, with
    ``any_workers``, K minibatches from anyone; K is the policy's ``quorum`` (its registry
    entry's min_gradients), or ``k``; ``most``: the largest K it takes."""
    W, label = x.W, x.label
    kk = x.quorum if x.quorum is not None else x.k
    if kk is None or not 1 <= kk <= most:
        raise ConfigError("policy", f"{x.policy} needs a quorum in [1, {W}]")
    if any_workers:
        t, how = k_batch_sync_time(x.compute, W, kk, x.speeds, x.shift)
        tq = {}
        wasted = (W - 1) / (kk + W - 1)  # per update: K applied, the W - 1 others stopped
    else:
        t, how = expected_kth(x.compute, W, kk, x.speeds, x.shift)
        quantiles = kth_quantiles(x.compute, W, kk, x.qs, x.speeds, x.shift)
        tq = {label(q): v for q, v in quantiles.items()}
        wasted = (W - kk) / W
    pred = Prediction(
        policy=x.policy,
        workers=W,
        quorum=kk,
        mean_update_time=t,
        update_time_quantiles=tq,
        throughput=kk * x.batch_size / t,
        mean_staleness=0.0,
        staleness_quantiles={label(q): 0.0 for q in x.qs},
        wasted_fraction=wasted,
        method={"update_time": how, "staleness": "none by construction"},
        assumptions=x.assumptions,
    )
    return x.finish(pred)


def _any_fresh(x: Inputs) -> Prediction:
    """The first B fresh gradients from any workers: B may exceed W; stale ones dropped
    (``late = "drop"``) or their jobs cancelled."""
    return _fresh_drop(x) if x.late == "drop" else _first_k(x, True, math.inf)


def _renewal_assumptions(x: Inputs) -> list[str]:
    """The async family's assumptions: the steady state it shares with the Monte Carlos,
    and the renewal model's own (appended to ``x.assumptions``)."""
    steady = x.steady()
    x.assumptions.append("steady state (renewal); staleness distribution by Poisson approximation")
    return steady


def _k_checked(x: Inputs) -> int:
    if x.k is None or not 1 <= x.k <= x.W:
        raise ConfigError("policy", f"{x.policy} needs k in [1, {x.W}]")
    return x.k


def _renewal(x: Inputs, per_update: float = 1.0) -> Prediction:
    """Every arrival applied, ``per_update`` gradients per update: the renewal model."""
    W, label = x.W, x.label
    rate = float(np.sum(1.0 / x.cycles))  # arrivals per unit time, renewal theorem
    # the mean is exact by counting: at each update the W - 1 other gradients in flight
    # grow one version staler, whatever the distribution of compute times
    mean_stale = (W - 1) / per_update
    pmf = async_staleness_pmf(x.compute, x.comm, W, x.speeds, rate, x.shift, W - 1.0)
    pmf = trim_pmf(per_update_staleness(pmf, per_update))
    t = per_update / rate
    pred = Prediction(
        policy=x.policy,
        workers=W,
        quorum=per_update,
        mean_update_time=t,
        update_time_quantiles={},
        throughput=per_update * x.batch_size / t,
        mean_staleness=mean_stale,
        staleness_quantiles={label(q): float(np.searchsorted(np.cumsum(pmf), q)) for q in x.qs},
        wasted_fraction=0.0,
        method={
            "update_time": "renewal: (gradients per update) / sum_w 1 / E[cycle_w]",
            "staleness": "mean: (W - 1) / (gradients per update), exact in steady state; "
            "distribution: Poisson mixture",
        },
        assumptions=x.assumptions,
        staleness_pmf=pmf,
    )
    return x.finish(pred)


def _every_arrival(x: Inputs) -> Prediction:
    _renewal_assumptions(x)
    return _renewal(x)


def _any_k(x: Inputs) -> Prediction:
    """Any K arrivals per update, stale ones accepted."""
    _renewal_assumptions(x)
    return _renewal(x, float(_k_checked(x)))


def _k_window(x: Inputs) -> Prediction:
    """K arrivals from distinct workers per update, stale ones accepted: the exact dynamics
    by Monte Carlo (the renewal model when K = 1)."""
    steady = _renewal_assumptions(x)
    k = _k_checked(x)
    if k == 1:
        return _renewal(x, float(k))
    est = dynamics.k_async(x.compute, x.comm, x.W, k, x.speeds, x.draws(40_000), x.seed)
    se = est.standard_error / est.mean_update_time
    method = {
        "update_time": "windows of K distinct workers over W independent renewal streams "
        f"(the exact dynamics), Monte Carlo: +-{se:.2%} (1 standard error)",
        "staleness": "updates between a gradient's read and its arrival, same Monte Carlo",
    }
    return x.finish(estimated(x.policy, x.W, est, x.batch_size, x.qs, x.label, steady, method))


def _gated(x: Inputs, beta: int | None) -> Prediction:
    """Every arrival applied behind a barrier on worker clocks: a worker may start while at
    most ``staleness_bound`` ticks ahead of ``beta`` workers (all W, or a sample)."""
    steady = _renewal_assumptions(x)
    W, s_bound = x.W, x.staleness_bound
    if s_bound is None or s_bound < 0:
        raise ConfigError("policy", f"{x.policy} needs staleness_bound >= 0")
    if beta is None or not 1 <= beta <= W:
        raise ConfigError("policy", f"{x.policy} needs a sample (beta) in [1, {W}]")
    if math.isinf(s_bound):
        return _renewal(x)  # never waits: asynchronous
    if s_bound < 1 and beta == W:
        return x.finish(
            ssp_zero(x.policy, W, x.compute, x.speeds, x.shift, x.batch_size, x.assumptions,
                     x.qs, x.label)
        )  # fmt: skip
    est = dynamics.gated(
        x.compute, x.comm, W, s_bound, beta, x.speeds, round(4e6 * x.mc_budget), x.seed
    )
    who = "every worker" if beta == W else f"a fresh sample of {beta} workers"
    se = est.standard_error / est.mean_update_time
    method = {
        "update_time": f"max-plus recursion of the barrier on {who} (the exact "
        f"dynamics), Monte Carlo over {est.gradients:,} gradients: +-{se:.2%} "
        "(1 standard error)",
        "staleness": "pushes by others between a gradient's start and its arrival, "
        "counted in the same recursion",
    }
    if beta < W and x.compute.is_constant and (x.comm is None or x.comm.is_constant):
        steady.append(  # (ssp's ties are ordered as the simulator orders them)
            "arrivals that tie in time (constant times) count as simultaneous, so the "
            "staleness is under-counted: the simulator orders them by worker (simulate it)"
        )
    return x.finish(estimated(x.policy, W, est, x.batch_size, x.qs, x.label, steady, method))


def _per_regime(x: Inputs) -> Prediction:
    if x.threshold is None:
        raise ConfigError("policy.threshold", f"{x.policy} needs a threshold, e.g. step:at=5000")
    regimes, plan = hybrid_regimes(
        x.W, x.compute, x.comm, x.speeds, x.batch_size, x.threshold, x.progress, x.updates,
        x.gradients_per_epoch,
    )  # fmt: skip
    pred = hybrid_prediction(x.W, regimes, plan, x.batch_size, x.assumptions)
    if x.lr is not None and x.curvature is not None:
        pred.stability = hybrid_stability(regimes, plan, x.lr, x.curvature)
    return pred


#: the predictors a policy may name in the registry (``Registered.predictor``)
PREDICTORS: dict[str, Callable[[Inputs], Prediction]] = {
    "first-k-distinct": lambda x: _first_k(x, False, x.W),  # sync, backup, k_sync, m_sync
    "first-k-any": lambda x: _first_k(x, True, x.W),  # any K minibatches
    "first-b-fresh": _any_fresh,  # any B fresh gradients, B unbounded
    "every-arrival": _every_arrival,  # async
    "any-k-arrivals": _any_k,
    "k-distinct-arrivals": _k_window,
    "clock-barrier": lambda x: _gated(x, x.W),
    "sampled-clock-barrier": lambda x: _gated(x, x.sample),
    "delay-threshold": _ringmaster,
    "every-worker-round": _malenia,
    "gather-then-step": _ringleader,
    "first-b-within-budget": _mindflayer,
    "bandit-rounds": _ata,
    "per-regime": _per_regime,
}


__all__ = [
    "ASYNC_FAMILY",
    "PER_REGIME",
    "SYNC_FAMILY",
    "Prediction",
    "Stability",
    "finite_mean",
    "hybrid_prediction",
    "predict",
    "regime",
    "stability_pmf",
]
