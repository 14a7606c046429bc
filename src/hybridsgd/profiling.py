"""Measure the workers of a real backend, and the profile a timing fit reads (issue 31;
docs/fidelity.md).

``hybridsgd profile CONFIG --backend local|ray --minibatches N`` runs the config's task and
model on that backend with every worker computing back to back (``async``, no injected
delay: ``run.time_unit = 0``) until each has done about N minibatches, and keeps the run in
``OUT/run``. Its profile, ``OUT/profile.csv``, has one row per job: the worker, when the
job started and how long it took until its gradient was in (``compute``, in seconds). That
time includes the backend's own per-job cost (sending the parameters, the job message,
the gradient back), so a timing model fitted to it predicts the real clock, not only the
schedule. Where the workers share the driver's clock (the local backend, and Ray's
shared-memory transport) the profile also times each job's two messages apart: ``pull``,
from the driver's send of the job until the worker had it, and ``push``, from the worker's
send of its gradient until the driver had it (both inside ``compute``). On one machine
they are mostly waits for a processor, which the simulator's ``timing.cores`` models, not
bytes moving: the parameters and gradients stay in shared memory. ``--from RUN_DIR`` reads
any earlier real run's ``gradients.csv`` instead.

Workers on one machine share its processors with each other and with the server (the
driver). :func:`measure_machine` then counts the processors, takes the server's CPU time
per gradient, and times the profile's typical worker alone for each job's work
(:func:`typical_worker`); :func:`fit_machine` fits the
family to that work and the speeds to the profile, for the simulator's ``timing.cores``
and ``timing.server`` (docs/fidelity.md).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hybridsgd.config import Config
from hybridsgd.errors import ConfigError
from hybridsgd.policies.asynchronous import NAME as ASYNC
from hybridsgd.timing.fit import TimingFit, distribution, fit_timing, job_times


def measure(
    cfg: Config, minibatches: int, out: str | Path, *, progress: object = "auto"
) -> pd.DataFrame:
    """Run ``cfg``'s task on its (real) backend, every worker back to back for about
    ``minibatches`` jobs, into ``out/run``; write and return the profile."""
    from hybridsgd.runner import run

    if cfg.run.backend == "sim":
        raise ConfigError(
            "--backend", "profile measures real workers: give --backend local (or ray)"
        )
    if minibatches < 20:
        raise ConfigError(
            "--minibatches", f"a fit needs at least 20 per worker (got {minibatches})"
        )
    W = cfg.policy.workers
    d = cfg.to_dict()
    d["policy"] = {"name": ASYNC, "workers": W}  # every worker back to back
    d.pop("worker", None)  # a job of one minibatch: timing.compute is a minibatch's time
    updates = minibatches * W
    # run.eval_every and run.target_accuracy stay the config's: the driver then keeps the
    # copies it keeps in the runs the profile predicts (timing.server holds their cost)
    d["run"] |= {"time_unit": 0.0, "updates": updates, "time": None,
                 "checkpoint_every": 0}  # fmt: skip
    out = Path(out)
    result = run(Config.from_dict(d), out=out / "run", progress=progress, force=True)
    table = profile_of(result.trace.gradients, f"{out / 'run'}")
    table.to_csv(out / "profile.csv", index=False)
    table.attrs["threads"] = result.summary.get("torch_threads")
    table.attrs["server_cpu_s"] = result.summary.get("server_cpu_s")
    return table


@dataclass
class Machine:
    """What the workers of a one-machine profile share (:func:`measure_machine`)."""

    cores: float  # processors of the machine the workers and the server run on
    server: float  # the server's CPU seconds per gradient (the driver's own work)
    alone: np.ndarray  # ``worker``'s jobs computed alone: their work, the server's taken off
    note: str  # how it was measured, in one line
    given: bool = False  # ``cores`` was given (--cores): not calibrated
    worker: int = 0  # the worker timed alone (typical_worker)


def typical_worker(table: pd.DataFrame) -> int:
    """The profile's typical worker: the one whose median job time is nearest the median
    over the workers (in log time; the lowest id on a tie). Its jobs alone give the
    family's work, divided by its speed in the profile, so that speed had better be a
    typical one: with W workers on a machine of fewer processors, one of them can run a
    third faster than the rest for a whole profile only because the operating system gave
    it a processor more often (on this project's 2-core machine, 0.67 against 0.96-1.07
    at W = 4), and worker 0 timed alone then makes every other worker's work too large."""
    medians = table.groupby("worker").compute.median()
    logs = np.log(medians.to_numpy(dtype=float))
    return int(medians.index[int(np.argmin(np.abs(logs - np.median(logs))))])


