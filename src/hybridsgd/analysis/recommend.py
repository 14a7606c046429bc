"""Rank policies for a timing model, a worker budget, a learning rate and a curvature.

Each candidate is scored by its predicted time to reduce the loss a thousand-fold along the
curvature h: the number of updates the linearised delay model x_{t+1} = x_t - eta h
sum_k p_k x_{t-k} (p the candidate's predicted staleness distribution; staleness 0 for the
synchronous family, so |1 - eta h| per update; exact rounds for ssp with s = 0) needs to
bring |x| below 1 / sqrt(1000) from the initial point (loss ~ x^2), times the predicted time
per update, each candidate at its own best lr (or at one given lr). ``hybrid`` candidates,
threshold shapes over updates scaled to the number of updates the slower of ``async`` and
``sync`` needs, step the same model with each update's regime and add up their regimes'
times. Unstable candidates rank last. Without a noise
scale the model sees curvature, delays and staleness, not gradient noise; given the task's
gradient noise scale B_noise, an update of B samples at lr makes 1 - lr h / 2 (1 + B_noise /
B) of the progress of a noiseless step, relative to 1 - lr h / 2 (McCandlish et al. 2018's
second-order model), so a task with a large noise scale favours policies that apply many
samples per update.

Local steps (``steps``, docs/local-steps.md) are ranked as Local SGD: each job H steps of
inner SGD at the candidate's lr, the server's SGD at lr 1 applying the pseudo-gradients.
Along the curvature a job from x sends (1 - (1 - lr h)^H) x, so the same delay model runs
with lr h replaced by 1 - (1 - lr h)^H (H = 1: lr h itself); a job's time is the H-fold
sum of compute draws (:func:`~hybridsgd.analysis.jobs.job_model`) plus its two messages;
each inner step counts the noise of the samples an update averages (exact for the
synchronous family on a quadratic, whose averaged local steps are minibatch steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hybridsgd.analysis.dynamics import k_async_transient
from hybridsgd.analysis.jobs import job_model
from hybridsgd.analysis.noise_scale import updates_factor
from hybridsgd.analysis.order_stats import expected_kth
from hybridsgd.analysis.predict import (
    Prediction,
    finite_mean,
    hybrid_prediction,
    predict,
    regime,
    stability_pmf,
)
from hybridsgd.analysis.stability import discrete_max_stable, discrete_radius, steps_to_reduce
from hybridsgd.errors import ConfigError
from hybridsgd.policies.hybrid import FULLY_ASYNC, FULLY_SYNC
from hybridsgd.policies.registry import REGISTRY, SYNC, PolicyConfig
from hybridsgd.policies.thresholds import parse_threshold
from hybridsgd.timing.models import Constant, TimingModel


@dataclass
class Candidate:
    spec: str  # e.g. "backup:backups=2"
    prediction: Prediction | None
    time_to_1000x: float  # predicted time for a thousand-fold loss reduction (inf: diverges)
    reason: str
    lr: float | None = None  # the lr it is ranked at (its own best, or the one given)
    steps: int = 1  # H: local steps a job (Local SGD; lr is then the inner one)

    @property
    def label(self) -> str:
        """The candidate as a table shows it: its spec, and H when it takes local steps."""
        return self.spec + (f", H = {self.steps}" if self.steps > 1 else "")


#: the lr x curvature values each candidate's own best lr is searched over
ETA_H = np.geomspace(1e-3, 2.0, 34)


def candidates(workers: int) -> list[tuple[str, str, dict]]:
    """(spec, policy, its own keys) worth comparing at this worker count: every registered
    policy's ``candidates(W)`` (hybrid's shapes are added by :func:`recommend`)."""
    out: list[tuple[str, str, dict]] = []
    for entry in REGISTRY.values():
        for params in entry.candidates(workers) if entry.candidates else ():
            spec = entry.name + (
                ":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else ""
            )
            out.append((spec, entry.name, params))
    return out


def hybrid_shapes(horizon: int) -> list[str]:
    """Threshold shapes over updates worth comparing, scaled to ``horizon`` updates."""
    H = max(2, int(horizon))
    return [
        f"step:at={H // 2}",
        f"linear:start=0,end={H}",
        f"cosine:start=0,end={H}",
        f"sigmoid:mid={H // 2},width={max(1, H // 10)}",
        f"exponential:rate={3 / H:.4g}",
    ]


FACTOR = math.sqrt(1000)  # |x| to lose for a thousand-fold loss reduction (loss ~ x^2)


def _lockstep_time(p: Prediction, eta_h: float, compute, comm, speeds) -> float:
    """ssp with s = 0, exactly: a round multiplies x by (1 - W eta h) and lasts E[max of W];
    inside a round the j-th arrival (E[j-th of W]) has moved x by j eta h of the round's
    start value."""
    W = p.lockstep
    shrink = abs(1.0 - W * eta_h)
    if shrink >= 1.0:
        return math.inf
    rounds = 0  # full rounds before the one that gets there
    while shrink ** (rounds + 1) > 1.0 / FACTOR:
        rounds += 1
    start = shrink**rounds
    j = next(j for j in range(1, W + 1) if abs(1.0 - j * eta_h) * start <= 1.0 / FACTOR)
    shift = 2.0 * (comm.mean() if comm is not None else 0.0)
    kth, _ = expected_kth(compute, W, j, speeds, shift)
    return rounds * p.mean_update_time * W + kth


def _updates_needed(p: Prediction, eta_h: float, radius: float) -> int | None:
    """Updates to a thousand-fold reduction by the linearised delay model stepped from the
    initial point."""
    cap = min(10**6, max(1000, math.ceil(20 * math.log(FACTOR) / -math.log(radius))))
    pmf = stability_pmf(p)
    return steps_to_reduce(eta_h, lambda t: pmf, FACTOR, cap)


def _hybrid_model(
    W, compute, comm, speeds, batch_size, shape, cache, cap, noise_scale=None
) -> Callable[[float], Candidate]:
    """Step the linearised delay model update by update through the threshold's regimes
    (the regimes and the transient's Monte Carlo are computed once; the returned function
    steps the model at a given lr x curvature).

    The asynchronous phase starts from rest and its staleness right after each change of K
    is not the new regime's steady state (gradients read under the old one are still
    arriving), so its first ``2 * cap / 10`` updates take their times and staleness from a
    Monte Carlo of that very sequence of windows (:func:`dynamics.k_async_transient`); later
    updates, and every synchronous one, use their regime's steady-state prediction."""
    threshold = parse_threshold(shape)
    spec = f"{_per_regime()}:threshold={shape}"
    keys: list[str] = []
    while len(keys) < cap and (not keys or keys[-1] != FULLY_SYNC):
        key, _ = regime(W, threshold(float(len(keys))), compute, comm, speeds, batch_size, cache)
        keys.append(key)
    head = min(len(keys) - (keys[-1] == FULLY_SYNC), max(1, cap // 5))  # asynchronous updates
    ks = [1 if k == FULLY_ASYNC else int(k.split("=")[1]) for k in keys[:head]]
    times, pmfs = np.zeros(0), np.zeros((0, 1))
    if head:
        times, pmfs = k_async_transient(compute, comm or Constant(0.0), W, ks, speeds, reps=100)

    def key_of(t: int) -> str:
        if t < len(keys):
            return keys[t]
        return regime(W, threshold(float(t)), compute, comm, speeds, batch_size, cache)[0]

    def pmf_of(t: int) -> np.ndarray:
        return pmfs[t] if t < head else stability_pmf(cache[key_of(t)])

    def at(eta_h: float) -> Candidate:
        return _hybrid_at(eta_h, spec, pmf_of, key_of, cap, head, times, ks, cache, W,
                          batch_size, noise_scale)  # fmt: skip

    return at


def _hybrid_at(eta_h, spec, pmf_of, key_of, cap, head, times, ks, cache, W, batch_size,
               noise_scale) -> Candidate:  # fmt: skip
    n = steps_to_reduce(eta_h, pmf_of, FACTOR, cap)
    if n is None:
        why = f"no thousand-fold reduction within {cap} updates (a regime it uses diverges)"
        return Candidate(spec, None, math.inf, why)
    runs: list[list] = []
    for t in range(n):
        key = key_of(t)
        if runs and runs[-1][0] == key:
            runs[-1][1] += 1
        else:
            runs.append([key, 1])
    if noise_scale is None:
        time = (float(times[min(n, head) - 1]) if head else 0.0) + sum(
            cache[key_of(t)].mean_update_time for t in range(head, n)
        )
    else:  # each update's time, times its regime's noise factor
        steps = np.diff(times[: min(n, head)], prepend=0.0)
        time = sum(
            float(dt) * updates_factor(noise_scale, k * batch_size, eta_h)
            for dt, k in zip(steps, ks[: len(steps)], strict=True)
        ) + sum(
            cache[key_of(t)].mean_update_time
            * updates_factor(noise_scale, cache[key_of(t)].quorum * batch_size, eta_h)
            for t in range(head, n)
        )
    pred = hybrid_prediction(W, cache, [(k, m) for k, m in runs], batch_size)
    path = " -> ".join(f"{k} x{m}" for k, m in runs[:3]) + (" ..." if len(runs) > 3 else "")
    return Candidate(spec, pred, time, f"{n} updates: {path}")


def _per_regime() -> str:
    """The registered policy predicted regime by regime (the hybrid), whose threshold
    shapes recommend tries."""
    return next(n for n, e in REGISTRY.items() if e.model == "per-regime")


#: the policy keys predict() takes by name (others reach it through ``quorum``)
_PREDICT_KEYS = ("backups", "k", "staleness_bound", "sample")


def recommend(
    workers: int,
    compute: TimingModel,
    lr: float | None,
    curvature: float,
    comm: TimingModel | None = None,
    speeds=None,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
    noise_scale: float | None = None,
    steps: Sequence[int] = (1,),
    seed: int = 0,
) -> list[Candidate]:
    """Every candidate, best first. ``progress(done, total)`` hears of each candidate
    predicted (the hybrid shapes, tried last, count as one). Each H of ``steps`` above 1
    adds every policy but the hybrid as Local SGD with H local steps a job (module doc).

    ``lr`` None (needs ``noise_scale``): each candidate at its own best lr, the one of
    :data:`ETA_H` / curvature with the least predicted time. Without noise the model's
    best lr would sit at each policy's stability edge (a noiseless quadratic converges in
    one synchronous step at lr = 1 / h); the noise model is what makes a large lr costly.
    With ``lr`` every candidate is ranked at that one lr (the practice the README warns
    against, kept to study a given lr).

    With ``noise_scale`` (the task's gradient noise scale B_noise, in samples), each
    candidate's time is multiplied by :func:`updates_factor` at ``lr x curvature`` for the
    samples its updates apply: the second-order model of McCandlish et al. 2018, in which
    noise eats ``lr h / 2 x B_noise / B`` of a step's progress. A candidate whose updates
    make no progress at this lr ranks last. Hybrid thresholds span at least the updates
    the slower of ``async`` and ``sync`` needs, so a hybrid's switch is not over before
    the target could be reached."""
    if lr is None and noise_scale is None:
        raise ConfigError(
            "--noise-scale",
            "ranking each policy at its own lr needs the gradient noise scale (a number, or "
            "a task name); or give --lr to rank every policy at one lr",
        )
    if not ((lr is None or lr > 0) and curvature > 0):
        raise ConfigError("--lr", "recommend needs a positive --lr and --curvature")
    if noise_scale is not None and not noise_scale >= 0:
        raise ConfigError("--noise-scale", f"must be >= 0 samples (got {noise_scale})")
    finite_mean(compute, "--compute")
    if comm is not None:
        finite_mean(comm, "--comm")
    if not steps or any(not isinstance(h, int) or h < 1 for h in steps):
        raise ConfigError("--steps", f"must be whole numbers >= 1 (got {list(steps)})")
    xs = [lr * curvature] if lr is not None else list(ETA_H)
    ranked = []
    jobs = {h: job_model(compute, h, seed)[0] for h in sorted(set(steps))}
    todo = [(spec, policy, params, h) for h in jobs for spec, policy, params in candidates(workers)]
    for i, (spec, policy, params, h) in enumerate(todo):
        if progress is not None:
            progress(i, len(todo) + 1)
        entry = REGISTRY[policy]
        known = {k: v for k, v in params.items() if k in _PREDICT_KEYS}
        quorum = None
        if entry.family == SYNC:
            quorum = entry.min_gradients(PolicyConfig(name=policy, workers=workers, **params))
        try:
            p = predict(
                policy,
                workers,
                jobs[h],
                comm,
                speeds=speeds,
                batch_size=batch_size * h,
                continuous=False,  # ranking uses the discrete model alone
                sweep=False,
                quorum=quorum,
                **known,
            )
        except ConfigError as exc:
            ranked.append(Candidate(spec, None, math.inf, f"no model: {exc.message}", steps=h))
            continue
        # its staleness and stability limit do not depend on the lr: once per candidate
        pmf = stability_pmf(p)
        x_max = 2.0 / p.lockstep if p.lockstep else discrete_max_stable(pmf)
        best = min(
            (_at(p, pmf, x_max, x, spec, jobs[h], comm, speeds, batch_size, noise_scale, h)
             for x in xs),
            key=lambda c: c.time_to_1000x,
        )  # fmt: skip
        best.lr = best.lr / curvature if best.lr is not None else None
        if lr is None and not math.isfinite(best.time_to_1000x):
            lo, hi = ETA_H[0] / curvature, ETA_H[-1] / curvature
            best.reason = f"no lr of {lo:.3g}-{hi:.3g} works: {best.reason}"
        ranked.append(best)
    if progress is not None:
        progress(len(todo), len(todo) + 1)
    # hybrid shapes, scaled to the updates the slower of async and sync needs
    ends = [
        round(c.time_to_1000x / c.prediction.mean_update_time)  # type: ignore[union-attr]
        for c in ranked
        if c.spec in (FULLY_ASYNC, FULLY_SYNC) and c.steps == 1 and math.isfinite(c.time_to_1000x)
    ]
    if ends:
        horizon = max(ends)
        cache: dict[str, Prediction] = {}
        for shape in hybrid_shapes(horizon):
            model = _hybrid_model(
                workers, compute, comm, speeds, batch_size, shape, cache,
                cap=10 * horizon, noise_scale=noise_scale,
            )  # fmt: skip
            tried = []
            for x in xs:
                c = model(x)
                c.lr = x / curvature
                tried.append(c)
            ranked.append(min(tried, key=lambda c: c.time_to_1000x))
    if progress is not None:
        progress(len(todo) + 1, len(todo) + 1)
    return sorted(ranked, key=lambda c: c.time_to_1000x)


def _at(
    p: Prediction,
    pmf,
    x_max: float,
    x: float,
    spec,
    compute,
    comm,
    speeds,
    batch_size,
    noise_scale,
    steps: int = 1,
) -> Candidate:
    """The candidate of prediction ``p`` (staleness ``pmf``, stable below ``x_max``) at
    lr x curvature = ``x`` (its ``lr`` field holds ``x`` until the caller divides it by
    the curvature); with ``steps`` H > 1, Local SGD whose inner lr x curvature is ``x``
    (``compute`` a job's time: H minibatches)."""
    if steps > 1 and not abs(1.0 - x) < 1.0:
        why = f"diverges: {steps} inner steps need lr x curvature < 2"
        return Candidate(spec, p, math.inf, why, x, steps)
    xd = 1.0 - (1.0 - x) ** steps if steps > 1 else x  # what a job moves x by, over x
    stable = abs(1.0 - p.lockstep * xd) < 1.0 if p.lockstep else xd < x_max
    if not stable:
        why = f"diverges: staleness {p.mean_staleness:.1f} needs lr x curvature < {x_max:.3g}"
        if steps > 1:
            why += f" (of a job's {steps} steps together)"
        return Candidate(spec, p, math.inf, why, x, steps)
    if p.lockstep:
        t = _lockstep_time(p, xd, compute, comm, speeds)
    else:
        radius = discrete_radius(xd, pmf)
        n = _updates_needed(p, xd, min(max(radius, 1e-12), 1.0 - 1e-12))
        t = math.inf if n is None else n * p.mean_update_time
    if noise_scale is not None:
        factor = updates_factor(noise_scale, p.quorum * batch_size, x)
        if math.isinf(factor):
            reason = (
                f"noise-dominated: updates of {p.quorum * batch_size:g} samples make no "
                f"progress at lr x curvature {x:.3g} (noise scale {noise_scale:.3g})"
            )
            return Candidate(spec, p, math.inf, reason, x, steps)
        t *= factor
    if p.mean_staleness == 0:
        reason = (
            f"{p.quorum:g} gradients per update every {p.mean_update_time:.3g}; "
            f"{p.wasted_fraction:.0%} of started work wasted"
        )
    else:
        reason = (
            f"an update every {p.mean_update_time:.3g} with staleness "
            f"{p.mean_staleness:.1f} (stable below lr x curvature {x_max:.3g})"
        )
    if steps > 1:
        reason = f"{steps} local steps a job; " + reason
    return Candidate(spec, p, t, reason, x, steps)
