"""The Ray backend: worker actors on a laptop or a cluster, the same policy core.

:mod:`~hybridsgd.backends.ray.driver` moves the work, :mod:`~hybridsgd.backends.ray.actors`
computes, and :mod:`~hybridsgd.backends.ray.backend` is the backend a config's
``run.backend = "ray"`` names. Ray is imported only when a run uses it.

The driver is the parameter server and asks the same
:class:`~hybridsgd.core.Coordinator` as every backend for every decision. Parameters travel
through the object store once per version: one ``ray.put`` after each update, whose
reference every worker that starts on that version receives (Ray resolves it to a
zero-copy array on the worker's node). With ``run.ray.shards = S > 1`` the parameters and the
optimizer state live in S parameter-server actors instead, each owning a slice: the driver
sends each shard its slice of the aggregated gradient, and workers receive the S references
the shards' ``apply`` calls return, so the steps run in parallel and a worker starts as soon
as they are done.

Workers on the driver's own node skip Ray once they have started: they attach to the
driver's shared memory (a ring of W + 2 parameter versions and a gradient slot per worker)
and run the local backend's job loop in one long actor call, on a Unix socket to the driver
(a job is four numbers in, a token and a loss out). Ray places, starts, restarts and kills
them. Workers on other nodes get one actor call per job and use the object store as above;
the driver waits on those calls with ``ray.wait``, and a run may mix both. With
``run.ray.shards > 1`` every worker uses the object store (the shards' results live there).

Cancellation: the driver ignores a cancelled job's result and tells the worker, which stops
at its next safe point (on the socket, the next job's message cancels the one in progress).
A worker actor that dies (its call raises, or its socket closes) is restarted up to
``run.ray.max_worker_restarts`` times, then lost: the policy decides, as on the local backend.
Every wait has a timeout. Ctrl-C or the end of the run kill every actor; a Ray instance the
run started is shut down, a cluster it joined is left (the driver detaches).

Ray is an optional dependency: ``pip install 'hybridsgd[ray]'``.
"""

from hybridsgd.backends.driver import RealResult
from hybridsgd.backends.ray.backend import RayBackend
from hybridsgd.backends.ray.driver import (
    Dock,
    RayDriver,
    ShardedServer,
    import_ray,
    ray_threads,
    remove_stale_docks,
)

__all__ = [
    "Dock",
    "RayBackend",
    "RayDriver",
    "RealResult",
    "ShardedServer",
    "import_ray",
    "ray_threads",
    "remove_stale_docks",
]
