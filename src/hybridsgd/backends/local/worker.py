"""A local worker process: read the parameters the driver placed in a shared-memory slot,
compute one minibatch gradient into its gradient slot, say so, repeat.

Messages are tiny tuples; tensors never travel through the pipe. From the driver:
``(token, minibatch, delay, ring_slot)`` starts a job on the parameters in that slot of the
shared ring (and cancels any job in progress), ``None`` stops the worker. To the driver:
``("ready", pid)`` once, then ``(token, loss, steps, got, done)`` per finished job (the
local steps it took, 0 for a plain gradient; when it had the job message and when its
gradient was written, on this machine's monotonic clock, which the driver's shares), or
``("error", text)`` when the model or loss raised (the driver stops the run and says it
once).
A job lasts at least ``delay`` seconds (injected straggling); the worker checks its pipe at
safe points (before the backward pass, and while it waits out the delay), so a cancelled
job stops there and the next one starts at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import torch

from hybridsgd.backends.inner import LocalSteps, Span, minibatches
from hybridsgd.devices import DeviceMirror
from hybridsgd.errors import WorkerLost, raised
from hybridsgd.tasks.base import Task
from hybridsgd.tasks.data import WorkerSampler

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the driver dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):  # no libc: the pipe's EOF still stops the worker
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def worker_main(
    conn: Connection,
    task: Task,
    sampler: WorkerSampler,
    ring: torch.Tensor,
    grad: torch.Tensor,
    threads: int,
    flip_labels: bool = False,
    device: str = "cpu",
    worker: Any = None,
    load: float = 1.0,
) -> None:
    """The worker's whole life (the target of its process). ``worker``: the ``[worker]``
    section when its jobs are local steps (hybridsgd.backends.inner), else None; ``load``:
    its real work per job, a multiple of its own (``run.worker_load``)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    torch.set_num_threads(threads)
    torch.manual_seed(getattr(sampler, "torch_seed", 0))  # a model's dropout, from the seed
    classes = int(task.y_train.max()) + 1 if flip_labels else 0
    mirror = DeviceMirror(task, device, load)  # moves the task to its GPU, if it has one
    with contextlib.suppress(EOFError, BrokenPipeError, ConnectionResetError):
        conn.send(("ready", os.getpid()))
    steps = LocalSteps(worker, mirror.task) if worker is not None else None
    serve(conn, mirror, sampler, ring, grad, classes, steps)


def send_job(conn: Connection, token: int, minibatch: int | Span, delay: float, slot: int) -> None:
    """The driver's side: start a job on ring slot ``slot`` (it cancels the one in progress).
    A dead worker raises nothing here; its closed connection says so next."""
    with contextlib.suppress(OSError):
        conn.send((token, minibatch, delay, slot))


def read_answer(conn: Connection) -> tuple[int, int, tuple[float, float]] | None:
    """The driver's side: the token of a finished job, the local steps it took (0 for a
    plain gradient), and when the worker had the job and when its gradient was written
    (``time.perf_counter`` in the worker: the driver's clock on the same machine); or None
    if the worker is gone. Raises :class:`WorkerLost` with the model's error when the model
    or loss raised (every worker runs the same code: the run stops, and the error is said
    once)."""
    try:
        answer = conn.recv()
    except (EOFError, OSError):
        return None
    if answer[0] == "error":
        raise WorkerLost(f"the model or its loss raised in a worker: {answer[1]}")
    token, _, steps, got, done = answer
    return token, steps, (got, done)


def stop(conn: Connection) -> None:
    """The driver's side: the worker's job loop returns."""
    with contextlib.suppress(OSError):
        conn.send(None)


def serve(
    conn: Connection,
    mirror: DeviceMirror,
    sampler: WorkerSampler,
    ring: torch.Tensor,
    grad: torch.Tensor,
    classes: int = 0,
    steps: LocalSteps | None = None,
) -> None:
    """Run the jobs that arrive on ``conn`` until ``None`` or the driver is gone (also the
    job loop of a Ray worker actor on the driver's node). ``mirror`` computes on the
    worker's device; ``classes > 0`` flips labels; ``steps``: each job is local steps."""
    try:
        msg = conn.recv()
        while msg is not None:
            msg = _job(conn, mirror, sampler, ring, grad, classes, steps, *msg)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the driver is gone


def _job(
    conn: Connection,
    mirror: DeviceMirror,
    sampler: WorkerSampler,
    ring: torch.Tensor,
    grad: torch.Tensor,
    classes: int,
    steps: LocalSteps | None,
    token: int,
    minibatch: int | Span,
    delay: float,
    slot: int,
):
    """Run one job; return the next message (a new job cancels this one, and a cancelled
    job's local steps are undone: see hybridsgd.backends.inner)."""
    t0, cpu0 = time.perf_counter(), time.thread_time()  # (the job message just arrived)
    batches = minibatches(mirror.task, sampler, classes)
    if steps is None:
        assert isinstance(minibatch, int)  # (a Span only with local steps)
        x, y = batches(minibatch)
    if conn.poll():
        return conn.recv()
    try:
        if steps is None:
            loss = mirror.grad(ring[slot], x, y, grad)
            mirror.repeat(ring[slot], x, y)
        else:
            delta = steps.job(ring[slot], batches, minibatch, between=conn.poll)
            if delta is None:  # cancelled between two steps
                return conn.recv()
            grad.copy_(delta)
            loss = steps.loss
    except Exception as exc:  # noqa: BLE001 - the user's model or loss: say it once, here
        conn.send(("error", raised(exc)))
        return conn.recv()
    if steps is not None:
        mirror.burn(cpu0)
    rest = delay - (time.perf_counter() - t0)
    if rest > 0 and conn.poll(rest):
        if steps is not None:
            steps.undo()  # its result is never sent
        return conn.recv()
    taken = 0 if steps is None else steps.taken
    conn.send((token, loss, taken, t0, time.perf_counter()))  # (after any injected delay)
    return conn.recv()
