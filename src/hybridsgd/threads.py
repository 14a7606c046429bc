"""How many torch threads the simulator computes gradients on when ``run.threads = 0``:
chosen by measurement (issue 38).

One thread is often faster than every core for the small models hybridsgd's examples use:
a gradient of a few milliseconds does not amortise the thread pool's hand-offs, and on a
shared machine threads that spin while another process holds a core cost far more (a
BatchNorm CNN took 11.5 s for 60 sync updates on 2 threads of a busy 2-core machine, and
1.1 s on one). Large gradients gain from every core. So the choice is measured, not
guessed: :func:`choose` times the run's own typical gradient (the task's stacked gradient
of ``min(W, stack_limit)`` minibatches; one minibatch for a BatchNorm model) on 1 thread
and on every core, best of a few, and takes the faster; within 5% it takes 1 thread (it
leaves the other cores to the rest of the machine). The probe costs a few of those
gradients, once per model, minibatch shape and core count in a process (:data:`_CACHE`).

The run writes the chosen count into its config.toml (``run.threads``) and says why in its
summary (``threads_choice``): rerunning that config.toml gives the same numbers bit for
bit, since a reduction's order follows the thread count. A fixed ``run.threads`` skips the
probe.
"""

from __future__ import annotations

import time
from typing import Any

import torch

#: (parameter shapes, probe input shape, cores) -> (threads, why)
_CACHE: dict[tuple, tuple[int, str]] = {}

#: one thread wins unless every core is faster by more than this factor
MARGIN = 1.05
#: seconds each setting is timed for (at least 3 repetitions each)
BUDGET_S = 0.1


def _best(op, threads: int) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        op()  # warm up: allocations, the pool's threads
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - start < BUDGET_S and len(times) < 50):
            t0 = time.perf_counter()
            op()
            times.append(time.perf_counter() - t0)
        return min(times)
    finally:
        torch.set_num_threads(before)


def choose(task: Any, workers: int, batch_size: int, cores: int) -> tuple[int, str]:
    """``(threads, why)`` for a simulated run of ``task`` with ``workers`` workers and
    minibatches of ``batch_size``, on a machine with ``cores`` cores for this process."""
    if cores <= 1:
        return 1, "one core"
    if task.device.type != "cpu":
        return cores, f"gradients on {task.device}: torch's default"
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
        one, many = _best(op, 1), _best(op, cores)
        # measured once more in the other order: a machine that drifts between the two
        # timings slows both alike
        many, one = min(many, _best(op, cores)), min(one, _best(op, 1))
    threads = cores if many * MARGIN < one else 1
    what = f"{m} minibatch{'es' if m > 1 else ''} of {batch_size}"
    why = (
        f"measured: a gradient of {what} took {one * 1e3:.3g} ms on 1 thread, "
        f"{many * 1e3:.3g} ms on {cores}"
    )
    _CACHE[key] = (threads, why)
    return threads, why
