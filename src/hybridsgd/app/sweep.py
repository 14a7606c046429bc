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

import contextlib
import copy
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hybridsgd.config import Config
from hybridsgd.errors import ConfigError
from hybridsgd.trace import Trace

#: seconds a Ray sweep waits for one more run to finish before it says the cluster is stuck
RAY_STALL_S = 3600.0

#: a user's own Task every run of the sweep trains (``run_many(task=...)``), in this
#: process and, pickled once, in each pool worker; None: each run builds its config's task
_TASK: Any = None


@dataclass
class Outcome:
    """One run of a sweep: its trace and final parameters (what ``run`` returns, less the
    schedule), or the one-line error that stopped it."""

    config: Config
    trace: Trace | None
    params: torch.Tensor | None
    error: str = ""


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
    from hybridsgd.backends.local import available_cores

    return jobs if jobs is not None else available_cores()


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
    skip: Collection[int] = (),
    on_outcome: Callable[[int, Outcome], None] | None = None,
    grouped: bool = False,
    task: Any = None,
) -> list[Outcome]:
    """Run every config; return their outcomes in the order given.

    ``jobs`` processes run side by side (default: every core; see :func:`check_jobs`), or,
    with ``ray_address`` ("auto", "host:port"), one Ray task each on that cluster. A run
    that fails is an :class:`Outcome` with its error; the others go on. ``outs`` names a
    run directory per config, written here as each run ends. ``progress(done, total)``.

    ``grouped``: runs that share a schedule (an lr or momentum grid on one seed) replay
    together (:mod:`hybridsgd.backends.sim.grid`): faster, but equal to their separate
    runs only to float tolerance (docs/tuning.md, "Bit-identical traces"). By default every
    run is its own, and its final parameters are those of ``hybridsgd run`` on its config.

    A resumed sweep passes ``skip``, the indices of runs it has already: a job (runs that
    replay together) all of whose runs are skipped does not run, and its runs come back as
    outcomes without a trace or an error; a job with some runs left runs whole, so every
    run is computed in the same company as in an uninterrupted sweep.
    ``on_outcome(i, outcome)`` is called here as each run ends.

    ``task``: a user's own :class:`~hybridsgd.tasks.Task` that every run trains instead of
    its config's task (``h.run(cfg, task=...)`` for each); it is pickled once to each pool
    worker or Ray task. Such runs are never grouped.
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
        if on_outcome is not None:
            on_outcome(i, outcome)
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
    # grouped: runs that share a schedule replay together (hybridsgd.backends.sim.grid), in
    # every mode, so that every mode gives the same traces
    from hybridsgd.backends.sim.grid import grid_jobs

    jobs_list = []
    together = grouped and task is None
    for job in grid_jobs(configs) if together else [[i] for i in range(len(configs))]:
        if all(i in skip for i in job):
            for i in job:
                results[i] = Outcome(configs[i], None, None)
                done += 1
        else:
            jobs_list.append(job)
    if progress is not None and done:
        progress(done, len(configs))
    if ray_address:
        real = sorted({c.run.backend for c in configs} - {"sim"})
        if real:
            raise ConfigError(
                "--ray-address",
                f"runs on {', '.join(real)} measure real time and start their own workers; "
                "a sweep runs them one at a time here: drop --ray-address",
            )
        if any(c.run.log for c in configs):
            raise ConfigError(
                "run.log",
                "runs on Ray do not stream logs: drop run.log, or export the traces "
                "afterwards with hybridsgd report DIR --tensorboard OUT",
            )
        _on_ray(dicts, jobs_list, ray_address, finish, task)
    else:
        with _sweep_task(task):
            if n_jobs == 1 or len(jobs_list) <= 1:
                for job in jobs_list:
                    answers = one_job([dicts[i] for i in job], [dirs[i] for i in job])
                    for i, answer in zip(job, answers, strict=True):
                        finish(i, _outcome(dicts[i], answer))
            else:
                _in_pool(dicts, dirs, jobs_list, min(n_jobs, len(jobs_list)), finish, task)
    return [r for r in results if r is not None]


@contextlib.contextmanager
def _sweep_task(task: Any) -> Iterator[None]:
    """``task`` as the task of every run in this process, for the sweep's duration."""
    global _TASK
    before, _TASK = _TASK, task
    try:
        yield
    finally:
        _TASK = before


