"""A timing model fitted to measured job times (issue 31): which workers are persistently
slow, the distribution of a job's time once their speeds are divided out, and slow
episodes that last several jobs.

The model it fits is the simulator's own (docs/design.md section 4): worker ``w``'s j-th
job takes ``speed[w] * X`` with X drawn i.i.d. from ``timing.compute``, times a factor
while a slow episode (``timing.transient``) covers it. So:

1. **Speeds.** For any location functional L, L(log(s X)) = log s + L(log X): the ratio of
   two workers' L over their log times estimates the ratio of their speeds, whatever the
   family. L is the 10%-trimmed mean (robust to the tails and to slow episodes, nearly as
   efficient as the mean); once the family is chosen (3), each worker's scale is taken
   again with that family's own estimator (the mean for exp, shifted-exp and gamma, the
   geometric mean for lognormal, the minimum for pareto, the mid-range for uniform; not
   with slow episodes, which they are not robust to) and the family refitted. Speeds are
   relative to the median worker (1.0; for an even number of workers, the geometric mean
   of the two middle ones), each with a 95% percentile-bootstrap interval of the trimmed
   mean (all workers resampled together, the median worker recomputed in each resample),
   moved to the refined estimate.
2. **Slow episodes.** When the residual log times (speeds divided out) are autocorrelated
   along each worker's job order (pooled lag-1 autocorrelation above 4 / sqrt(n): i.i.d.
   jobs pass this in all but about 3 in 100,000 cases), jobs in runs of two or more above
   twice the median residual are taken as episodes: their factor is the ratio of medians,
   their duration the mean time a run lasts, their rate the number of runs per unit of
   time outside them.
3. **The family.** Among the simulator's models (exp, shifted-exp, lognormal, gamma, pareto,
   uniform), fitted by maximum likelihood with ``scipy.stats`` on the residuals of the
   jobs outside episodes, the one with the least BIC (k ln n - 2 ln L: it keeps a nested
   two-parameter family from winning by chance). The goodness of fit is the
   Kolmogorov-Smirnov statistic of the chosen fit, with its p-value (approximate: the
   parameters were fitted to the same data). A best fit with p < 0.001 and a distance
   above 0.05 explains nothing: ``explained`` is False and the caller should replay the
   measurements instead.

**Shared processors.** When the workers share ``cores`` processors (``timing.cores``), a
measured job time is not its work: while n jobs ran at once it went at min(1, cores / n).
:func:`shared_work` turns each job's time back into work, from the concurrency the table
itself shows, before anything above is fitted; the simulator then shares the cores again
under whatever policy it runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from hybridsgd.errors import ConfigError
from hybridsgd.timing.cluster import Transient

#: fewest jobs per worker a fit accepts
MIN_JOBS = 20
#: the families tried, in order (ties go to the earlier, simpler one)
FAMILIES = ("exp", "shifted-exp", "lognormal", "gamma", "pareto", "uniform")
#: pooled lag-1 autocorrelation above this many standard errors means slow episodes
EPISODE_Z = 4.0
#: a job is slow when its residual exceeds this multiple of the median residual
SLOW = 2.0
#: a best fit explains nothing when its KS p-value is below EXPLAINED_P and its KS distance
#: above EXPLAINED_D: with thousands of jobs the test alone rejects fits off by a hair
#: (residuals divide by estimated speeds, which smear a sharp minimum), and with few jobs
#: the distance alone is noise
EXPLAINED_P = 1e-3
EXPLAINED_D = 0.05
#: resamples for the speeds' intervals
BOOTSTRAP = 999


@dataclass
class Candidate:
    family: str
    params: dict[str, float]
    loglik: float
    bic: float

    @property
    def spec(self) -> str:
        return f"{self.family}:" + ",".join(f"{k}={v:.6g}" for k, v in self.params.items())


@dataclass
class TimingFit:
    """What :func:`fit_timing` found; :meth:`toml` is the ``[timing]`` section."""

    workers: list[int]  # the workers' ids, in the order of ``speeds``
    speeds: np.ndarray  # relative to the median worker (geometric, between two middle ones)
    speed_low: np.ndarray  # 95% intervals
    speed_high: np.ndarray
    jobs: np.ndarray  # jobs per worker
    compute: Candidate  # the chosen family
    candidates: list[Candidate]  # every family tried, best BIC first
    ks: float
    ks_p: float
    autocorrelation: float  # pooled lag-1, of the residual log times
    transient: Transient | None
    residuals: np.ndarray = field(repr=False)  # outside episodes: what the family was fit to
    cores: float | None = None  # the processors the workers shared (None: one each)
    server: float | None = None  # the server's work per gradient (None: instantaneous)
    cores_note: str = ""  # how ``cores`` and ``server`` were found
    #: a real profile's messages timed apart (hybridsgd.profiling.message_times): inside
    #: the job times above, so not a ``comm`` of their own
    messages: dict[str, float] | None = None

    @property
    def explained(self) -> bool:
        return self.ks_p >= EXPLAINED_P or self.ks <= EXPLAINED_D

    def toml(self) -> str:
        """The ``[timing]`` section to paste into a config."""
        speeds = ", ".join(f"{s:.4g}" for s in self.speeds)
        lines = ["[timing]", f'compute = "{self.compute.spec}"', f"speed = [{speeds}]"]
        if self.transient is not None:
            t = self.transient
            lines.append(
                f'transient = "rate={t.rate:.4g},duration={t.duration:.4g},factor={t.factor:.4g}"'
            )
        if self.cores is not None:
            note = f"  # {self.cores_note}" if self.cores_note else ""
            lines.append(f"cores = {self.cores:.4g}{note}")
        if self.server is not None:
            lines.append(f'server = "constant:value={self.server:.4g}"')
        if self.messages is not None:
            m = self.messages
            lines.append(
                f"# messages, inside compute (so no comm of their own): pull p50 "
                f"{m['pull_p50']:.3g} s, p90 {m['pull_p90']:.3g} s; push p50 {m['push_p50']:.3g}"
                f" s, p90 {m['push_p90']:.3g} s; {m['share']:.1%} of the jobs' time"
            )
        return "\n".join(lines) + "\n"


def job_times(table: pd.DataFrame, source: str = "profile") -> dict[int, np.ndarray]:
    """Each worker's job times in the order they ran, from a table with ``worker`` and
    either ``compute`` or ``start_time`` and ``end_time`` (a run's gradients.csv)."""
    if "worker" not in table:
        raise ConfigError(
            source, "needs a 'worker' column (and compute, or start_time and end_time)"
        )
    if "compute" in table:
        t = table.assign(_t=table["compute"])
    elif {"start_time", "end_time"} <= set(table.columns):
        t = table.assign(_t=table["end_time"] - table["start_time"])
        if "fate" in table:  # a job cancelled part-way did not run to its end
            t = t[t.fate != "cancelled"]
    else:
        raise ConfigError(source, "needs a 'compute' column, or 'start_time' and 'end_time'")
    order = "start_time" if "start_time" in t else None
    out = {}
    for w, rows in t.groupby("worker", sort=True):
        rows = rows.sort_values(order, kind="stable") if order else rows
        x = rows["_t"].to_numpy(dtype=float)
        if not np.all(np.isfinite(x)) or (x <= 0).any():
            raise ConfigError(source, f"worker {w} has job times that are not positive numbers")
        out[int(w)] = x
    return out


def shared_work(table: pd.DataFrame, cores: float) -> pd.DataFrame:
    """``table`` (a profile: worker, start_time, compute) with each job's time replaced by
    its work when the jobs shared ``cores`` processors: the integral over the job of
    min(1, cores / n(t)), n(t) the jobs of the table running at t (processor sharing, as
    ``timing.cores`` simulates it)."""
    if not {"start_time", "compute"} <= set(table.columns):
        raise ConfigError("profile", "sharing cores needs 'start_time' and 'compute' columns")
    if not (cores > 0 and math.isfinite(cores)):
        raise ConfigError("--cores", f"must be a positive number of processors (got {cores})")
    start = table["start_time"].to_numpy(dtype=float)
    end = start + table["compute"].to_numpy(dtype=float)
    points = np.concatenate([start, end])
    order = np.argsort(points, kind="stable")
    at = points[order]
    running = np.cumsum(np.concatenate([np.ones(len(start)), -np.ones(len(end))])[order])
    rate = np.minimum(1.0, cores / np.maximum(running, 1.0))  # on [at[i], at[i + 1])
    done = np.concatenate([[0.0], np.cumsum(rate[:-1] * np.diff(at))])  # work clock at at[i]
    work = np.interp(end, at, done) - np.interp(start, at, done)
    return table.assign(compute=work)


def fit_timing(
    data: pd.DataFrame | dict[int, np.ndarray],
    source: str = "profile",
    seed: int = 0,
    *,
    cores: float | None = None,
    cores_note: str = "",
) -> TimingFit:
    """Fit speeds, slow episodes and the family to measured job times (module doc):
    ``data`` is a profile or gradients table (:func:`job_times`), or each worker's times
    in job order. ``cores``: the workers shared that many processors, so each job's time
    is first turned into work (:func:`shared_work`; a table with start times only)."""
    if cores is not None:
        if not isinstance(data, pd.DataFrame):
            raise ValueError("sharing cores needs a table with start times")
        data = shared_work(data, cores)
    times = job_times(data, source) if isinstance(data, pd.DataFrame) else dict(data)
    few = {w: len(x) for w, x in times.items() if len(x) < MIN_JOBS}
    if few:
        w, n = next(iter(few.items()))
        raise ConfigError(
            source,
            f"worker {w} has {n} jobs; a fit needs at least {MIN_JOBS} per worker: "
            "measure more minibatches",
        )
    workers = sorted(times)
    logs = [np.log(times[w]) for w in workers]
    level = np.array([stats.trim_mean(a, 0.1) for a in logs])
    ref = float(np.median(level))
    speeds = np.exp(level - ref)
    # the intervals: every worker's jobs resampled together, the reference (the median
    # worker) recomputed in each resample, as it is as uncertain as any worker
    rng = np.random.default_rng(seed)
    boot = np.stack(
        [stats.trim_mean(a[rng.integers(0, len(a), (BOOTSTRAP, len(a)))], 0.1, axis=1)
         for a in logs]
    )  # fmt: skip
    rel = np.exp(boot - np.median(boot, axis=0))
    low, high = np.percentile(rel, 2.5, axis=1), np.percentile(rel, 97.5, axis=1)
    resid = [times[w] / s for w, s in zip(workers, speeds, strict=True)]
    rho = _lag1(resid)
    n = sum(len(r) for r in resid)
    transient, outside = None, resid
    if rho > EPISODE_Z / math.sqrt(n):
        transient, outside = _episodes(resid, [times[w] for w in workers])
    pooled = np.concatenate(outside)
    cands = sorted((_fit_family(f, pooled) for f in FAMILIES), key=lambda c: c.bic)
    # the family known, each worker's scale by that family's own estimator (the mean for
    # exp and gamma, the minimum for pareto...), and the family refitted on the residuals
    if transient is None:
        level = np.log([SCALE[cands[0].family](times[w]) for w in workers])
        refined = np.exp(level - np.median(level))
        # the intervals move with the estimate (on real times the two estimators can part
        # by more than the interval's width when the family fits only roughly)
        low, high, speeds = low * refined / speeds, high * refined / speeds, refined
        pooled = np.concatenate([times[w] / s for w, s in zip(workers, speeds, strict=True)])
        cands[0] = _fit_family(cands[0].family, pooled)
    best = cands[0]
    ks = stats.kstest(pooled, distribution(best).cdf)
    return TimingFit(
        workers=workers,
        speeds=speeds,
        speed_low=low,
        speed_high=high,
        jobs=np.array([len(times[w]) for w in workers]),
        compute=best,
        candidates=cands,
        ks=float(ks.statistic),
        ks_p=float(ks.pvalue),
        autocorrelation=float(rho),
        transient=transient,
        residuals=pooled,
        cores=cores,
        cores_note=cores_note,
    )


#: per family, a worker's scale by the family's efficient estimator (a statistic that
#: multiplies by s when every time does)
SCALE: dict[str, Callable[[np.ndarray], float]] = {
    "exp": lambda x: float(np.mean(x)),
    "shifted-exp": lambda x: float(np.mean(x)),
    "gamma": lambda x: float(np.mean(x)),
    "lognormal": lambda x: float(np.exp(np.mean(np.log(x)))),
    "pareto": lambda x: float(np.min(x)),
    "uniform": lambda x: (float(np.min(x)) + float(np.max(x))) / 2,
}


def _lag1(series: list[np.ndarray]) -> float:
    """Pooled lag-1 autocorrelation of the log series, each about its own mean."""
    num = den = 0.0
    for r in series:
        a = np.log(r) - np.log(r).mean()
        num += float(a[:-1] @ a[1:])
        den += float(a @ a)
    return num / den if den > 0 else 0.0


def _episodes(
    resid: list[np.ndarray], raw: list[np.ndarray]
) -> tuple[Transient | None, list[np.ndarray]]:
    """Slow episodes: runs of two or more jobs above SLOW x the median residual. Their
    length and the time between them are measured in the jobs' own (raw) times: an
    episode slows every job that starts inside it, so a run of slowed jobs lasts about
    the episode."""
    med = float(np.median(np.concatenate(resid)))
    slow_vals, rest, runs, busy_outside = [], [], [], 0.0
    for r, t in zip(resid, raw, strict=True):
        slow = r > SLOW * med
        flagged = np.zeros(len(r), dtype=bool)
        j = 0
        while j < len(r):
            if slow[j]:
                k = j
                while k < len(r) and slow[k]:
                    k += 1
                if k - j >= 2:
                    flagged[j:k] = True
                    runs.append(float(t[j:k].sum()))
                j = k
            else:
                j += 1
        slow_vals.append(r[flagged])
        rest.append(r[~flagged])
        busy_outside += float(t[~flagged].sum())
    if not runs:
        return None, resid
    inside = np.concatenate(slow_vals)
    factor = float(np.median(inside) / np.median(np.concatenate(rest)))
    duration = float(np.mean(runs))
    rate = len(runs) / busy_outside
    return Transient(rate=rate, duration=duration, factor=factor), rest


def _fit_family(family: str, x: np.ndarray) -> Candidate:
    n = len(x)
    if family == "exp":
        _, scale = stats.expon.fit(x, floc=0)
        params, k = {"mu": 1 / scale}, 1
    elif family == "shifted-exp":
        loc, scale = stats.expon.fit(x)
        params, k = {"delta": max(loc, 0.0), "mu": 1 / scale}, 2
    elif family == "lognormal":
        s, _, scale = stats.lognorm.fit(x, floc=0)
        params, k = {"mu": math.log(scale), "sigma": s}, 2
    elif family == "gamma":
        a, _, scale = stats.gamma.fit(x, floc=0)
        params, k = {"shape": a, "scale": scale}, 2
    elif family == "pareto":
        b, _, scale = stats.pareto.fit(x, floc=0)
        params, k = {"alpha": b, "scale": scale}, 2
    elif family == "uniform":
        loc, scale = stats.uniform.fit(x)
        params, k = {"low": loc, "high": loc + scale}, 2
    else:
        raise ValueError(family)
    cand = Candidate(family, params, 0.0, 0.0)
    ll = float(np.sum(distribution(cand).logpdf(x)))
    if not math.isfinite(ll):
        ll = -math.inf
    cand.loglik, cand.bic = ll, k * math.log(n) - 2 * ll
    return cand


def distribution(c: Candidate):  # noqa: ANN201 - a scipy frozen distribution
    """The scipy distribution of a candidate."""
    p = c.params
    if c.family == "exp":
        return stats.expon(scale=1 / p["mu"])
    if c.family == "shifted-exp":
        return stats.expon(loc=p["delta"], scale=1 / p["mu"])
    if c.family == "lognormal":
        return stats.lognorm(p["sigma"], scale=math.exp(p["mu"]))
    if c.family == "gamma":
        return stats.gamma(p["shape"], scale=p["scale"])
    if c.family == "pareto":
        return stats.pareto(p["alpha"], scale=p["scale"])
    return stats.uniform(loc=p["low"], scale=p["high"] - p["low"])