def measure_machine(
    cfg: Config,
    table: pd.DataFrame,
    minibatches: int,
    out: str | Path,
    *,
    cores: float | None = None,
    progress: object = "auto",
) -> Machine:
    """The machine the profiled workers share, for the simulator's ``timing.cores`` and
    ``timing.server``: its processors (``cores``, else those this process may run on);
    the server's work per gradient (the driver's own CPU time over the profile's
    gradients); and each job's work, from the typical worker (:func:`typical_worker`, with
    its ``run.worker_load``) computing ``minibatches / 2`` jobs (at least 20) alone, on as
    many threads as in the profile, into ``out/alone``. Alone, worker and server take
    turns, so a job's time there is its work plus the server's."""
    from hybridsgd.backends.local.driver import available_cores
    from hybridsgd.runner import run
    from hybridsgd.timing.fit import MIN_JOBS

    d = cfg.to_dict()
    d["policy"] = {"name": ASYNC, "workers": 1}
    for key in ("worker", "timing", "faults"):  # per-worker settings of the W-worker config
        d.pop(key, None)
    jobs = max(MIN_JOBS, minibatches // 2)
    loads = cfg.run.loads(cfg.policy.workers)
    k = typical_worker(table)
    d["run"] |= {"time_unit": 0.0, "updates": jobs, "time": None, "checkpoint_every": 0,
                 "threads": int(table.attrs.get("threads") or cfg.run.threads),
                 "worker_load": [loads[k]] if loads else ""}  # fmt: skip
    result = run(Config.from_dict(d), out=Path(out) / "alone", progress=progress, force=True)
    alone = profile_of(result.trace.gradients, "alone").compute.to_numpy()
    server = float(table.attrs.get("server_cpu_s") or 0.0) / len(table)
    work = np.maximum(alone - server, 0.1 * alone)
    P = float(cores if cores is not None else available_cores())
    note = (
        f"{P:g} processors; the server {server * 1e3:.3g} ms of CPU a gradient; worker {k} "
        f"alone {np.median(alone) * 1e3:.3g} ms a job (median), with all "
        f"{cfg.policy.workers} computing {np.median(table.compute) * 1e3:.3g} ms"
    )
    return Machine(P, server, work, note, given=cores is not None, worker=k)


def fit_machine(table: pd.DataFrame, machine: Machine, source: str = "profile") -> TimingFit:
    """The timing of workers on one machine: the speeds (relative, with their intervals)
    from the profile in which they all computed at once; the family and any slow episodes
    from the work of the typical worker's jobs alone (``machine.worker``: the jobs' times
    divided by its speed in the profile); the server's work per gradient; and the
    processors they share (:class:`Machine`), with which the simulator shares them again
    under whatever policy it runs. Unless given, the processors are *effective* ones
    (:func:`calibrate_cores`): two processes on one machine slow each other down beyond
    sharing its processors (hyperthreads of one core, memory bandwidth), and the one
    number that makes the simulator reproduce the profile's own throughput says by how
    much."""
    shared = fit_timing(table, source)
    k = machine.worker
    speed = shared.speeds[shared.workers.index(k)]
    alone = fit_timing({k: machine.alone / speed}, f"{source} (worker {k} alone)")
    fit = dataclasses.replace(
        alone,
        workers=shared.workers,
        speeds=shared.speeds,
        speed_low=shared.speed_low,
        speed_high=shared.speed_high,
        jobs=shared.jobs,
        cores=machine.cores,
        server=machine.server,
        cores_note=machine.note,
    )
    if machine.given:
        return fit
    end = float((table.start_time + table.compute).max() - table.start_time.min())
    measured = len(table) / end
    cores, made = calibrate_cores(fit, measured, machine.cores)
    note = f"{cores:.3g} effective of {machine.note}: the simulator at {cores:.3g} makes " + (
        f"{measured:.4g} updates a second under async, as the profile did"
        if made >= measured * (1 - 1e-3)
        else f"only {made:.4g} updates a second under async, the profile {measured:.4g}"
    )
    return dataclasses.replace(fit, cores=cores, cores_note=note)


def fit_profile(
    table: pd.DataFrame,
    source: str,
    *,
    cfg: Config | None = None,
    minibatches: int = 200,
    out: str | Path = "profile",
    cores: float | None = None,
    progress: object = "auto",
) -> tuple[TimingFit, pd.DataFrame]:
    """The fit ``--cores`` asks for (``cores``: None auto, 0 a processor each, else that
    many), and the table its plot sets against it. A profile just measured for ``cfg``
    (unless ``cores`` is 0): the machine's model (:func:`measure_machine`,
    :func:`fit_machine`), plotted on the typical worker's jobs alone. Otherwise (a past
    run, or 0) with ``cores`` each job's time taken back to work (:func:`~hybridsgd.timing.fit.
    shared_work`), else the times as they are."""
    from hybridsgd.timing.fit import shared_work

    messages = message_times(table)
    if cfg is not None and cores != 0:
        machine = measure_machine(cfg, table, minibatches, out, cores=cores, progress=progress)
        alone = pd.DataFrame({"worker": machine.worker, "compute": machine.alone})
        fit, plotted = fit_machine(table, machine, source), alone
    elif cores:
        fit = fit_timing(table, source, cores=cores, cores_note="given (--cores)")
        plotted = shared_work(table, cores)
    else:
        fit, plotted = fit_timing(table, source), table
    return dataclasses.replace(fit, messages=messages), plotted


def _same_time(a: float, b: float) -> bool:
    """Two simulated times to target that are one (both missed, or equal to 1e-9)."""
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-9 * max(a, b))


