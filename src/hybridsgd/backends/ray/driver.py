"""The Ray backend's driver: the server's side of a run on Ray actors (see
:mod:`hybridsgd.backends.ray` for the design)."""

from __future__ import annotations

import contextlib
import glob
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from multiprocessing.connection import Connection, wait
from typing import Any, cast

import numpy as np
import torch

from hybridsgd.backends.driver import Driver, ParameterRing, RealResult
from hybridsgd.backends.inner import Span
from hybridsgd.backends.local.worker import read_answer, send_job, stop
from hybridsgd.core.compensation import DelayCompensation
from hybridsgd.core.tables import GradientTable
from hybridsgd.errors import ConfigError, WorkerLost

#: seconds actors may take to start before the run gives up
STARTUP_TIMEOUT = 120.0
#: seconds a run with workers on both kinds of transport waits on its sockets between
#: looks at Ray's calls
MIXED_POLL = 0.001


def import_ray():
    """The ``ray`` module, or one clear line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "run.backend", "ray is not installed; pip install 'hybridsgd[ray]' (or ray==2.60.0)"
        ) from None
    return ray


class ShardedServer:
    """The server's parameters and optimizer state in ``shards`` actors (see the module
    doc). Looks like a :class:`~hybridsgd.core.ParameterServer` to the coordinator."""

    def __init__(self, ray, params: torch.Tensor, shards: int, optimizer: tuple) -> None:
        from hybridsgd.backends.ray.actors import Shard

        self.ray = ray
        self.numel = params.numel()
        self.version = 0
        bounds = np.linspace(0, self.numel, shards + 1).round().astype(int)
        self.slices = [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        name, lr, options = optimizer
        remote = ray.remote(num_cpus=0)(Shard)
        flat = params.numpy()
        self.actors = [remote.remote(flat[s], name, lr, options) for s in self.slices]
        self.refs = [ray.put(flat[s]) for s in self.slices]

    hyper = None  # per-update lr and momentum need run.ray.shards = 1 (config refuses them)
    # the policy's server state, carried over from the server the shards replace: the
    # coordinator's update builder holds the table; compensation reads ``params``
    table: GradientTable | None = None
    compensation: DelayCompensation | None = None

    def apply(
        self, gradient: torch.Tensor, *, n: int = 1, time: float = 0.0, level: float = 1.0
    ) -> int:
        g = gradient.detach().numpy()
        self.refs = [a.apply.remote(g[s]) for a, s in zip(self.actors, self.slices, strict=True)]
        self.version += 1
        return self.version

    def skip(self) -> int:
        self.version += 1
        return self.version

    @property
    def params(self) -> torch.Tensor:
        parts = self.ray.get(self.refs, timeout=STARTUP_TIMEOUT)
        return torch.from_numpy(np.concatenate(parts))

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)


def remove_stale_docks(root: str | None = None) -> list[str]:
    """Remove the socket directories of drivers that died without cleaning up (SIGKILL):
    ``hybridsgd-<pid>-*`` whose pid is gone. Returns what was removed."""
    root = root or tempfile.gettempdir()
    removed = []
    for path in glob.glob(os.path.join(root, "hybridsgd-*-*")):
        pid = os.path.basename(path).split("-")[1]
        if not pid.isdigit() or not os.path.isdir(path):
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its driver is alive
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
        except PermissionError:
            continue  # another user's live process
    return removed


class Dock:
    """A Unix socket in a private directory where the driver's node's worker actors call in
    for jobs; each says which worker it is and the run's nonce first."""

    def __init__(self, nonce: bytes) -> None:
        self.nonce = nonce
        remove_stale_docks()
        self.dir = tempfile.mkdtemp(prefix=f"hybridsgd-{os.getpid()}-")
        self.address = os.path.join(self.dir, "jobs")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.address)
        self.sock.listen(64)

    def accept(self, timeout: float) -> tuple[int, Connection] | None:
        """The next worker that calls in within ``timeout`` seconds, and its connection."""
        self.sock.settimeout(max(1e-3, timeout))
        try:
            s, _ = self.sock.accept()
        except TimeoutError:
            return None
        s.settimeout(None)
        conn = Connection(s.detach())
        try:
            if conn.poll(max(1e-3, timeout)):
                w, nonce = conn.recv()
                if nonce == self.nonce:
                    return w, conn
        except (EOFError, OSError, ValueError, TypeError):
            pass
        conn.close()  # not one of this run's workers
        return None

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class RayDriver(Driver):
    """One run on Ray worker actors (see the module doc). Use :meth:`run` once."""

    name = "ray"

    def __init__(
        self,
        *args: Any,
        address: str = "",
        max_restarts: int = 0,
        threads: int = 1,
        shards: int = 1,
        optimizer: tuple[str, float, dict] = ("sgd", 0.1, {}),
        share_memory: bool = True,
        device: str = "cpu",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, threads=threads, **kwargs)
        self.device = device
        self.address, self.max_restarts = address, max_restarts
        self.share_memory = share_memory
        self.shards, self.optimizer = shards, optimizer
        self.ray = import_ray()
        self._started_ray = False
        self.actors: list[Any] = []
        self._job_of: dict[Any, tuple[int, int]] = {}  # object ref -> (worker, token)
        self._shared: Any = None  # the driver's NodeShared, when some worker shares its node
        self._dock: Dock | None = None  # where those workers call in
        self._local: list[bool] = []  # per worker: attached to the driver's shared memory
        self._conns: dict[int, Connection] = {}  # worker on this node -> its job socket
        self._refs: list[Any] = []  # object refs of the current version (or its shards)
        self._serving: dict[int, Any] = {}  # worker on this node -> its serve call

    # -- the transport ---------------------------------------------------------------------
    def _open(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            with _quiet_auth_notice():
                ray.init(
                    address=self.address or None,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            self._started_ray = True
        from hybridsgd.backends.ray.actors import Worker

        if self.shards > 1:  # the shards take over the parameters and the optimizer state
            sharded = ShardedServer(ray, self.server.params, self.shards, self.optimizer)
            sharded.table, sharded.compensation = self.server.table, self.server.compensation
            self.server = sharded  # type: ignore[assignment]  # the same interface
            self.coord.server = self.server
        self._gpus = self._gpus_per_worker()
        if self._gpus:
            self.devices = ["cuda"] * self.W  # the GPU Ray gives each actor
        self._remote = ray.remote(num_cpus=0, num_gpus=self._gpus, max_concurrency=2)(Worker)
        self._task_ref = ray.put(self.task)
        self._run_id = uuid.uuid4().hex[:8]
        if self.shards == 1 and self.share_memory:
            self._share()
        self.actors = [self._new_actor(w) for w in range(self.W)]
        self.pids = ray.get([a.pid.remote() for a in self.actors], timeout=STARTUP_TIMEOUT)
        self._local = self._attach(range(self.W))
        self.aliases_gradients = any(self._local)  # a buffered gradient may sit in a slot
        if not any(self._local) and self._shared is not None:
            self._shared.close(unlink=True)
            self._shared = None
            if self._dock is not None:
                self._dock.close()
            self._dock = None
        self._serve([w for w in range(self.W) if self._local[w]])
        self._publish()

    def _gpus_per_worker(self) -> float:
        """``num_gpus`` for each worker actor: 0 on the CPU; on cuda one GPU each, or an even
        share of the cluster's GPUs when there are more workers than GPUs (Ray then packs
        several actors onto one GPU). cuda:N names no GPU on a cluster: Ray picks."""
        if self.device == "cpu":
            return 0.0
        total = float(self.ray.cluster_resources().get("GPU", 0.0))
        if total == 0:
            if self.device == "auto":
                return 0.0
            raise ConfigError(
                "run.device",
                f'{self.device!r} needs GPUs, but the Ray cluster has none; use "cpu" or "auto"',
            )
        if total >= self.W:
            return 1.0
        # an even share, rounded down to Ray's resource precision (1e-4), so all W fit
        return math.floor(total / self.W * 1e4) / 1e4

    def _share(self) -> None:
        """Shared memory for workers on this node: W + 2 parameter versions, W gradients."""
        from hybridsgd.backends.ray.actors import NodeShared

        n = self.server.params.numel()
        self._nonce = uuid.uuid4().bytes
        self._shm_name = f"hybridsgd-{self._run_id}"
        self._shared = NodeShared.create(self._shm_name, self._nonce, self.W + 2, self.W, n)
        self._ring = ParameterRing(self._shared.ring, self.server.params)
        self._dock = Dock(self._nonce)

    def _attach(self, workers) -> list[bool]:
        """Which of these workers' actors share the driver's memory."""
        if self._shared is None:
            return [False for _ in workers]
        n = self.server.params.numel()
        calls = [
            self.actors[w].attach.remote(self._shm_name, self._nonce, self.W + 2, self.W, n, w)
            for w in workers
        ]
        return list(self.ray.get(calls, timeout=STARTUP_TIMEOUT))

    def _serve(self, workers: list[int]) -> None:
        """Start the job loops of these workers (on this node) and take their sockets."""
        if not workers:
            return
        dock = self._dock
        assert dock is not None  # _share made it for the workers on this node
        for w in workers:
            self._serving[w] = self.actors[w].serve.remote(dock.address, w, self._nonce)
        waiting = set(workers)
        deadline = time.perf_counter() + STARTUP_TIMEOUT
        while waiting:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise WorkerLost(
                    f"workers {sorted(waiting)} did not call in within {STARTUP_TIMEOUT:g} s"
                )
            got = dock.accept(min(left, 0.5))
            if got is not None and got[0] in waiting:
                waiting.discard(got[0])
                self._conns[got[0]] = got[1]
            elif got is not None:
                got[1].close()
            if not waiting:
                break
            ended = self.ray.wait([self._serving[w] for w in waiting], timeout=0)[0]
            for w in waiting:
                if self._serving[w] in ended:  # its job loop could not reach this socket
                    raise WorkerLost(f"worker {w} could not call in: {self._why_closed(w)}")

    def _new_actor(self, w: int):
        """Worker ``w``'s actor, named ``hybridsgd-<run>-worker-<w>-<restart>`` (so that
        ``ray.get_actor`` finds it, e.g. to kill it in a fault drill)."""
        flip = self.faults.flips_labels(w)
        name = f"hybridsgd-{self._run_id}-worker-{w}-{self.restarts[w]}"
        options = self._remote.options(name=name)
        device = "cuda" if self._gpus else "cpu"
        return options.remote(
            self._task_ref,
            self.samplers[w],
            self.threads,
            flip,
            device,
            self.worker_of(w),
            self.loads[w],
        )

    def _publish(self) -> None:
        server = self.server
        if isinstance(server, ShardedServer):
            self._refs = list(server.refs)
            return
        if self._shared is not None:
            self._ring.publish(server.params)
        if not all(self._local):  # some worker on another node
            self._refs = [self.ray.put(server.params.numpy())]

    def _launch(self, w: int, token: int, job: int | Span, delay: float) -> int | None:
        if self._local[w]:  # a new job cancels the one in progress, if any
            ring = self._ring.take()
            send_job(self._conns[w], token, job, delay, ring)  # if it died, its socket says so
            return ring
        ref = self.actors[w].compute.remote(token, job, delay, *self._refs)
        self._job_of[ref] = (w, token)
        return None

    def _shared_workers(self) -> list[int]:
        return [w for w, local in enumerate(self._local) if local]

    def _finish(self, ring: int | None) -> None:
        if ring is not None:
            self._ring.release(ring)

    def _loop(self, max_updates: float, max_time: float) -> None:
        rec = self.rec
        while len(rec.update_time) < max_updates:
            now = self._now()
            if now >= max_time:
                break
            budget = self._wait_budget(now, max_time)
            conns = {c: w for w, c in self._conns.items() if w not in self._gone}
            refs = list(self._job_of)
            if refs and conns:  # both kinds: look at Ray's calls, wait briefly on sockets
                ready = self.ray.wait(refs, num_returns=len(refs), timeout=0)[0]
                answered = wait(list(conns), 0.0 if ready else min(budget, MIXED_POLL))
            elif refs:
                ready = self._ready(refs, budget)
                answered = []
            else:
                ready, answered = [], wait(list(conns), budget)
            now = looked = self._now()
            for obj in answered:
                c = cast(Connection, obj)
                w = conns[c]
                answer = read_answer(c)
                if answer is None:
                    self._died(w, now, self._why_closed(w))
                    now = self._now()  # a restart blocks: the next jobs start after it
                    continue
                if self._current(w, answer[0]):
                    self._arrive(w, now, self._shared.grads[w], answer[1], answer[2])
                if len(rec.update_time) >= max_updates:
                    return
            if ready and self._results(ready, now, max_updates):
                return
            # when the driver last looked (before any restart): an answer since is not late
            self._overdue(looked, lambda w: self.ray.kill(self.actors[w], no_restart=True))

    def _why_closed(self, w: int) -> str:
        """Why worker ``w``'s socket closed: what its serve call raised, if Ray knows it
        within a moment."""
        ref = self._serving.pop(w)
        if not self.ray.wait([ref], timeout=0.2)[0]:
            return "its socket closed"
        try:
            self.ray.get(ref, timeout=1.0)
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            return type(exc).__name__
        return "its job loop returned"

    def _ready(self, refs: list, timeout: float) -> list:
        """Ray calls that have finished: the first within ``timeout``, and every other that
        is in by then."""
        ready, rest = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if ready and rest:  # take every result that is in, in one call
            ready += self.ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return ready

    def _results(self, ready: list, now: float, max_updates: float) -> bool:
        """Take the results of finished calls; True once the run has its updates."""
        ray = self.ray
        from ray.exceptions import RayActorError, RayTaskError

        try:
            got = dict(zip(ready, ray.get(ready, timeout=self.worker_timeout), strict=True))
        except (RayActorError, RayTaskError):
            got = {}  # one of them died: fetch them one by one
        for ref in ready:
            w, token = self._job_of.pop(ref)
            try:
                result = got[ref] if ref in got else ray.get(ref, timeout=self.worker_timeout)
            except (RayActorError, RayTaskError) as exc:
                if self._current(w, token):
                    self._died(w, now, type(exc).__name__)
                    now = self._now()  # a restart blocks: the next jobs start after it
                continue
            if result is None or not self._current(w, token):
                continue  # cancelled
            self._arrive(w, now, _gradient(result[1], writable=self._writes(w)), result[3])
            if len(self.rec.update_time) >= max_updates:
                return True
        return False

    def _writes(self, w: int) -> bool:
        """Whether the server may change this worker's gradient in place."""
        return self.faults.touches([w]) or self.coord.check.max_norm is not None

    def _died(self, w: int, now: float, why: str) -> None:
        with contextlib.suppress(KeyError):
            self._conns.pop(w).close()
        if self.restarts[w] < self.max_restarts:
            self.restarts[w] += 1
            self._cancel(w, now)
            self.coord.abandon(w, now)  # the new actor may redo the job that died
            with contextlib.suppress(Exception):  # a socket closed: make sure it is gone
                self.ray.kill(self.actors[w], no_restart=True)
            self.actors[w] = self._new_actor(w)
            # wait for the new actor (its pid replaces the dead one's): its start-up is not
            # its job's time, so run.worker_timeout counts from here (it once declared a
            # restarted worker lost while it started, in 1 of 7 drills)
            self.pids[w] = self.ray.get(self.actors[w].pid.remote(), timeout=STARTUP_TIMEOUT)
            self._local[w] = self._attach([w])[0]
            if self._local[w]:
                self._serve([w])
            self._start(w, self._now())
        else:
            self._lose(w, now, f"actor died ({why})")

    def _cancelling(self, w: int, token: int) -> None:
        if not self._local[w]:  # tell the worker, so it stops at its next safe point
            self.actors[w].cancel.remote(token)  # (on a socket: the next job does)

    def _close(self) -> None:
        for c in self._conns.values():
            stop(c)  # its serve call returns
            c.close()
        self._conns.clear()
        for a in self.actors:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(a, no_restart=True)
        if isinstance(self.server, ShardedServer):
            self.server.close()
        if self._shared is not None:
            self._shared.close(unlink=True)
            self._shared = None
        if self._dock is not None:
            self._dock.close()
            self._dock = None
        if self._started_ray:
            self.ray.shutdown()


def _gradient(array: np.ndarray, writable: bool) -> torch.Tensor:
    """A gradient from the object store: zero-copy when nothing will write to it."""
    from hybridsgd.backends.ray.actors import _tensor as view

    return torch.from_numpy(np.array(array)) if writable else view(array)


class _DropNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this")


@contextlib.contextmanager
def _quiet_auth_notice() -> Iterator[None]:
    """Ray 2.5x announces on every new local cluster that token authentication is on (the
    secure default, nothing for a user to do): that line is dropped. Its warning that
    authentication is off is kept."""
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice = _DropNotice()
    log.addFilter(notice)
    try:
        yield
    finally:
        log.removeFilter(notice)


def ray_threads(threads: int) -> int:
    """torch threads per worker actor: ``threads`` if set, else 1 (Ray places actors on any
    node; one thread each never oversubscribes)."""
    return threads if threads > 0 else 1


__all__ = ["RayDriver", "RealResult", "ShardedServer", "import_ray", "ray_threads"]