def _pool_worker(names: Sequence[str], task: Any = None) -> None:
    """A sweep's worker process: Ctrl-C is its parent's to handle (the parent stops the
    workers), so the terminal's SIGINT to the whole group prints nothing here (a worker
    started later than the first ones ignores it from here on). ``task``: the sweep's own
    task, if any (:data:`_TASK`)."""
    global _TASK
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    load_policies(names)
    _TASK = task


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


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
        result = run(Config.from_dict(config), out=out, force=True, progress=False, task=_TASK)
    except (ConfigError, WorkerLost, HybridSGDError) as exc:
        return None, None, str(exc)
    if result.summary.get("interrupted"):  # a signal stopped it: it stops the sweep too
        raise KeyboardInterrupt
    return result.trace, result.params, ""


def one_job(
    configs: list[dict[str, Any]],
    outs: list[str | None],
    policies: Sequence[str] = (),
    task: Any = None,
) -> list[tuple[Trace | None, torch.Tensor | None, str]]:
    """Run configs that share a schedule in one pass (:func:`run_grid`), or one config
    alone (:func:`one_run`); an answer each, in order. A grid that cannot run together
    (a config error) runs its configs one by one, so each gets its own answer. ``task``:
    the sweep's own task (a Ray task receives it here), else :data:`_TASK`."""
    from hybridsgd.errors import HybridSGDError, WorkerLost
    from hybridsgd.rundir import claimed, completed, to_toml
    from hybridsgd.runner import run_grid

    if task is not None:
        with _sweep_task(task):
            return [one_run(c, o, policies) for c, o in zip(configs, outs, strict=True)]
    if len(configs) == 1:
        return [one_run(configs[0], outs[0], policies)]
    load_policies(policies)
    try:
        results = run_grid([Config.from_dict(c) for c in configs])
    except (ConfigError, WorkerLost, HybridSGDError):
        return [one_run(c, o, policies) for c, o in zip(configs, outs, strict=True)]
    answers: list[tuple[Trace | None, torch.Tensor | None, str]] = []
    for r, out in zip(results, outs, strict=True):
        if out is not None:
            with claimed(Path(out), force=True, resuming=False) as d:
                r.trace.write(d, config_toml=to_toml(r.config.to_dict()))
                completed(d)
        answers.append((r.trace, r.params, ""))
    return answers


def _owned(answer: tuple) -> tuple:
    """A Ray task's answer copied out of the object store. ``ray.get`` hands back arrays
    that live in the store's shared memory, and once the task's reference is gone another
    object may take that memory: measured here, traces kept from an earlier sweep changed
    under a later one. Copies cost little next to a run."""
    trace, params, error = answer
    if trace is not None:
        trace = Trace(
            trace.gradients.copy(deep=True),
            trace.updates.copy(deep=True),
            trace.evals.copy(deep=True),
            copy.deepcopy(trace.summary),
        )
    return trace, (params.clone() if params is not None else None), error


def _outcome(config: dict[str, Any], answer: tuple) -> Outcome:
    trace, params, error = answer
    return Outcome(Config.from_dict(config), trace, params, error)