def calibrate_cores(
    fit: TimingFit, measured: float, most: float, seed: int = 0
) -> tuple[float, float]:
    """The processors (between 0.1 and ``most``) at which the simulator, with ``fit``'s
    family, speeds, transient and server, makes ``measured`` updates a second under
    ``async`` (every worker back to back, as a profile runs): the throughput grows with
    the processors, so by bisection (24 steps, each a schedule of 100 updates a worker).
    ``most`` when even that is too slow. Also the throughput the simulator makes there."""
    from hybridsgd.backends.sim import simulate_schedule
    from hybridsgd.policies import build_policy
    from hybridsgd.timing import Cluster, parse_model

    W = len(fit.workers)
    t = fit.transient

    def rate(cores: float) -> float:
        cluster = Cluster(
            parse_model(fit.compute.spec), W, seed, speeds=fit.speeds.tolist(), transient=t,
            cores=cores, server=parse_model(f"constant:value={fit.server or 0}"),
        )  # fmt: skip
        s = simulate_schedule(build_policy(f"{ASYNC}:workers={W}"), cluster, 100 * W)
        return s.n_updates / float(s.update_time[-1])

    low, high = 0.1, float(most)
    if (top := rate(high)) <= measured:
        return high, top
    for _ in range(24):
        mid = (low + high) / 2
        low, high = (mid, high) if rate(mid) < measured else (low, mid)
    return (low + high) / 2, rate((low + high) / 2)


def profile_of(gradients: pd.DataFrame, source: str) -> pd.DataFrame:
    """A run's gradients table as a profile: worker, start_time, compute (jobs that ran to
    their end: a cancelled job's time is not a job's)."""
    job_times(gradients, source)  # the columns and the times checked, one line if not
    rows = gradients[gradients.fate != "cancelled"] if "fate" in gradients else gradients
    rows = rows.sort_values(["worker", "start_time"], kind="stable")
    table = pd.DataFrame(
        {
            "worker": rows.worker.to_numpy(),
            "start_time": rows.start_time.to_numpy(),
            "compute": (rows.end_time - rows.start_time).to_numpy(),
        }
    )
    if "pull" in rows and "push" in rows:  # the messages, timed apart (inside compute)
        table["pull"], table["push"] = rows.pull.to_numpy(float), rows.push.to_numpy(float)
    return table


def message_times(table: pd.DataFrame) -> dict[str, float] | None:
    """The medians and 90th percentiles of a profile's pull and push times, in seconds,
    over the jobs whose messages were timed, and the messages' share of those jobs' time;
    None when none were timed."""
    if "pull" not in table or "push" not in table:
        return None
    timed = table[np.isfinite(table.pull) & np.isfinite(table.push)]
    if timed.empty:
        return None
    return {
        f"{kind}_{name}": float(timed[kind].quantile(q))
        for kind in ("pull", "push")
        for name, q in (("p50", 0.5), ("p90", 0.9))
    } | {"share": float((timed.pull + timed.push).sum() / timed.compute.sum())}


