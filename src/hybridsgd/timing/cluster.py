"""A cluster of workers: who takes how long for which minibatch.

Every worker has its own random streams (spawned from the run seed), and the k-th minibatch
a worker starts always takes the k-th value of its stream, whatever the policy does. That
makes a schedule reproducible bit for bit and lets the simulator draw times in bulk (its
fast paths) or one at a time (its event loop) and get the same numbers.

The delay of one minibatch, from reading the parameters to the gradient's arrival, is::

    compute * speed[w] * slowdown(w, start) + comm_pull + comm_push

unless the workers share ``cores`` processors (``timing.cores``): the compute part is then
the work of a job, done at the rate min(1, cores / n) while n jobs compute at once
(processor sharing). A ``server`` model (``timing.server``) is the server's own work on
each gradient, one at a time in arrival order, on the same processors; a gradient arrives
when it is done. Both run in the simulator's event loop of
:mod:`hybridsgd.backends.sim.shared`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hybridsgd.errors import ConfigError
from hybridsgd.timing.models import Constant, Link, TimingModel

_BLOCK = 512  # values drawn per refill; fixed so that bulk and one-by-one draws agree


class _Stream:
    """Values of one model for one worker, drawn in fixed blocks, consumed in order."""

    __slots__ = ("model", "rng", "block", "items", "pos", "drawn")

    def __init__(self, model: TimingModel, rng: np.random.Generator) -> None:
        self.model, self.rng = model, rng
        self.block = np.empty(0)
        self.items: list[float] | None = None
        self.pos = _BLOCK  # empty: the first use draws a block
        self.drawn = 0  # values drawn so far (a series in order continues from there)

    def _refill(self) -> None:
        self.block = self.model.draw(self.rng, _BLOCK, self.drawn).astype(np.float64)
        self.drawn += _BLOCK
        self.items = None  # the list form, made only when values are taken one by one
        self.pos = 0

    def next(self) -> float:
        if self.pos == _BLOCK:
            self._refill()
        items = self.items
        if items is None:
            items = self.items = self.block.tolist()
        x = items[self.pos]
        self.pos += 1
        return x

    def take(self, n: int) -> np.ndarray:
        out = np.empty(n)
        done = 0
        while done < n:
            if self.pos == _BLOCK:
                self._refill()
            m = min(n - done, _BLOCK - self.pos)
            out[done : done + m] = self.block[self.pos : self.pos + m]
            self.pos += m
            done += m
        return out


@dataclass(frozen=True)
class Slowdown:
    """Worker ``worker`` is ``factor`` times slower for minibatches started in [start, end)."""

    worker: int
    start: float
    end: float
    factor: float


@dataclass(frozen=True)
class Transient:
    """Random slow episodes: each worker enters one at Poisson ``rate`` per unit of time."""

    rate: float
    duration: float
    factor: float


class Cluster:
    """Delays for ``workers`` workers under a compute and a communication model."""

    def __init__(
        self,
        compute: TimingModel,
        workers: int,
        seed: int = 0,
        *,
        comm: TimingModel | None = None,
        speeds: Sequence[float] | None = None,
        slowdowns: Sequence[Slowdown] = (),
        transient: Transient | None = None,
        nbytes: float = 0,
        steps: int | Sequence[int] = 1,
        step_time: float | None = None,
        cores: float | None = None,
        server: TimingModel | None = None,
    ) -> None:
        comm = comm or Constant(0.0)
        #: processors the workers' computations share (None: each has its own)
        self.cores = cores
        if cores is not None and not (cores > 0 and math.isfinite(cores)):
            raise ValueError(f"cores must be a positive number (got {cores})")
        #: minibatches a job computes (local steps, ``worker.steps``): its compute time is
        #: the sum of that many draws, its messages one pull and one push as ever
        self.steps: list[int] = [steps] * workers if isinstance(steps, int) else list(steps)
        if len(self.steps) != workers:
            raise ValueError(f"need one number of steps per worker ({workers})")
        #: jobs sized by time (``worker.steps = "time:T"``): a job draws minibatch times
        #: until their sum reaches T (:meth:`job`); None: by count
        self.step_time = step_time
        if step_time is not None and not step_time > 0:
            raise ValueError(f"a job's time budget must be > 0 (got {step_time})")
        if isinstance(comm, Link):
            comm = comm.bind(nbytes)
        self.compute, self.comm, self.workers = compute, comm, workers
        self.speeds = np.ones(workers) if speeds is None else np.asarray(speeds, dtype=float)
        if self.speeds.shape != (workers,):
            raise ValueError(f"need one speed per worker ({workers})")
        self._speed_list = self.speeds.tolist()
        seeds = np.random.SeedSequence(seed).spawn(4)  # the first three as ever
        self._compute = [
            _Stream(compute.for_worker(w), np.random.default_rng(s))
            for w, s in enumerate(seeds[0].spawn(workers))
        ]
        self._comm_const = 2.0 * comm.mean() if comm.is_constant else None
        # per worker; empty when communication takes a constant time (_comm_const)
        self._comm: list[_Stream] = (
            []
            if comm.is_constant
            else [_Stream(comm, np.random.default_rng(s)) for s in seeds[1].spawn(workers)]
        )
        self._episodes: list[list[tuple[float, float, float]]] = [[] for _ in range(workers)]
        for s in slowdowns:
            self._episodes[s.worker].append((s.start, s.end, s.factor))
        self.transient = transient
        self._transient_rng: list[np.random.Generator] = (
            [np.random.default_rng(s) for s in seeds[2].spawn(workers)] if transient else []
        )
        self._transient_until = [0.0] * workers  # episodes are drawn up to this time
        self.time_dependent = bool(slowdowns) or transient is not None
        #: the server's work per gradient (None: none; it is instantaneous)
        self.server = (
            None if server is None or (server.is_constant and server.mean() == 0) else server
        )
        self._server = (
            _Stream(self.server, np.random.default_rng(seeds[3]))
            if self.server is not None
            else None
        )

    @property
    def shares(self) -> bool:
        """Whether the event loop of shared processors runs this cluster: its workers share
        fewer processors than there are of them, or the server works on each gradient."""
        return self.server is not None or (self.cores is not None and self.cores < self.workers)

    def server_work(self) -> float:
        """The server's work on the next gradient it takes (in arrival order)."""
        assert self._server is not None, "a cluster without a server model"
        return self._server.next()

    # -- what the simulator asks -------------------------------------------------------------
    def delay(self, worker: int, start: float) -> float:
        """Delay of the worker's next job (a minibatch, or ``steps`` of them back to back,
        each slowed by the episodes covering its own start), started at ``start``."""
        x = self._work(worker, start)
        if self._comm_const is not None:
            return x + self._comm_const
        c = self._comm[worker]
        return x + c.next() + c.next()

    def parts(self, worker: int, start: float) -> tuple[float, float, float]:
        """The worker's next job in three parts, drawn from the streams :meth:`delay` reads
        in the same order: the pull, the compute (its work: the time it takes with a
        processor to itself) and the push; their sum is :meth:`delay`'s value."""
        x = self._work(worker, start)
        if self._comm_const is not None:
            half = self._comm_const / 2.0
            return half, x, half
        c = self._comm[worker]
        pull = c.next()
        return pull, x, c.next()

    def _work(self, worker: int, start: float) -> float:
        """The compute of the worker's next job: its ``steps`` minibatches' times."""
        steps = self.steps[worker]
        if steps == 1:
            x = self._compute[worker].next() * self._speed_list[worker]
            return x * self.slowdown(worker, start) if self.time_dependent else x
        x = 0.0
        for _ in range(steps):
            d = self._compute[worker].next() * self._speed_list[worker]
            if self.time_dependent:
                d *= self.slowdown(worker, start + x)
            x += d
        return x

    def job(self, worker: int, start: float) -> tuple[float, int]:
        """The worker's next job sized by time (``step_time``): minibatches back to back,
        each slowed by the episodes covering its own start, until their time reaches T (at
        least one); its delay (compute and two messages) and its number of minibatches."""
        T = self.step_time
        if T is None:
            return self.delay(worker, start), self.steps[worker]
        stream, speed = self._compute[worker], self._speed_list[worker]
        x, n = 0.0, 0
        while n == 0 or x < T:
            d = stream.next() * speed
            if self.time_dependent:
                d *= self.slowdown(worker, start + x)
            x += d
            n += 1
        if self._comm_const is not None:
            return x + self._comm_const, n
        c = self._comm[worker]
        return x + c.next() + c.next(), n

    def delays(self, worker: int, n: int) -> np.ndarray:
        """Delays of the worker's next ``n`` jobs (only when not time dependent)."""
        if self.time_dependent or self.step_time is not None:
            raise RuntimeError(
                "bulk delays need a cluster without time-dependent slowdowns or jobs sized by time"
            )
        steps = self.steps[worker]
        x = self._compute[worker].take(n * steps) * self._speed_list[worker]
        if steps > 1:  # each job's steps in the order delay() draws them
            x = np.cumsum(x.reshape(n, steps), axis=1)[:, -1]
        if self._comm_const is not None:
            return x + self._comm_const
        c = self._comm[worker].take(2 * n)
        return x + c[0::2] + c[1::2]

    def slowdown(self, worker: int, t: float) -> float:
        """Product of the factors of the slow episodes covering time ``t``."""
        if self.transient is not None and t >= self._transient_until[worker]:
            self._extend_transient(worker, t)
        f = 1.0
        for start, end, factor in self._episodes[worker]:
            if start <= t < end:
                f *= factor
        return f

    def mean_delay(self, worker: int = 0) -> float:
        """Mean delay of a worker's job ignoring slowdowns (steps x compute x speed + two
        messages)."""
        if self.step_time is not None:
            raise ValueError("a job sized by time has no closed-form mean delay here")
        job = self.steps[worker] * self.compute.mean() * self._speed_list[worker]
        return job + 2.0 * self.comm.mean()

    def _extend_transient(self, worker: int, t: float) -> None:
        tr, rng = self.transient, self._transient_rng[worker]
        assert tr is not None  # only called with transient slowdowns
        now = self._transient_until[worker]
        horizon = max(t, now) + 100.0 / max(tr.rate, 1e-12)
        while now <= horizon:
            now += rng.exponential(1.0 / tr.rate)
            self._episodes[worker].append((now, now + tr.duration, tr.factor))
            now += tr.duration
        self._transient_until[worker] = now


