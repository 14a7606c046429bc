"""The Ray backend's actors: a worker computes gradients; a parameter-server shard owns a
slice of the parameters and the optimizer state for it. Imported only by the Ray backend."""

from __future__ import annotations

import os
import threading
import time
import warnings

import numpy as np
import torch

from hybridsgd.core.server import ParameterServer
from hybridsgd.tasks.base import Task
from hybridsgd.tasks.data import WorkerSampler


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A zero-copy tensor over an array from the object store (read-only memory: nothing
    here writes to it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


class Worker:
    """Computes one minibatch gradient per call on the parameters it is given (one object
    store reference per version, or one per shard). Runs two calls at once at most so that
    :meth:`cancel` can reach a job while it waits out its injected delay."""

    def __init__(self, task: Task, sampler: WorkerSampler, threads: int, flip_labels: bool):
        torch.set_num_threads(threads)
        self.task, self.sampler = task, sampler
        self.classes = int(task.y_train.max()) + 1 if flip_labels else 0
        self.cancelled = 0
        self.lock = threading.Lock()

    def pid(self) -> int:
        return os.getpid()

    def cancel(self, token: int) -> None:
        self.cancelled = max(self.cancelled, token)

    def compute(self, token: int, minibatch: int, delay: float, *shards: np.ndarray):
        with self.lock:  # a new job waits for a cancelled one to reach a safe point
            if self.cancelled >= token:
                return None
            t0 = time.perf_counter()
            flat = _tensor(shards[0] if len(shards) == 1 else np.concatenate(shards))
            x, y = self.task.batch(self.sampler.batch(minibatch))
            if self.classes:  # a label-flipping (Byzantine) worker
                y = self.classes - 1 - y
            with self.task.bound_to(flat):
                grad, loss = self.task.grad(flat, x, y)
            while (rest := delay - (time.perf_counter() - t0)) > 0:
                if self.cancelled >= token:
                    return None
                time.sleep(min(rest, 0.002))
            return token, grad.numpy(), loss


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
