"""Predictions for a policy, W workers and a timing model, without training.

Every prediction says which method produced each number and what it assumed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from hybridsgd.analysis import dynamics
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
from hybridsgd.policies.registry import family
from hybridsgd.timing.models import Constant, TimingModel

#: the registered policies each family of closed forms covers (``Registered.family``)
SYNC_FAMILY = family("sync")

ASYNC_FAMILY = family("async")

PER_REGIME = ("hybrid",)  # predicted regime by regime (see hybrid_regimes)


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
) -> Prediction:
    """Mean time per update and its spread, throughput, staleness and wasted work; with
    ``lr`` and ``curvature`` (largest Hessian eigenvalue), stability and speed too.

    ``k_async`` (1 < K) and ``ssp`` / ``psp`` with 0 < s < inf are estimated by Monte
    Carlo of their exact dynamics (:mod:`~hybridsgd.analysis.dynamics`; ``mc_budget``
    scales its size, ``seed`` seeds it); ``hybrid``
    (quorum reading) is predicted regime by regime over ``updates`` updates of
    ``threshold(progress)``."""
    comm = comm or Constant(0.0)
    W = workers
    finite_mean(compute, "--compute")
    finite_mean(comm, "--comm")
    assumptions = ["workers' times are independent from minibatch to minibatch"]
    if not comm.is_constant:
        assumptions.append("random communication time replaced by its mean")
    cycles, shift = worker_cycles(compute, comm, W, speeds)
    qs = (0.5, 0.9, 0.99)
    label = lambda q: f"p{round(q * 100)}"  # noqa: E731

    def finish(pred: Prediction) -> Prediction:
        if lr is not None and curvature is not None:
            pred.stability = stability_of(
                pred,
                lr=lr,
                h=curvature,
                compute=compute,
                comm=comm,
                speeds=speeds,
                batch_size=batch_size,
                policy=policy,
                k=k,
                backups=backups,
                s_bound=staleness_bound,
                continuous=continuous,
                sweep=sweep,
                sample=sample,
            )
        return pred

    def from_dynamics(est, wasted: float, method: dict[str, str]) -> Prediction:
        """A prediction from a Monte Carlo of a policy's exact dynamics (and its waste)."""
        steady = [*assumptions, "steady state: the start-up transient is dropped"]
        pred = estimated(policy, W, est, batch_size, qs, label, steady, method)
        pred.wasted_fraction = wasted
        return finish(pred)

    if policy == "ringmaster":
        if delay_threshold is None or not delay_threshold >= 1:
            raise ConfigError("policy.delay_threshold", "ringmaster needs R >= 1 (or inf)")
        est, wasted = dynamics.ringmaster(
            compute, comm, W, delay_threshold, stops, speeds, max(1000, round(40_000 * mc_budget)),
            seed,
        )  # fmt: skip
        se = est.standard_error / est.mean_update_time
        how = "stopped when its delay reaches R" if stops else "ignored when its delay is >= R"
        method = {
            "update_time": f"the exact dynamics (every gradient {how}), Monte Carlo of 8 "
            f"replicas: +-{se:.2%} (1 standard error)",
            "staleness": "updates between a gradient's read and its arrival, same Monte Carlo",
        }
        return from_dynamics(est, wasted, method)
    if policy == "rennala" and late == "drop":
        if quorum is None or quorum < 1:
            raise ConfigError("policy.batch", "rennala needs a batch B >= 1")
        est, wasted = dynamics.rennala_drop(
            compute, comm, W, quorum, speeds, max(1000, round(20_000 * mc_budget)), seed
        )
        se = est.standard_error / est.mean_update_time
        method = {
            "update_time": "the exact dynamics (no worker is interrupted: the B-th fresh "
            f"arrival of W renewal streams fires), Monte Carlo of 8 replicas: +-{se:.2%}",
            "staleness": "none by construction (stale gradients are dropped)",
        }
        return from_dynamics(est, wasted, method)
    if policy in family("sync"):
        # the first K gradients of a version from distinct workers (k_sync's model); K from
        # the policy's name, or ``quorum`` (a registered policy's min_gradients)
        kk = quorum if quorum is not None else {"sync": W, "backup": W - backups}.get(policy, k)
        any_workers = policy in ("k_batch_sync", "rennala")  # K minibatches, from anyone
        if kk is None or not 1 <= kk <= (math.inf if policy == "rennala" else W):
            raise ConfigError("policy", f"{policy} needs a quorum in [1, {W}]")
        if any_workers:
            t, how = k_batch_sync_time(compute, W, kk, speeds, shift)
            tq = {}
            wasted = (W - 1) / (kk + W - 1)  # per update: K applied, the W - 1 others stopped
        else:
            t, how = expected_kth(compute, W, kk, speeds, shift)
            tq = {label(q): v for q, v in kth_quantiles(compute, W, kk, qs, speeds, shift).items()}
            wasted = (W - kk) / W
        pred = Prediction(
            policy=policy,
            workers=W,
            quorum=kk,
            mean_update_time=t,
            update_time_quantiles=tq,
            throughput=kk * batch_size / t,
            mean_staleness=0.0,
            staleness_quantiles={label(q): 0.0 for q in qs},
            wasted_fraction=wasted,
            method={"update_time": how, "staleness": "none by construction"},
            assumptions=assumptions,
        )
    elif policy in family("async"):
        rate = float(np.sum(1.0 / cycles))  # arrivals per unit time, renewal theorem
        steady = [*assumptions, "steady state: the start-up transient is dropped"]  # Monte Carlo
        assumptions.append(
            "steady state (renewal); staleness distribution by Poisson approximation"
        )
        if policy in ("k_batch_async", "k_async") and (k is None or not 1 <= k <= W):
            raise ConfigError("policy", f"{policy} needs k in [1, {W}]")
        if policy == "k_batch_async" or (policy == "k_async" and k == 1):
            per_update = float(k)  # type: ignore[arg-type]  # checked above
        elif policy == "k_async":
            assert k is not None
            est = dynamics.k_async(
                compute, comm, W, k, speeds, max(1000, round(40_000 * mc_budget)), seed
            )
            se = est.standard_error / est.mean_update_time
            method = {
                "update_time": "windows of K distinct workers over W independent renewal streams "
                f"(the exact dynamics), Monte Carlo: +-{se:.2%} (1 standard error)",
                "staleness": "updates between a gradient's read and its arrival, same Monte Carlo",
            }
            return finish(estimated(policy, W, est, batch_size, qs, label, steady, method))
        elif policy in ("ssp", "psp"):
            if staleness_bound is None or staleness_bound < 0:
                raise ConfigError("policy", f"{policy} needs staleness_bound >= 0")
            beta = W if policy == "ssp" else sample
            if beta is None or not 1 <= beta <= W:
                raise ConfigError("policy", f"psp needs a sample (beta) in [1, {W}]")
            if math.isinf(staleness_bound):
                per_update = 1.0  # never waits: async
            elif staleness_bound < 1 and beta == W:
                return finish(
                    ssp_zero(policy, W, compute, speeds, shift, batch_size, assumptions, qs, label)
                )
            else:
                est = dynamics.gated(
                    compute, comm, W, staleness_bound, beta, speeds, round(4e6 * mc_budget), seed
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
                return finish(estimated(policy, W, est, batch_size, qs, label, steady, method))
        else:
            per_update = 1.0
        # the mean is exact by counting: at each update the W - 1 other gradients in flight
        # grow one version staler, whatever the distribution of compute times
        mean_stale = (W - 1) / per_update
        pmf = async_staleness_pmf(compute, comm, W, speeds, rate, shift, W - 1.0)
        pmf = trim_pmf(per_update_staleness(pmf, per_update))
        t = per_update / rate
        pred = Prediction(
            policy=policy,
            workers=W,
            quorum=per_update,
            mean_update_time=t,
            update_time_quantiles={},
            throughput=per_update * batch_size / t,
            mean_staleness=mean_stale,
            staleness_quantiles={label(q): float(np.searchsorted(np.cumsum(pmf), q)) for q in qs},
            wasted_fraction=0.0,
            method={
                "update_time": "renewal: (gradients per update) / sum_w 1 / E[cycle_w]",
                "staleness": "mean: (W - 1) / (gradients per update), exact in steady state; "
                "distribution: Poisson mixture",
            },
            assumptions=assumptions,
            staleness_pmf=pmf,
        )
    elif policy in PER_REGIME:
        if threshold is None:
            raise ConfigError("policy.threshold", "hybrid needs a threshold, e.g. step:at=5000")
        regimes, plan = hybrid_regimes(
            W, compute, comm, speeds, batch_size, threshold, progress, updates, gradients_per_epoch
        )
        pred = hybrid_prediction(W, regimes, plan, batch_size, assumptions)
        if lr is not None and curvature is not None:
            pred.stability = hybrid_stability(regimes, plan, lr, curvature)
        return pred
    else:
        raise ConfigError(
            "policy",
            f"no analytical model for {policy!r}; use one of: "
            + ", ".join(family("sync") + family("async") + PER_REGIME + ("ringmaster",)),
        )
    return finish(pred)


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
