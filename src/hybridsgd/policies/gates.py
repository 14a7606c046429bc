"""Start gates: may this worker begin its next minibatch now? (SSP and PSP barriers.)

A worker's clock is the number of gradients it has pushed. A gate is consulted when an
idle worker asks to start, and told of every push; it answers which waiting workers may
ask again. It holds no tensors and no clock of its own.
"""

from __future__ import annotations

import math

import numpy as np


class ClockGate:
    """Stale synchronous parallel (Ho et al. 2013): a worker may start its next minibatch
    only while it is at most ``bound`` ticks ahead of the slowest worker.

    ``bound = 0`` is bulk-synchronous (lockstep iterations); ``bound = inf`` never waits.
    """

    def __init__(self, workers: int, bound: float) -> None:
        if bound < 0:
            raise ValueError("bound must be >= 0")
        self.bound = bound
        self.clock: list[float] = [0] * workers  # inf once a worker is retired
        self._at: dict[float, int] = {0: workers}  # how many workers sit at each clock value
        self.slowest: float = 0
        self.waiting: set[int] = set()

    def allows(self, worker: int) -> bool:
        return self.clock[worker] - self.slowest <= self.bound

    def block(self, worker: int) -> None:
        self.waiting.add(worker)

    def tick(self, worker: int) -> list[int]:
        """Advance the worker's clock; return the waiting workers that may now start."""
        return self._release() if self._advance(worker) else []

    def _advance(self, worker: int) -> bool:
        """Advance the worker's clock; True when the slowest clock moved."""
        c = self.clock[worker]
        self.clock[worker] = c + 1
        self._at[c] -= 1
        self._at[c + 1] = self._at.get(c + 1, 0) + 1
        if c != self.slowest or self._at[c] > 0:
            return False
        del self._at[c]
        self.slowest = min(self._at)
        return True

    def retire(self, worker: int) -> list[int]:
        """The worker is gone for good: its clock no longer holds anyone back. Returns the
        waiting workers that may now start."""
        c = self.clock[worker]
        self.clock[worker] = math.inf
        self.waiting.discard(worker)
        self._at[c] -= 1
        if self._at[c] > 0:
            return []
        del self._at[c]
        if c != self.slowest or not self._at:
            return []
        self.slowest = min(self._at)
        return self._release()

    def _release(self) -> list[int]:
        free = sorted(w for w in self.waiting if self.allows(w))
        self.waiting.difference_update(free)
        return free

    def describe(self) -> str:
        return f"s={self.bound:g}" if math.isfinite(self.bound) else "s=inf"


class SampledClockGate(ClockGate):
    """Probabilistic synchronous parallel (Wang et al. 2017): at its barrier a worker samples
    ``sample`` workers without replacement and waits while any of them lags more than
    ``bound`` ticks behind it. ``sample = workers`` is SSP; ``bound = 0`` is pBSP."""

    def __init__(self, workers: int, bound: float, sample: int, seed: int = 0) -> None:
        super().__init__(workers, bound)
        if not 1 <= sample <= workers:
            raise ValueError("sample must be in [1, workers]")
        self.sample = sample
        self.rng = np.random.default_rng(seed)
        self.peers: dict[int, np.ndarray] = {}  # the sample each waiting worker drew
        self.cleared: set[int] = set()  # released by their sample; not to be sampled again

    def allows(self, worker: int) -> bool:
        if worker in self.cleared:  # its sample let it through: one sample per barrier
            self.cleared.discard(worker)
            return True
        peers = self.peers.get(worker)
        if peers is None:
            peers = self.peers[worker] = self.rng.choice(
                len(self.clock), self.sample, replace=False
            )
        c = self.clock[worker]
        ok = all(c - self.clock[j] <= self.bound for j in peers.tolist())
        if ok:
            del self.peers[worker]  # a fresh sample at the next barrier
        return ok

    def tick(self, worker: int) -> list[int]:
        # any worker's tick may satisfy a sample, not only the slowest one's
        self._advance(worker)
        return self._release() if self.waiting else []

    def _release(self) -> list[int]:
        free = super()._release()
        self.cleared.update(free)  # the backend asks again when it starts them
        return free

    def retire(self, worker: int) -> list[int]:
        self.cleared.discard(worker)
        self.peers.pop(worker, None)
        return super().retire(worker)

    def describe(self) -> str:
        return f"{super().describe()}, beta={self.sample}"
