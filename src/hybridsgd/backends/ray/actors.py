"""The Ray backend's actors: a worker computes gradients; a parameter-server shard owns a
slice of the parameters and the optimizer state for it. Imported only by the Ray backend."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from typing import Any

import numpy as np
import torch

from hybridsgd.backends.inner import LocalSteps, Span, minibatches
from hybridsgd.core.server import ParameterServer
from hybridsgd.devices import DeviceMirror
from hybridsgd.tasks.base import Task
from hybridsgd.tasks.data import WorkerSampler


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A zero-copy tensor over an array from the object store (read-only memory: nothing
    here writes to it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


class Worker:
    """Computes minibatch gradients. On the driver's node it runs one long call,
    :meth:`serve`, a job loop on a socket and shared memory. Elsewhere each job is one call
    on the parameters it is given (one object store reference per version, or one per
    shard); two calls run at once at most so that :meth:`cancel` can reach a job while it
    waits out its injected delay."""

    def __init__(
        self,
        task: Task,
        sampler: WorkerSampler,
        threads: int,
        flip_labels: bool,
        device: str = "cpu",
        worker: Any = None,
        load: float = 1.0,
    ):
        torch.set_num_threads(threads)
        torch.manual_seed(getattr(sampler, "torch_seed", 0))  # a model's dropout, from the seed
        self.task, self.sampler = task, sampler
        self.mirror = DeviceMirror(task, device, load)  # on cuda, the GPU Ray gave this actor
        self.classes = int(task.y_train.max()) + 1 if flip_labels else 0
        self.cancelled = 0
        self.lock = threading.Lock()
        self.shared: NodeShared | None = None
        # local steps (hybridsgd.backends.inner): a restarted actor starts them afresh
        self.steps = LocalSteps(worker, self.mirror.task) if worker is not None else None
        self._batch = minibatches(self.task, sampler, self.classes)

    def pid(self) -> int:
        return os.getpid()

    def attach(
        self, name: str, nonce: bytes, slots: int, workers: int, numel: int, worker: int
    ) -> bool:
        """Attach to the driver's shared memory if this actor runs on the driver's node
        (the segment exists here and carries the run's nonce); False elsewhere."""
        self.shared = NodeShared.attach(name, nonce, slots, workers, numel, worker)
        return self.shared is not None

    def cancel(self, token: int) -> None:
        self.cancelled = max(self.cancelled, token)

    def compute(self, token: int, minibatch: int | Span, delay: float, *shards: np.ndarray):
        """A gradient on parameters from the object store, returned through it with the
        job's loss and its local steps (0 for a plain gradient)."""
        with self.lock:  # a new job waits for a cancelled one to reach a safe point
            if self.cancelled >= token:
                return None
            flat = _tensor(shards[0] if len(shards) == 1 else np.concatenate(shards))
            out = self._gradient(token, minibatch, delay, flat)
            if out is None:
                return None
            return token, out[0].numpy(), out[1], 0 if self.steps is None else self.steps.taken

    def serve(self, address: str, worker: int, nonce: bytes) -> None:
        """The job loop of a worker on the driver's node (after :meth:`attach`): connect to
        the driver's socket at ``address`` and run the jobs it sends there, on ring slots
        of the shared memory, into this worker's gradient slot, as a local worker does
        (:func:`hybridsgd.backends.local.worker.serve`). Returns when the driver says stop
        or is gone."""
        from multiprocessing.connection import Client

        from hybridsgd.backends.local.worker import serve

        shared = self.shared
        assert shared is not None and shared.grad is not None  # attached
        with Client(address, family="AF_UNIX") as conn:
            conn.send((worker, nonce))
            serve(
                conn, self.mirror, self.sampler, shared.ring, shared.grad, self.classes,
                self.steps,
            )  # fmt: skip

    def _gradient(self, token: int, minibatch: int | Span, delay: float, flat: torch.Tensor):
        t0, cpu0 = time.perf_counter(), time.thread_time()
        if self.steps is None:
            assert isinstance(minibatch, int)  # (a Span only with local steps)
            x, y = self._batch(minibatch)
            grad, loss = self.mirror.gradient(flat, x, y)
            self.mirror.repeat(flat, x, y)
        else:  # local steps; a cancel between two of them undoes the job
            delta = self.steps.job(
                flat, self._batch, minibatch, between=lambda: self.cancelled >= token
            )
            if delta is None:
                return None
            grad, loss = delta, self.steps.loss
            self.mirror.burn(cpu0)
        while (rest := delay - (time.perf_counter() - t0)) > 0:
            if self.cancelled >= token:
                if self.steps is not None:
                    self.steps.undo()  # its result is never sent
                return None
            time.sleep(min(rest, 0.002))
        return grad, loss


class NodeShared:
    """The driver's shared memory, seen from its node: a nonce that tells this run's segment
    from any other of the same name, a ring of parameter versions and one gradient slot per
    worker (as on the local backend)."""

    HEADER = 64  # bytes for the nonce

    def __init__(self, shm, slots: int, workers: int, numel: int, worker: int | None) -> None:
        self.shm = shm
        body = np.ndarray(
            (slots + workers, numel), dtype=np.float32, buffer=shm.buf, offset=self.HEADER
        )
        self.ring: torch.Tensor = torch.from_numpy(body[:slots])
        self.grads: torch.Tensor = torch.from_numpy(body[slots:])
        self.grad: torch.Tensor | None = self.grads[worker] if worker is not None else None

    @classmethod
    def size(cls, slots: int, workers: int, numel: int) -> int:
        return cls.HEADER + 4 * numel * (slots + workers)

    @classmethod
    def create(cls, name: str, nonce: bytes, slots: int, workers: int, numel: int):
        from multiprocessing import shared_memory

        shm = shared_memory.SharedMemory(
            name=name, create=True, size=cls.size(slots, workers, numel)
        )
        shm.buf[: len(nonce)] = nonce  # type: ignore[index]  # a new segment has a buffer
        return cls(shm, slots, workers, numel, None)

    @classmethod
    def attach(cls, name: str, nonce: bytes, slots: int, workers: int, numel: int, worker: int):
        from multiprocessing import resource_tracker, shared_memory

        try:
            shm = shared_memory.SharedMemory(name=name)
        except (FileNotFoundError, OSError):
            return None  # another node
        # the driver owns the segment: this process must not unlink it when it exits
        resource_tracker.unregister(shm._name, "shared_memory")  # type: ignore[attr-defined]
        head = bytes(shm.buf[: len(nonce)])  # type: ignore[index]  # an open segment has one
        if head != nonce or shm.size < cls.size(slots, workers, numel):
            shm.close()
            return None
        return cls(shm, slots, workers, numel, worker)

    def close(self, unlink: bool = False) -> None:
        self.ring = self.grads = self.grad = None  # type: ignore[assignment]  # closed
        with contextlib.suppress(BufferError):  # a view still alive: the OS frees it at exit
            self.shm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()


class Shard:
    """A parameter-server shard: a contiguous slice of the flat parameters and the
    optimizer's state for it. Every optimizer hybridsgd configures is elementwise, so
    sharded steps equal the unsharded step exactly."""

    def __init__(self, params: np.ndarray, optimizer: str, lr: float, options: dict) -> None:
        torch.set_num_threads(1)
        self.server = ParameterServer(torch.from_numpy(np.array(params)), optimizer, lr, **options)

    def apply(self, grad: np.ndarray) -> np.ndarray:
        self.server.apply(_tensor(grad))
        return self.server.params.numpy()  # serialised (copied) into the object store

    def state_dict(self) -> dict:
        return self.server.state_dict()
