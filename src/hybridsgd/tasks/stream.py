"""Tasks whose training data is a stream: every minibatch is fresh, drawn on demand.

A stream task has no finite training set, so it cannot overfit, and a bigger batch helps
exactly as far as the gradient noise allows (its critical batch size; docs/tasks.md). Sample
``i`` is a pure function of ``i`` and the data seed: a counter-based generator (SplitMix64 of
``(key, counter)``, vectorised in numpy) turns indices into numbers, so any process draws the
same sample for the same index without sharing any state.

Indices say which stream a sample belongs to (:data:`TEST_BASE` and the others below), and
worker ``w`` of a run reads the block of indices :class:`StreamSampler` gives it: its k-th
minibatch is indices ``base(w) + k·b ... base(w) + k·b + b - 1``. A sample is never drawn twice
in a run, and every backend draws the same samples for the same (worker, minibatch), because
the backends only ever pass the sampler's indices to :meth:`StreamTask.batch`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from hybridsgd.tasks.base import LossFn, Task

#: a training block holds 2^40 samples: a worker's minibatch k starts at k x batch size in it
BLOCK_BITS = 40
#: training blocks are numbered below 2^21; the ranges above hold the other streams
BLOCKS = 1 << 21
#: samples that stand for "the training set" where one is needed: BatchNorm's calibration,
#: probing the model, a run's fingerprint
CALIBRATION_BASE = 1 << 61
#: the held-out test stream (the same for every run seed)
TEST_BASE = 1 << 62
#: the validation stream that tuning evaluates on, disjoint from test and training
VALIDATION_BASE = (1 << 62) + (1 << 61)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea & Flood 2014): a bijection of uint64 whose outputs
    pass BigCrush when fed a counter."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_key(*seeds: int) -> int:
    """A 64-bit key from integers (a data seed, a stream's purpose)."""
    return int(np.random.SeedSequence(list(seeds)).generate_state(1, np.uint64)[0])


def uniform(key: int, counters: np.ndarray) -> np.ndarray:
    """Uniform numbers in (0, 1), one per counter: a pure function of (key, counter)."""
    with np.errstate(over="ignore"):
        z = _mix(np.asarray(counters, dtype=np.uint64) * _GOLDEN + np.uint64(key))
    return ((z >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def normal(key: int, counters: np.ndarray) -> np.ndarray:
    """Standard normal numbers, one per counter (Box-Muller on two keyed uniforms)."""
    u1 = uniform(key, counters)
    u2 = uniform(key ^ 0x5DEECE66D, counters)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


class StreamSampler:
    """Worker ``worker``'s minibatches of a stream: fresh indices for every minibatch, never
    repeated within a run. ``seed`` (the run's) moves every worker to other blocks, so two
    seeds of one config see different samples."""

    def __init__(self, worker: int, batch_size: int, seed: int) -> None:
        block = (seed * 65537 + worker) % BLOCKS
        self.base = block << BLOCK_BITS
        self.batch_size = batch_size

    def batch(self, k: int) -> np.ndarray:
        start = self.base + k * self.batch_size
        return np.arange(start, start + self.batch_size, dtype=np.int64)


Draw = Callable[[np.ndarray], tuple[torch.Tensor, torch.Tensor]]


class StreamTask(Task):
    """A :class:`Task` whose training samples come from ``draw(indices)``.

    ``x_train`` holds the first :attr:`Task.CALIBRATION_SAMPLES` samples of a calibration
    stream (what needs "the training set" uses them: BatchNorm's running statistics, a
    fingerprint); :meth:`batch` draws any others. ``n_train`` is ``epoch`` samples, a
    nominal epoch for settings counted in epochs.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        draw: Draw,
        loss: LossFn,
        test_samples: int,
        epoch: int,
        metric: str | None = "accuracy",
        name: str = "stream",
        info: dict | None = None,
    ) -> None:
        self._draw = draw
        self._epoch = epoch
        calibration = draw(CALIBRATION_BASE + np.arange(self.CALIBRATION_SAMPLES))
        test = draw(TEST_BASE + np.arange(test_samples))
        super().__init__(model, calibration, loss, test, metric, name, info)

    #: fresh samples for every minibatch: no finite training set for workers to share
    stream = True

    @property
    def n_train(self) -> int:
        return self._epoch

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self._draw(np.asarray(indices, dtype=np.int64))
        if self.device.type != "cpu":
            x, y = x.to(self.device), y.to(self.device)
        return x, y

    def samplers(self, workers: int, batch_size: int, seed: int) -> list[StreamSampler]:
        """One fresh stream per worker (see :class:`StreamSampler`)."""
        return [StreamSampler(w, batch_size, seed) for w in range(workers)]

    def holdout(self, fraction: float, seed: int = 0) -> StreamTask:
        """Evaluate on the validation stream instead of the test stream (as many samples as
        the test stream): a stream has no training samples to set aside, so ``fraction`` only
        has to be valid, and training is unchanged."""
        if fraction == 0:
            return self
        if not 0 < fraction < 1:
            raise ValueError(f"a validation fraction must be in (0, 1) (got {fraction})")
        out = copy.copy(self)
        out.x_test, out.y_test = self._draw(VALIDATION_BASE + np.arange(len(self.x_test)))
        out.evaluated_on = "validation"
        return out