def _in_pool(
    dicts: list[dict],
    dirs: list[str | None],
    jobs: list[list[int]],
    n: int,
    finish: Callable[[int, Outcome], None],
    task: Any = None,
) -> None:
    """``n`` jobs side by side: this process and ``n - 1`` worker processes take the next
    job (one run, or a grid of runs sharing a schedule) in turn. This process starts at
    once, while the workers start their interpreters (about 2 s of imports each, measured):
    a pool of ``n`` would leave a core idle for that long. Results are handed to ``finish``
    in this process only."""
    # spawn: a fresh interpreter per worker process (forking a process that has started
    # torch's thread pools can deadlock); each worker serves many runs
    from hybridsgd.policies.registry import modules

    lock = threading.Lock()
    order = iter(range(len(jobs)))
    arrived: queue.SimpleQueue = queue.SimpleQueue()  # (run, future) as each worker ends one
    submitted = 0

    def take() -> int | None:
        with lock:
            return next(order, None)

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=n - 1, mp_context=context, initializer=_pool_worker, initargs=(modules(), task)
    ) as pool:

        def feed() -> None:
            """Give the pool its next run (from a worker's completion callback too)."""
            nonlocal submitted
            with lock:  # taken and counted at once: the count is never behind
                i = next(order, None)
                if i is None:
                    return
                submitted += 1
            job = jobs[i]
            try:
                f = pool.submit(one_job, [dicts[j] for j in job], [dirs[j] for j in job])
            except RuntimeError as exc:  # the pool broke or shut down: report it here
                arrived.put((i, exc))
                return

            def done(f, i: int = i) -> None:
                arrived.put((i, f))
                feed()

            f.add_done_callback(done)

        def drain(block: bool) -> int:
            got = 0
            while block or not arrived.empty():
                i, f = arrived.get()
                if isinstance(f, BaseException):
                    raise f
                for j, answer in zip(jobs[i], f.result(), strict=True):
                    finish(j, _outcome(dicts[j], answer))
                got += 1
                block = False
            return got

        # the workers start with Ctrl-C ignored (inherited across exec: a SIGINT while one
        # imports torch would print its traceback); this process handles it for them
        quiet = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            for _ in range(n - 1):
                feed()
        finally:
            if quiet is not None:
                signal.signal(signal.SIGINT, quiet)
        received = 0
        try:
            while (i := take()) is not None:
                job = jobs[i]
                answers = one_job([dicts[j] for j in job], [dirs[j] for j in job])
                for j, answer in zip(job, answers, strict=True):
                    finish(j, _outcome(dicts[j], answer))
                received += drain(block=False)
            while True:
                with lock:
                    if received >= submitted:
                        break
                received += drain(block=True)
        except BaseException:
            with lock:  # nothing more is handed out
                for _ in order:
                    pass
            # the workers (which ignore Ctrl-C) stop now, not at the end of their runs; a
            # second Ctrl-C meanwhile is ignored, so no traceback interrupts the cleanup
            before = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
            try:
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                pool.shutdown(wait=True, cancel_futures=True)
            finally:
                if before is not None:
                    signal.signal(signal.SIGINT, before)
            raise


def _on_ray(
    dicts: list[dict],
    jobs: list[list[int]],
    address: str,
    finish: Callable[[int, Outcome], None],
    task: Any = None,
) -> None:
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
        # one CPU per job (a run, or a grid of runs sharing a schedule): Ray runs as many
        # side by side as the cluster has cores
        from hybridsgd.policies.registry import modules

        remote = ray.remote(num_cpus=1, max_retries=0)(one_job)
        policies = modules()
        shared = ray.put(task) if task is not None else None  # one copy for every run
        refs = {
            remote.remote([dicts[j] for j in job], [None] * len(job), policies, shared): n
            for n, job in enumerate(jobs)
        }
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=RAY_STALL_S)
            if not ready:
                raise ConfigError(
                    "--ray-address",
                    f"no run finished in {RAY_STALL_S:.0f} s: does the cluster have free CPUs?",
                )
            for ref in ready:
                job = jobs[refs[ref]]
                answers = ray.get(ref, timeout=RAY_STALL_S)
                for j, answer in zip(job, answers, strict=True):
                    finish(j, _outcome(dicts[j], _owned(answer)))
    finally:
        if started:
            ray.shutdown()
