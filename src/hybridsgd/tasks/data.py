"""How training data is split across workers and fed to them.

Worker w's data is a stream: epochs of its shard, each in a fresh random order, cut into
minibatches; its k-th minibatch is ``batch(k)``, whatever the policy or backend. A cancelled
minibatch still uses its slot, so data order depends only on how many minibatches a worker
started, which is what makes a simulated and a real run of one config comparable.
"""

from __future__ import annotations

import numpy as np

from hybridsgd.errors import ConfigError


def split(
    labels: np.ndarray, workers: int, kind: str, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shards of sample indices: ``iid`` (shuffled, equal sizes) or ``dirichlet`` (label skew).

    For ``dirichlet`` each class is divided among workers in proportions drawn from
    Dirichlet(alpha); small alpha gives each worker a few dominant classes. A worker left
    empty receives one sample from the largest shard.

    With more workers than samples there are not enough samples for disjoint shards:
    ``iid`` then gives every worker the whole training set (each streams it in its own
    order, sampling the whole set as a data stream would); ``dirichlet`` is refused.
    """
    n = len(labels)
    if workers > n:
        if kind != "iid":
            raise ConfigError(
                "policy.workers",
                f"{workers} workers need at least as many training samples for a {kind} split "
                f"(the task has {n}); use task.split = iid or at most {n} workers",
            )
        return [np.arange(n, dtype=np.int64) for _ in range(workers)]
    if kind == "iid":
        return [np.sort(s) for s in np.array_split(rng.permutation(n), workers)]
    shards: list[list[int]] = [[] for _ in range(workers)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = (np.cumsum(rng.dirichlet(np.full(workers, alpha))) * len(idx)).astype(int)[:-1]
        for w, part in enumerate(np.split(idx, cuts)):
            shards[w].extend(part.tolist())
    for w in range(workers):
        if not shards[w]:
            donor = max(range(workers), key=lambda i: len(shards[i]))
            shards[w].append(shards[donor].pop())
    return [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]


class WorkerSampler:
    """Minibatch k of one worker's stream (see module doc)."""

    def __init__(
        self, shard: np.ndarray, batch_size: int, rng: np.random.Generator, torch_seed: int = 0
    ) -> None:
        if not len(shard):
            raise ValueError("a worker's shard is empty: it has no samples to draw")
        self.shard, self.batch_size, self.rng = shard, batch_size, rng
        #: a real worker's torch random state starts here (a model's dropout, ...)
        self.torch_seed = torch_seed
        self._stream = np.empty(0, dtype=np.int64)

    def batch(self, k: int) -> np.ndarray:
        end = (k + 1) * self.batch_size
        while len(self._stream) < end:
            self._stream = np.concatenate([self._stream, self.rng.permutation(self.shard)])
        return self._stream[k * self.batch_size : end]


def samplers(
    labels: np.ndarray, workers: int, batch_size: int, kind: str, alpha: float, seed: int
) -> list[WorkerSampler]:
    """One sampler per worker, seeded from the run seed."""
    root = np.random.SeedSequence([seed, 7])
    shard_seed, *worker_seeds = root.spawn(workers + 1)
    shards = split(labels, workers, kind, alpha, np.random.default_rng(shard_seed))
    return [
        WorkerSampler(s, batch_size, np.random.default_rng(ws), int(ws.generate_state(1)[0]))
        for s, ws in zip(shards, worker_seeds, strict=True)
    ]