# -- parsing config fields -------------------------------------------------------------------
def parse_speeds(
    spec: Sequence[float] | str, workers: int, field: str = "timing.speed"
) -> list[float] | None:
    """``[1, 1, 3]`` (one per worker) or ``"1x14,3x2"`` (value x count); empty means all 1.
    ``field`` names the config key in errors."""
    if isinstance(spec, str):
        if not spec.strip():
            return None
        speeds: list[float] = []
        for part in spec.split(","):
            value, x, count = part.strip().partition("x")
            try:
                speeds += [float(value)] * (int(count) if x else 1)
            except ValueError:
                raise ConfigError(
                    field, f"write value x count, e.g. '1x14,3x2' (got {part!r})"
                ) from None
    else:
        speeds = [float(s) for s in spec]
        if not speeds:
            return None
    if len(speeds) != workers:
        raise ConfigError(
            field, f"gives {len(speeds)} speeds for {workers} workers (policy.workers)"
        )
    if any(not (s > 0 and math.isfinite(s)) for s in speeds):
        raise ConfigError(field, "speeds must be positive time multipliers (2 = twice as slow)")
    return speeds


def parse_transient(spec: str) -> Transient | None:
    """``rate=0.01,duration=5,factor=4``; empty means none."""
    field = "timing.transient"
    if not spec.strip():
        return None
    values: dict[str, float] = {}
    for part in spec.split(","):
        key, eq, value = part.strip().partition("=")
        try:
            values[key.strip()] = float(value)
        except ValueError:
            raise ConfigError(
                field, f"write rate=...,duration=...,factor=... (got {part!r})"
            ) from None
        if not eq:
            raise ConfigError(field, f"write rate=...,duration=...,factor=... (got {part!r})")
    if set(values) != {"rate", "duration", "factor"}:
        raise ConfigError(
            field, "needs exactly rate, duration and factor, e.g. rate=0.01,duration=5,factor=4"
        )
    if values["rate"] <= 0 or values["duration"] <= 0 or values["factor"] <= 0:
        raise ConfigError(field, "rate, duration and factor must be > 0")
    return Transient(values["rate"], values["duration"], values["factor"])


def parse_slowdowns(items: Sequence[dict[str, Any]], workers: int) -> list[Slowdown]:
    """``[{worker = 3, start = 10, end = 20, factor = 5}, ...]``."""
    out = []
    for i, item in enumerate(items):
        field = f"timing.slowdowns[{i}]"
        if not isinstance(item, dict) or set(item) != {"worker", "start", "end", "factor"}:
            raise ConfigError(field, "write {worker = W, start = T0, end = T1, factor = F}")
        w, start, end, factor = item["worker"], item["start"], item["end"], item["factor"]
        if not isinstance(w, int) or not 0 <= w < workers:
            raise ConfigError(field, f"worker must be an index in [0, {workers})")
        try:
            start, end, factor = float(start), float(end), float(factor)
        except (TypeError, ValueError):
            raise ConfigError(field, "start, end and factor must be numbers") from None
        if not (0 <= start < end) or factor <= 0:
            raise ConfigError(field, "need 0 <= start < end and factor > 0")
        out.append(Slowdown(w, start, end, factor))
    return out
