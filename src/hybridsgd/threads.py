"""How many torch threads the simulator computes gradients on when ``run.threads = 0``:
chosen by measurement (issue 38).

What decides it is whether other processes keep the cores busy. Measured on this 2-core
machine (``python benchmarks/threads.py [--busy]``, docs/performance.md): when it is
quiet, every core is as fast as one thread or faster on every workload there (a BatchNorm
CNN 0.36 s against 0.45 s, cnn-mnist 1.45 against 2.59, lm 6.99 against 12.89); when
another process keeps one core busy, two threads stall behind it (the same CNN 1.47 s
against 0.48 on one thread, lm 19.7 against 12.7; 11.5 against 1.1 s in the report that
opened the issue). So :class:`Load` counts the *other* processes' running threads when the run
starts and again when its task is built (``/proc/loadavg`` less this process's own, a few
samples a millisecond apart: about 10 ms), and the run takes the cores they leave free, at
least 1: every core on a quiet machine. The first simulated run of a process measures; the
later ones reuse its choice (:data:`_CACHE`), so that runs of one session compute alike.

Where ``/proc/loadavg`` cannot be read (not Linux), :func:`probe` times the run's own typical
gradient on 1 thread and on every core, alternately, and takes every core only if its
median is more than 25% faster; the result is kept per model, minibatch shape and core
count in the process (:data:`_CACHE`).

The run writes the chosen count into its config.toml (``run.threads``) and says why in its
summary (``threads_choice``): rerunning that config.toml gives the same numbers bit for
bit, since a reduction's order follows the thread count. A fixed ``run.threads`` measures
nothing.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

#: ("load", cores), or (parameter shapes, probe input shape, cores) -> (threads, why)
_CACHE: dict[tuple, tuple[int, str]] = {}

#: one thread wins unless every core is faster by more than this factor (medians)
MARGIN = 1.25
#: seconds the probe may take in all (at least 5 timings of each setting)
BUDGET_S = 0.1


def _timed(op, threads: int) -> float:
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    op()
    return time.perf_counter() - t0


def _medians(op, cores: int) -> tuple[float, float]:
    """Median seconds of ``op`` on 1 thread and on ``cores``, timed alternately."""
    before = torch.get_num_threads()
    try:
        _timed(op, 1), _timed(op, cores)  # warm up: allocations, the pool's threads
        one: list[float] = []
        many: list[float] = []
        start = time.perf_counter()
        while len(one) < 5 or (time.perf_counter() - start < BUDGET_S and len(one) < 50):
            one.append(_timed(op, 1))
            many.append(_timed(op, cores))
        return float(np.median(one)), float(np.median(many))
    finally:
        torch.set_num_threads(before)


class Load:
    """How many other processes' threads are running on the machine, sampled when the run
    starts and again when its task is built (Linux: ``/proc/loadavg``'s count of runnable
    tasks, less this process's own running threads)."""

    #: samples taken at each end, a millisecond apart
    SAMPLES = (3, 5)

    def __init__(self) -> None:
        self.first = _sample(self.SAMPLES[0])

    def others(self) -> float | None:
        """Other processes' running threads, on average over the samples (None where the
        machine's counters cannot be read)."""
        if self.first is None:
            return None
        last = _sample(self.SAMPLES[1])
        if last is None:
            return None
        both = self.first + last
        return sum(both) / len(both)


def _sample(n: int) -> list[float] | None:
    out = []
    for i in range(n):
        got = _running_others()
        if got is None:
            return None
        out.append(got)
        if i + 1 < n:
            time.sleep(0.001)
    return out


def _running_others() -> float | None:
    """Runnable threads on the machine now, other than this process's own."""
    try:
        with open("/proc/loadavg") as f:
            total = int(f.read().split()[3].split("/")[0])
        ours = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    ours += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:  # the thread ended meanwhile
                continue
    except (OSError, ValueError, IndexError):
        return None
    return float(max(0, total - ours))


def choose(
    task: Any, workers: int, batch_size: int, cores: int, load: Load | None = None
) -> tuple[int, str]:
    """``(threads, why)`` for a simulated run of ``task`` with ``workers`` workers and
    minibatches of ``batch_size``, on a machine with ``cores`` cores for this process;
    ``load`` started when the run did (see the module doc)."""
    if cores <= 1:
        return 1, "one core"
    if ("load", cores) in _CACHE:  # measured by an earlier run of this process
        return _CACHE["load", cores]
    others = load.others() if load is not None else None
    if others is None:
        return probe(task, workers, batch_size, cores)
    threads = max(1, min(cores, round(cores - others)))
    _CACHE["load", cores] = (
        threads,
        (
            f"measured: other processes had {others:.2g} running threads on the {cores} "
            f"cores as this process's first run started, so {threads} "
            f"thread{'s' if threads > 1 else ''}"
        ),
    )
    return _CACHE["load", cores]


def probe(task: Any, workers: int, batch_size: int, cores: int) -> tuple[int, str]:
    """``(threads, why)`` from timing the run's typical gradient (where the load cannot be
    read)."""
    coupled = task.batch_coupled
    m = 1 if coupled else max(1, min(workers, task.stack_limit // max(1, batch_size)))
    n = min(task.n_train, m * batch_size)
    idx = torch.arange(n) % task.n_train
    x, y = task.batch(idx.numpy())
    key = (tuple(tuple(s) for s in task.shapes), tuple(x.shape), cores)
    if key in _CACHE:
        return _CACHE[key]
    flat = task.initial_params()
    out = torch.empty_like(flat)

    def op() -> None:
        task.grad(flat, x, y, out=out, minibatch=batch_size)

    with torch.random.fork_rng(devices=[]):  # a dropout model's draws stay the run's own
        one, many = _medians(op, cores)
    threads = cores if many * MARGIN < one else 1
    what = f"{m} minibatch{'es' if m > 1 else ''} of {batch_size}"
    why = (
        f"measured: a gradient of {what} took {one * 1e3:.3g} ms on 1 thread, "
        f"{many * 1e3:.3g} ms on {cores} (medians)"
    )
    _CACHE[key] = (threads, why)
    return threads, why