def read_run(run_dir: str | Path) -> pd.DataFrame:
    """``--from RUN_DIR``: the profile of an earlier real run."""
    run_dir = Path(run_dir)
    summary = run_dir / "summary.json"
    if not summary.is_file():
        raise ConfigError("--from", f"{run_dir} holds no run (no summary.json)")
    try:
        said = json.loads(summary.read_text())
    except ValueError as exc:
        raise ConfigError("--from", f"{summary} cannot be read ({exc})") from None
    backend = said.get("backend")
    if said.get("local_steps") not in (None, 1):
        raise ConfigError(
            "--from",
            f"{run_dir}'s jobs were {said['local_steps']} local steps each, not one minibatch: "
            "profile a run without [worker] (timing.compute is a minibatch's time)",
        )
    if backend == "sim":
        raise ConfigError(
            "--from",
            f"{run_dir} is a simulated run: its times are the timing model's, not measured; "
            "give a run of the local or ray backend",
        )
    try:
        gradients = pd.read_csv(run_dir / "gradients.csv")
    except (OSError, ValueError) as exc:
        raise ConfigError("--from", f"{run_dir / 'gradients.csv'} cannot be read ({exc})") from None
    return profile_of(gradients, str(run_dir / "gradients.csv"))


def read_profile(path: str | Path) -> pd.DataFrame:
    """A ``profile.csv`` (or any CSV with worker and compute, or start_time and end_time)."""
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigError("profile", f"{path} cannot be read ({exc})") from None
    job_times(table, str(path))  # one line if a column is missing
    return table


def per_worker(table: pd.DataFrame) -> pd.DataFrame:
    """Per worker: jobs, mean and p50 / p90 / p99 of the job time; and the p50 and p90 of
    its pull and push messages where they were timed."""
    g = table.groupby("worker").compute
    stats = pd.DataFrame(
        {
            "jobs": g.size(),
            "mean": g.mean(),
            "p50": g.quantile(0.5),
            "p90": g.quantile(0.9),
            "p99": g.quantile(0.99),
        }
    )
    if message_times(table) is not None:
        for kind in ("pull", "push"):
            m = table.groupby("worker")[kind]
            stats[f"{kind}_p50"], stats[f"{kind}_p90"] = m.quantile(0.5), m.quantile(0.9)
    return stats


def plot_fit(table: pd.DataFrame, fit: TimingFit, path: str | Path) -> Path:
    """Measured against fitted: the pooled quantile-quantile plot of the residuals (times
    over their worker's speed) against the fitted family, and each worker's measured
    distribution against the fitted one at its speed. With shared processors
    (``fit.cores``) the fit is of work: ``table`` holds work too (the typical worker's
    jobs alone, or :func:`~hybridsgd.timing.fit.shared_work`'s)."""
    dist = distribution(fit.compute)
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    qq, cdf = fig.subplots(1, 2)
    r = np.sort(fit.residuals)
    p = (np.arange(len(r)) + 0.5) / len(r)
    q = dist.ppf(p)
    qq.plot(q, r, ".", ms=3, alpha=0.6)
    top = float(np.nanmax([r[-1], q[np.isfinite(q)][-1]]))
    qq.plot([0, top], [0, top], color="0.4", lw=1, ls="--", label="measured = fitted")
    qq.set_xlabel(f"fitted quantile ({fit.compute.spec})")
    qq.set_ylabel("measured quantile (time / worker's speed)")
    qq.set_title(f"pooled Q-Q, KS distance {fit.ks:.3f}", fontsize=10)
    qq.legend(fontsize=8, frameon=False)
    qq.grid(alpha=0.3)
    times = job_times(table)
    for i, (w, speed) in enumerate(zip(fit.workers, fit.speeds, strict=True)):
        if w not in times:
            continue  # (alone, only the typical worker was timed)
        x = np.sort(times[w])
        line = cdf.step(x, (np.arange(len(x)) + 1) / len(x), where="post", lw=1.2,
                        label=f"worker {w} (speed {speed:.3g})" if i < 12 else None)[0]  # fmt: skip
        grid = np.linspace(0, float(x[-1]), 200)
        cdf.plot(grid, dist.cdf(grid / speed), ls="--", lw=1, color=line.get_color())
    cdf.set_xlabel(
        "job time (s)"
        if fit.cores is None
        else f"job work (s: the time with a processor to itself; {fit.cores:.3g} shared)"
    )
    cdf.set_ylabel("fraction of jobs")
    who = "per worker" if len(times) > 1 else f"worker {next(iter(times))} alone"
    cdf.set_title(f"{who}: measured (solid) and fitted (dashed)", fontsize=10)
    cdf.grid(alpha=0.3)
    cdf.legend(fontsize=7, frameon=False, loc="lower right")
    path = Path(path)
    fig.savefig(path, dpi=100)
    return path


