"""The local backend's driver: W worker processes on this machine, parameters in shared memory, the
real clock.

The driver (the calling process) is the parameter server. It runs the same
:class:`~hybridsgd.core.Coordinator` as every backend: it asks the policy whether an idle
worker may start and on which version, hands it each arriving gradient, and carries out the
answer. No policy logic lives here; this module only moves work and measures time.

Transport: shared memory holds a ring of W + 2 parameter versions and one gradient slot per
worker. After each update the driver copies the new version into a free ring slot, once,
however many workers then read it; a slot is free when no running job reads it, so a
worker computes on exactly the version the policy named, however far the server moves on.
A job is a four-number message (which ring slot to read), the answer a two-number message;
the worker writes its gradient into its own slot. No tensor is ever pickled. A gradient
the policy buffers is used in place until its worker is about to overwrite it, and copied
only then.

Faults: the driver watches every worker's process sentinel. A worker that dies, or stays
silent for ``run.worker_timeout`` seconds on one job (it is then killed), is lost: the policy
decides what follows (:meth:`~hybridsgd.policies.QuorumPolicy.lose`). Ctrl-C, a fault the
policy cannot absorb, or the end of the run stop every worker; none outlives the driver
(Linux kills them with it even when the driver itself is SIGKILLed).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import time
from collections.abc import Iterator
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait
from typing import Any, cast

import torch
import torch.multiprocessing as tmp

from hybridsgd.backends.driver import Driver, ParameterRing, RealResult
from hybridsgd.backends.inner import Span
from hybridsgd.backends.local.worker import read_answer, send_job, stop, worker_main
from hybridsgd.errors import ConfigError, WorkerLost

#: seconds a worker may take to start (import torch, receive the task) before it is lost
STARTUP_TIMEOUT = 120.0


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def exit_reason(proc, wait: float = 1.0) -> str:
    """Why a worker process ended, once it has: its pipe can close a moment before the
    process is reaped, so wait up to ``wait`` seconds for its exit status."""
    proc.join(wait)
    code = proc.exitcode
    if code is None:
        return "its pipe closed, the process is still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"process killed by {signal.Signals(-code).name}"
    return f"process exited with code {code}"


def worker_threads(workers: int, threads: int = 0) -> int:
    """torch intra-op threads per worker: ``threads`` if set, else the cores shared out so
    that W workers never oversubscribe the machine (at least one each)."""
    return threads if threads > 0 else max(1, available_cores() // workers)


class LocalDriver(Driver):
    """One run on local processes (see the module doc). Use :meth:`run` once."""

    name = "local"
    aliases_gradients = True  # a buffered gradient stays in its worker's slot
    _gpu: torch.device | None = None  # the server's GPU, when the slots live there

    def __init__(
        self,
        *args: Any,
        threads: int = 0,
        devices: list | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.threads = worker_threads(self.W, threads)
        if devices is not None:
            if len(devices) != self.W:
                raise ValueError(f"devices names {len(devices)} devices for {self.W} workers")
            self.devices = [str(d) for d in devices]

    # -- the transport ---------------------------------------------------------------------
    def _open(self) -> None:
        params = self.server.params
        n, where = params.numel(), params.device
        if where.type == "cuda" and any(torch.device(d) != where for d in self.devices):
            raise ValueError(f"a server on {where} needs every worker there ({self.devices})")
        # on the CPU, in shared memory; on the server's GPU, shared through CUDA IPC when
        # the workers receive them (torch.multiprocessing)
        ring = torch.zeros(self.W + 2, n, device=where)
        grads = torch.zeros(self.W, n, device=where)
        self._gpu = where if where.type == "cuda" else None
        self._ring = ParameterRing(ring if self._gpu else ring.share_memory_(), params)
        self._grads = grads if self._gpu else grads.share_memory_()
        self.procs: list[Any] = []  # multiprocessing Process objects
        self.conns: list[Connection] = []
        self._spawn()
        self._await_ready()
        self.pids = [p.pid for p in self.procs]

    def _spawn(self) -> None:
        ctx = _context()
        warm_up()
        for w in range(self.W):
            parent, child = ctx.Pipe(duplex=True)
            args = (child, self.task, self.samplers[w], self._ring.slots, self._grads[w])
            p = ctx.Process(
                target=worker_main,
                args=(
                    *args,
                    self.threads,
                    self.faults.flips_labels(w),
                    self.devices[w],
                    self.worker_of(w),
                    self.loads[w],
                ),
                name=f"hybridsgd-worker-{w}",
                daemon=True,
            )
            try:
                p.start()
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                raise ConfigError(
                    "task",
                    "the local backend sends the task to its workers by pickling, which failed"
                    f" ({exc}); use a module-level model class and loss function, not a lambda",
                ) from None
            child.close()
            self.procs.append(p)
            self.conns.append(parent)

    def _await_ready(self) -> None:
        waiting = dict(enumerate(self.conns))
        deadline = time.perf_counter() + STARTUP_TIMEOUT
        while waiting:
            sentinels = {self.procs[w].sentinel: w for w in waiting}
            ready = wait([*waiting.values(), *sentinels], deadline - time.perf_counter())
            if not ready:
                raise WorkerLost(
                    f"workers {sorted(waiting)} did not start within {STARTUP_TIMEOUT:g} s"
                )
            for obj in ready:
                w = sentinels.get(obj)
                if w is None:
                    w = next(k for k, c in waiting.items() if c is obj)
                elif w not in waiting or waiting[w].poll():
                    continue  # its ready message is read through its pipe
                try:
                    waiting.pop(w).recv()
                except EOFError:
                    raise WorkerLost(
                        f"worker {w} exited while starting ({exit_reason(self.procs[w])}); a"
                        " script that starts local runs needs"
                        " `if __name__ == '__main__':` around them"
                    ) from None

    def _loop(self, max_updates: float, max_time: float) -> None:
        rec = self.rec
        conn_of = {c: w for w, c in enumerate(self.conns)}
        sentinel_of = {p.sentinel: w for w, p in enumerate(self.procs)}
        while len(rec.update_time) < max_updates:
            now = self._now()
            if now >= max_time:
                break
            timeout = self._wait_budget(now, max_time)
            live = [c for c, w in conn_of.items() if w not in self._gone]
            watch = [s for s, w in sentinel_of.items() if w not in self._gone]
            ready = wait([*live, *watch], timeout)
            now = self._now()
            dead = []
            for obj in ready:
                if obj in sentinel_of:
                    dead.append(sentinel_of[obj])
                    continue
                conn = cast(Connection, obj)
                w = conn_of[conn]
                answer = read_answer(conn)
                if answer is None:
                    dead.append(w)
                    continue
                if self._current(w, answer[0]):
                    self._arrive(w, now, self._grads[w], answer[1], answer[2])
                if len(rec.update_time) >= max_updates:
                    return
            for w in dead:
                self._lose(w, now, exit_reason(self.procs[w]))
            self._overdue(now, lambda w: self.procs[w].kill())

    def _launch(self, w: int, token: int, job: int | Span, delay: float) -> int:
        if self._gpu is not None:  # the server's work on the GPU is done before a worker,
            # another process on another stream, reads the version it published or writes
            # over a gradient the server used
            torch.cuda.synchronize(self._gpu)
        ring = self._ring.take()
        send_job(self.conns[w], token, job, delay, ring)  # if it died, its sentinel says so
        return ring

    def _finish(self, ring: int) -> None:
        self._ring.release(ring)

    def _publish(self) -> None:
        self._ring.publish(self.server.params)

    def _close(self) -> None:
        for c in self.conns:
            stop(c)
        deadline = time.perf_counter() + 2.0
        for p in self.procs:
            p.join(max(0.0, deadline - time.perf_counter()))
        for w, p in enumerate(self.procs):
            if p.is_alive():  # hung past the end of the run (stopped, or stuck in a job)
                self.hung.append(w)
                p.kill()
                p.join(5.0)
        for c in self.conns:
            c.close()


def _context():
    """Workers fork from a server process that has imported torch and this module, and
    nothing else: starting one costs milliseconds after the first, and none inherits the
    driver's threads (forking a process that has run torch's thread pool can hang)."""
    ctx = tmp.get_context("forkserver")
    ctx.set_forkserver_preload(["hybridsgd.backends.local.worker"])
    return ctx


def warm_up() -> None:
    """Start the forkserver now, if it is not running: it imports torch and the worker
    module (about a second) while the caller goes on, e.g. building the task, so the
    workers start sooner. Launched (fork + exec, instant) with SIGINT ignored: it keeps
    SIG_IGN, and so does every worker it forks, from birth. Ctrl-C reaches the driver only,
    and is never swallowed while workers start."""
    _context()
    with _sigint_ignored():
        forkserver.ensure_running()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to inherit
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


__all__ = ["LocalDriver", "RealResult", "available_cores", "worker_threads"]
