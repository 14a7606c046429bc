"""The Ray backend: worker actors on a laptop or a cluster, the same policy core.

The driver is the parameter server and asks the same
:class:`~hybridsgd.core.Coordinator` as every backend for every decision. Parameters travel
through the object store once per version: one ``ray.put`` after each update, whose
reference every worker that starts on that version receives (Ray resolves it to a
zero-copy array on the worker's node). With ``run.ps_shards = S > 1`` the parameters and the
optimizer state live in S parameter-server actors instead, each owning a slice: the driver
sends each shard its slice of the aggregated gradient, and workers receive the S references
the shards' ``apply`` calls return, so the steps run in parallel and a worker starts as soon
as they are done.

Workers on the driver's own node skip the object store: they attach to the driver's shared
memory (a ring of W + 2 parameter versions and a gradient slot per worker, as on the local
backend), and their actor calls carry four numbers in and a token and a loss out. Workers on
other nodes use the object store as above; a run may mix both. With ``run.ps_shards > 1``
every worker uses the object store (the shards' results live there).

A job is one actor call; the driver waits on all of them with ``ray.wait`` and a timeout.
Cancellation is a version check: the driver ignores a cancelled job's result and tells the
worker, which stops at its next safe point. A worker actor that dies (its call raises) is
restarted up to ``run.max_worker_restarts`` times, then lost: the policy decides, as on the
local backend. Ctrl-C or the end of the run kill every actor; a Ray instance the run
started is shut down, a cluster it joined is left (the driver detaches).

Ray is an optional dependency: ``pip install 'hybridsgd[ray]'``.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import numpy as np
import torch

from hybridsgd.backends.driver import Driver, ParameterRing, RealResult
from hybridsgd.errors import ConfigError

#: seconds actors may take to start before the run gives up
STARTUP_TIMEOUT = 120.0
POSTED = (None, None, None)  # a result read from shared memory: the gradient is in its slot


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

    def apply(self, gradient: torch.Tensor) -> int:
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


class RayBackend(Driver):
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
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, threads=threads, **kwargs)
        self.address, self.max_restarts = address, max_restarts
        self.share_memory = share_memory
        self.shards, self.optimizer = shards, optimizer
        self.ray = import_ray()
        self._started_ray = False
        self.actors: list[Any] = []
        self._job_of: dict[Any, tuple[int, int]] = {}  # object ref -> (worker, token)
        self._shared = None  # the driver's NodeShared, when some worker shares its node
        self._local: list[bool] = []  # per worker: attached to the driver's shared memory

    # -- the transport ---------------------------------------------------------------------
    def _open(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            ray.init(
                address=self.address or None,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self._started_ray = True
        from hybridsgd.backends.ray.actors import Worker

        if self.shards > 1:  # the shards take over the parameters and the optimizer state
            self.server = ShardedServer(ray, self.server.params, self.shards, self.optimizer)
            self.coord.server = self.server
        self._remote = ray.remote(num_cpus=0, max_concurrency=2)(Worker)
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
        self._publish()

    def _share(self) -> None:
        """Shared memory for workers on this node: W + 2 parameter versions, W gradients."""
        from hybridsgd.backends.ray.actors import NodeShared

        n = self.server.params.numel()
        self._nonce = uuid.uuid4().bytes
        self._shm_name = f"hybridsgd-{self._run_id}"
        self._shared = NodeShared.create(self._shm_name, self._nonce, self.W + 2, self.W, n)
        self._ring = ParameterRing(self._shared.ring, self.server.params)

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

    def _new_actor(self, w: int):
        """Worker ``w``'s actor, named ``hybridsgd-<run>-worker-<w>-<restart>`` (so that
        ``ray.get_actor`` finds it, e.g. to kill it in a fault drill)."""
        flip = self.faults.flips_labels(w)
        name = f"hybridsgd-{self._run_id}-worker-{w}-{self.restarts[w]}"
        options = self._remote.options(name=name)
        return options.remote(self._task_ref, self.samplers[w], self.threads, flip)

    def _publish(self) -> None:
        server = self.server
        if isinstance(server, ShardedServer):
            self._refs = list(server.refs)
            return
        if self._shared is not None:
            self._ring.publish(server.params)
        if not all(self._local):  # some worker on another node
            self._refs = [self.ray.put(server.params.numpy())]

    def _launch(self, w: int, token: int, slot: int, delay: float) -> int | None:
        if self._local[w]:
            ring = self._ring.take()
            ref = self.actors[w].compute_shared.remote(token, slot, delay, ring)
        else:
            ring = None
            ref = self.actors[w].compute.remote(token, slot, delay, *self._refs)
        self._job_of[ref] = (w, token)
        return ring

    def _shared_workers(self) -> list[int]:
        return [w for w, local in enumerate(self._local) if local]

    def _finish(self, ring: int | None) -> None:
        if ring is not None:
            self._ring.release(ring)

    def _loop(self, max_updates: float, max_time: float) -> None:
        ray, rec = self.ray, self.rec
        from ray.exceptions import RayActorError, RayTaskError

        while len(rec.update_time) < max_updates:
            now = self._now()
            if now >= max_time:
                break
            budget = self._wait_budget(now, max_time)
            refs = list(self._job_of)
            ready, rest = ray.wait(refs, num_returns=1, timeout=budget)
            if ready and rest:  # take every result that is in, in one call
                ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
            now = self._now()
            # a result posted in shared memory needs no ray.get (under load, a ray.get of
            # a finished call still waited ~4 ms for Ray's own threads)
            fetch = [ref for ref in ready if not self._posted(*self._job_of[ref])]
            try:
                values = ray.get(fetch, timeout=self.worker_timeout) if fetch else []
                got = dict(zip(fetch, values, strict=True))
            except (RayActorError, RayTaskError):
                got = {}  # one of them died: fetch them one by one
            for ref in ready:
                w, token = self._job_of.pop(ref)
                if self._posted(w, token):
                    result = POSTED
                else:
                    try:
                        result = (
                            got[ref] if ref in got else ray.get(ref, timeout=self.worker_timeout)
                        )
                    except (RayActorError, RayTaskError) as exc:
                        if self._current(w, token):
                            self._died(w, now, type(exc).__name__)
                        continue
                if result is None or not self._current(w, token):
                    continue  # cancelled
                if result[1] is None:  # in its slot of the shared memory
                    grad = self._shared.grads[w]
                else:
                    grad = _gradient(result[1], writable=self._writes(w))
                self._arrive(w, now, grad)
                if len(rec.update_time) >= max_updates:
                    return
            self._overdue(now, lambda w: ray.kill(self.actors[w], no_restart=True))

    def _posted(self, w: int, token: int) -> bool:
        """Whether worker ``w`` posted job ``token``'s result in shared memory."""
        return self._local[w] and self._shared.results[w, 0] == token

    def _writes(self, w: int) -> bool:
        """Whether the server may change this worker's gradient in place."""
        return self.faults.touches([w]) or self.coord.check.max_norm is not None

    def _died(self, w: int, now: float, why: str) -> None:
        if self.restarts[w] < self.max_restarts:
            self.restarts[w] += 1
            self._cancel(w, now)
            self.actors[w] = self._new_actor(w)
            self._local[w] = self._attach([w])[0] if self._shared is not None else False
            self._start(w, now)
        else:
            self._lose(w, now, f"actor died ({why})")

    def _follow(self, d, now: float) -> None:
        for c in d.cancel:  # tell the worker, so it stops at its next safe point
            if c in self._busy:
                self.actors[c].cancel.remote(self._busy[c][0])
        super()._follow(d, now)

    def _close(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(a, no_restart=True)
        if isinstance(self.server, ShardedServer):
            self.server.close()
        if self._shared is not None:
            self._shared.close(unlink=True)
            self._shared = None
        if self._started_ray:
            self.ray.shutdown()


def _gradient(array: np.ndarray, writable: bool) -> torch.Tensor:
    """A gradient from the object store: zero-copy when nothing will write to it."""
    from hybridsgd.backends.ray.actors import _tensor as view

    return torch.from_numpy(np.array(array)) if writable else view(array)


def ray_threads(threads: int) -> int:
    """torch threads per worker actor: ``threads`` if set, else 1 (Ray places actors on any
    node; one thread each never oversubscribes)."""
    return threads if threads > 0 else 1


__all__ = ["RayBackend", "RealResult", "ShardedServer", "import_ray", "ray_threads"]
