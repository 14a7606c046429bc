"""Many independent runs at once: in a process pool over this machine's cores, or as Ray
tasks on a cluster (docs/tuning.md). ``compare``, ``tune`` and ``examples/reproduce.py``
run through :func:`run_many`.

Each run is a config alone, seeded as it says, so a run's trace does not depend on where or
beside what it ran: the same configs give bit-identical traces sequentially, in parallel and
on Ray. To make that hold, a run whose ``run.threads`` is 0 gets one torch thread
everywhere (:func:`sweep_config`): torch's reductions may sum in another order on another
number of threads, and a sweep's parallelism is across its runs.

Why plain Ray tasks and not Ray Tune: a run here is one indivisible call with no metric to
report part-way, the grid and its validation protocol are hybridsgd's own (``tune``), and
bit-identical traces need nothing to be scheduled or stopped early; Tune would add its
trial bookkeeping, its result directories and the ``ray[tune]`` dependencies for none of
its features. A task per run is the whole of what is needed.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hybridsgd.config import Config
from hybridsgd.errors import ConfigError
from hybridsgd.trace import Trace

#: seconds a Ray sweep waits for one more run to finish before it says the cluster is stuck
RAY_STALL_S = 3600.0


@dataclass
class Outcome:
    """One run of a sweep: its trace and final parameters (what ``run`` returns, less the
    schedule), or the one-line error that stopped it."""

    config: Config
    trace: Trace | None
    params: torch.Tensor | None
    error: str = ""


def cores() -> int:
    """Cores this process may use (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_jobs(jobs: int | None, configs: Sequence[Config]) -> int:
    """The number of runs side by side: ``jobs``, or every core for simulated runs. Real
    backends measure wall-clock time, and runs side by side would slow each other: they run
    one at a time, and asking for more is refused."""
    real = sorted({c.run.backend for c in configs} - {"sim"})
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError("--jobs", f"must be a whole number >= 1 (got {jobs!r})")
    if real:
        if jobs is not None and jobs > 1:
            raise ConfigError(
                "--jobs",
                f"runs on {', '.join(real)} measure real time and go one at a time; "
                "drop --jobs or use run.backend = sim",
            )
        return 1
    return jobs if jobs is not None else cores()


def sweep_config(cfg: Config) -> Config:
    """The config a sweep runs: one torch thread unless ``run.threads`` says otherwise."""
    return cfg if cfg.run.threads else cfg.replace("run.threads=1")


def run_many(
    configs: Sequence[Config],
    *,
    jobs: int | None = None,
    ray_address: str = "",
    progress: Callable[[int, int], None] | None = None,
    outs: Sequence[str | Path | None] | None = None,
) -> list[Outcome]:
    """Run every config; return their outcomes in the order given.

    ``jobs`` processes run side by side (default: every core; see :func:`check_jobs`), or,
    with ``ray_address`` ("auto", "host:port"), one Ray task each on that cluster. A run
    that fails is an :class:`Outcome` with its error; the others go on. ``outs`` names a
    run directory per config, written here as each run ends. ``progress(done, total)``.
    """
    configs = [sweep_config(c) for c in configs]
    outs = list(outs) if outs is not None else [None] * len(configs)
    if len(outs) != len(configs):
        raise ValueError("one run directory (or None) per config")
    n_jobs = check_jobs(jobs, configs)
    results: list[Outcome | None] = [None] * len(configs)
    done = 0

    def finish(i: int, outcome: Outcome) -> None:
        nonlocal done
        results[i] = outcome
        if ray_address and outs[i] is not None and outcome.trace is not None:
            # a Ray task may run on another machine: its run directory is written here
            from hybridsgd.rundir import to_toml

            outcome.trace.write(outs[i], config_toml=to_toml(outcome.config.to_dict()))  # type: ignore[arg-type]
        done += 1
        if progress is not None:
            progress(done, len(configs))

    if progress is not None:
        progress(0, len(configs))
    dicts = [c.to_dict() for c in configs]
    dirs = [str(o) if o is not None else None for o in outs]
    if ray_address:
        if any(c.run.log for c in configs):
            raise ConfigError(
                "run.log",
                "runs on Ray do not stream logs: drop run.log, or export the traces "
                "afterwards with hybridsgd report DIR --tensorboard OUT",
            )
        _on_ray(dicts, ray_address, finish)
    elif n_jobs == 1 or len(configs) == 1:
        for i, d in enumerate(dicts):
            finish(i, _outcome(d, one_run(d, dirs[i])))
    else:
        _in_pool(dicts, dirs, min(n_jobs, len(configs)), finish)
    return [r for r in results if r is not None]


def load_policies(names: Sequence[str]) -> None:
    """Import the modules that registered policies in the process that started the sweep
    (:func:`hybridsgd.policies.registry.modules`): a fresh interpreter knows only
    hybridsgd's own. A script run as ``__main__`` is imported again under the name
    ``__mp_main__`` by the process pool itself."""
    import importlib

    for name in names:
        if name not in ("__main__", "__mp_main__"):
            importlib.import_module(name)


def one_run(
    config: dict[str, Any], out: str | None = None, policies: Sequence[str] = ()
) -> tuple[Trace | None, torch.Tensor | None, str]:
    """Run one config (a plain dict: it crosses process and machine boundaries), into the
    run directory ``out`` if given (replacing a run there, as ``--force`` does).
    ``policies``: modules to import first (:func:`load_policies`)."""
    from hybridsgd.errors import HybridSGDError, WorkerLost
    from hybridsgd.runner import run

    load_policies(policies)
    try:
        result = run(Config.from_dict(config), out=out, force=True)
    except (ConfigError, WorkerLost, HybridSGDError) as exc:
        return None, None, str(exc)
    return result.trace, result.params, ""


def _outcome(config: dict[str, Any], answer: tuple) -> Outcome:
    trace, params, error = answer
    return Outcome(Config.from_dict(config), trace, params, error)


def _in_pool(
    dicts: list[dict], dirs: list[str | None], n: int, finish: Callable[[int, Outcome], None]
) -> None:
    # spawn: a fresh interpreter per worker process (forking a process that has started
    # torch's thread pools can deadlock); each worker serves many runs
    from hybridsgd.policies.registry import modules

    context = multiprocessing.get_context("spawn")
    policies = modules()
    with ProcessPoolExecutor(
        max_workers=n, mp_context=context, initializer=load_policies, initargs=(policies,)
    ) as pool:
        futures: dict[Future, int] = {
            pool.submit(one_run, d, dirs[i]): i for i, d in enumerate(dicts)
        }
        pending = set(futures)
        try:
            while pending:
                ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in ready:
                    i = futures[f]
                    finish(i, _outcome(dicts[i], f.result()))
        except BaseException:
            for f in pending:
                f.cancel()
            raise


def _on_ray(dicts: list[dict], address: str, finish: Callable[[int, Outcome], None]) -> None:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--ray-address", "ray is not installed; pip install 'hybridsgd[ray]'"
        ) from None
    started = not ray.is_initialized()
    if started:
        try:
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(
                "--ray-address", f"cannot join the Ray cluster at {address!r}: {exc}"
            ) from None
    try:
        # one CPU per run: Ray runs as many side by side as the cluster has cores
        from hybridsgd.policies.registry import modules

        remote = ray.remote(num_cpus=1, max_retries=0)(one_run)
        policies = modules()
        refs = {remote.remote(d, None, policies): i for i, d in enumerate(dicts)}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=RAY_STALL_S)
            if not ready:
                raise ConfigError(
                    "--ray-address",
                    f"no run finished in {RAY_STALL_S:.0f} s: does the cluster have free CPUs?",
                )
            for ref in ready:
                i = refs[ref]
                finish(i, _outcome(dicts[i], ray.get(ref, timeout=RAY_STALL_S)))
    finally:
        if started:
            ray.shutdown()