def describe(fit: TimingFit) -> list[str]:
    """The fit in a few lines for the terminal."""
    lines = [
        f"family: {fit.compute.spec} (least BIC of {len(fit.candidates)}; next: "
        + ", ".join(f"{c.family} +{c.bic - fit.compute.bic:.1f}" for c in fit.candidates[1:3])
        + f"); KS distance {fit.ks:.3f}, p {fit.ks_p:.2g}",
        "speeds (95% interval): "
        + ", ".join(
            f"{w}: {s:.3g} [{lo:.3g}, {hi:.3g}]"
            for w, s, lo, hi in zip(
                fit.workers, fit.speeds, fit.speed_low, fit.speed_high, strict=True
            )  # fmt: skip
        ),
        (
            f"shared processors: {fit.cores_note}; the family is fitted to each job's work"
            if fit.cores is not None
            else "processors: one per worker"
        ),
        f"lag-1 autocorrelation of the residuals {fit.autocorrelation:.3f}: "
        + (
            f"slow episodes (rate {fit.transient.rate:.3g} per s, {fit.transient.duration:.3g} s, "
            f"x{fit.transient.factor:.3g})"
            if fit.transient is not None
            else "no slow episodes"
        ),
    ]
    if fit.messages is not None:
        m = fit.messages
        lines.append(
            f"messages (inside the job times): pull p50 {m['pull_p50'] * 1e3:.3g} ms, p90 "
            f"{m['pull_p90'] * 1e3:.3g} ms; push p50 {m['push_p50'] * 1e3:.3g} ms, p90 "
            f"{m['push_p90'] * 1e3:.3g} ms; {m['share']:.1%} of the jobs' time. Parameters "
            "and gradients stay in shared memory, so no bytes travel with them: on one "
            "machine they are waits for a processor, and a link's latency and bandwidth "
            "cannot be told apart from one message size"
        )
    if not fit.explained:
        lines.append(
            "no family explains these times (KS p < 0.001 and distance > 0.05): replay them "
            'instead, timing.compute = "trace:path=PROFILE.csv" (each worker\'s own series)'
        )
    if not math.isfinite(fit.compute.loglik):
        lines.append("the best family's likelihood is not finite: the fit is not to be trusted")
    return lines


def validate(
    cfg: Config,
    specs: list[str],
    *,
    seeds: int = 3,
    minibatches: int = 200,
    out: str | Path = "validate",
    timing: dict | None = None,
    progress: object = False,
    settings: Mapping[str, Sequence[str]] | None = None,
    cores: float | None = None,
) -> tuple[pd.DataFrame, TimingFit | None]:
    """Each policy of ``specs`` on ``cfg``'s real backend at natural timing
    (``run.time_unit = 0``) and in the simulator with a fitted timing (``timing``, a
    ``[timing]`` table; else :func:`measure`, then :func:`measure_machine` and
    :func:`fit_machine` into ``out``: ``cores`` None calibrates the effective processors,
    a number gives them, 0 fits each worker on a processor of its own), on
    seeds 0..seeds-1. A row per policy: throughput (updates per second of each run's
    clock) and time to ``run.target_accuracy``, simulated and real (means over the seeds;
    infinity when a seed missed), and the errors (simulated / real - 1). ``settings``: more
    overrides per spec (a tuning's chosen lr and momentum, for ``tune --validate``)."""
    from hybridsgd.policies import parse_spec
    from hybridsgd.runner import run

    if cfg.run.backend == "sim":
        raise ConfigError(
            "--backend", "validate compares with real runs: give --backend local (or ray)"
        )
    if cfg.run.target_accuracy is None:
        raise ConfigError(
            "run.target_accuracy", "validate compares times to a target: set it (e.g. 0.9)"
        )
    fit = None
    if timing is None:
        table = measure(cfg, minibatches, out, progress=progress)
        fit, _ = fit_profile(table, f"{out}/profile.csv", cfg=cfg, minibatches=minibatches,
                             out=out, cores=cores, progress=progress)  # fmt: skip
        import tomllib

        timing = tomllib.loads(fit.toml())["timing"]
    # seed by seed, every policy in turn: a machine whose speed drifts between minutes
    # then drifts under every policy alike, not under the last ones only
    got: dict[str, dict[str, list[tuple[float, float]]]] = {
        spec: {"sim": [], "real": []} for spec in specs
    }
    for seed in range(seeds):
        for spec in specs:
            _, policy = parse_spec(spec)
            own = list((settings or {}).get(spec, ()))
            real = cfg.replace(*policy, *own, f"run.seed={seed}", "run.time_unit=0")
            d = real.to_dict()
            # the loads are real work: the fitted speeds carry them into the simulator
            d["run"] |= {"backend": "sim", "worker_load": ""}
            d["timing"] = {**d["timing"], **timing}
            for kind, c in (("real", real), ("sim", Config.from_dict(d))):
                s = run(c, progress=progress).summary
                t = s.get("time_to_target")
                got[spec][kind].append(
                    (s["updates"] / s["end_time"], float(t) if t is not None else math.inf)
                )
    rows = []
    runs = pd.DataFrame(
        [{"policy": spec, "seed": seed, "kind": kind, "throughput": tp, "time_to_target": tt}
         for spec in specs for kind in ("real", "sim")
         for seed, (tp, tt) in enumerate(got[spec][kind])]
    )  # fmt: skip
    for spec in specs:
        sim, real_runs = np.array(got[spec]["sim"]), np.array(got[spec]["real"])
        (tp_s, tt_s), (tp_r, tt_r) = sim.mean(axis=0), real_runs.mean(axis=0)
        rows.append({
            "policy": spec, "throughput_sim": tp_s, "throughput_real": tp_r,
            "throughput_error": tp_s / tp_r - 1,
            # the real runs' spread over the seeds, relative to their mean (sd / mean)
            "throughput_real_spread": real_runs[:, 0].std() / tp_r,
            "time_to_target_sim": tt_s, "time_to_target_real": tt_r,
            "time_to_target_error": tt_s / tt_r - 1 if math.isfinite(tt_s * tt_r) else math.nan,
            "time_to_target_real_spread": (
                real_runs[:, 1].std() / tt_r if math.isfinite(tt_r) else math.nan
            ),
        })  # fmt: skip
    real_times = {spec: [tt for _, tt in got[spec]["real"]] for spec in specs}
    table = rankings(pd.DataFrame(rows), real_times)
    table.attrs["runs"] = runs  # every run: policy, seed, kind (real, sim), the two measures
    return table, fit


def rankings(
    table: pd.DataFrame, real: Mapping[str, Sequence[float]] | None = None
) -> pd.DataFrame:
    """The policies of a validation ``table`` ranked by time to target, simulated and
    real, and in how many places the two agree, into ``table.attrs``. With ``real`` (each
    policy's real times to target, seed by seed, the same seeds for all), a place where
    the two rankings differ is a tie when the real runs cannot tell its two policies
    apart: the paired 95% t-interval of their difference over the seeds holds 0
    (``real_ties``, and ``places_agree_or_tied``)."""
    by_sim = table.sort_values("time_to_target_sim", kind="stable").policy.tolist()
    by_real = table.sort_values("time_to_target_real", kind="stable").policy.tolist()
    table.attrs["ranking_sim"], table.attrs["ranking_real"] = by_sim, by_real
    # a place agrees when both rankings put the same policy there, or policies the
    # simulator cannot tell apart (the same time to target: the same schedule, as async
    # and an ssp bound that never blocks; their order there is only the list's)
    sim_time = dict(zip(table.policy, table.time_to_target_sim, strict=True))
    agree = [a == b or _same_time(sim_time[a], sim_time[b])
             for a, b in zip(by_sim, by_real, strict=True)]  # fmt: skip
    table.attrs["places_agree"] = sum(agree)
    ties = [(a, b) for a, b, ok in zip(by_sim, by_real, agree, strict=True)
            if not ok and real is not None and real_tie(real[a], real[b])]  # fmt: skip
    table.attrs["real_ties"] = ties
    table.attrs["places_agree_or_tied"] = sum(agree) + len(ties)
    return table


def real_tie(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two policies' real times to target, paired by seed, cannot be told apart:
    the 95% t-interval of the mean difference holds 0. Both must have reached the target
    on every seed, and there must be at least 2 seeds; otherwise it is not a tie."""
    from hybridsgd.report.verdict import paired_interval

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) != len(y) or not (np.isfinite(x).all() and np.isfinite(y).all()) or len(x) < 2:
        return False
    _, low, high = paired_interval(y - x)
    return low <= 0.0 <= high
