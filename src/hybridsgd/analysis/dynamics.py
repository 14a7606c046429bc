"""Exact dynamics, estimated by Monte Carlo, where no closed form is known: ``ssp`` and
``psp`` with 0 < s < inf (a max-plus recursion) and ``k_async`` (windows of K distinct
workers over independent renewal streams).

**Barriers.** Worker w's c-th gradient arrives at P_w(c) (P_w(0) = 0). A worker that has
pushed c times may start again once every worker it checks has pushed at least c - s times
(the gate of :class:`~hybridsgd.policies.gates.ClockGate`), so with X_w(c+1) its next delay

    start S_w(c) = max(P_w(c), max_{j in G_w(c)} P_j(c - s)),   P_w(c+1) = S_w(c) + X_w(c+1)

where G_w(c) is every worker for ``ssp`` and one uniform sample of beta workers per barrier
for ``psp`` (:class:`~hybridsgd.policies.gates.SampledClockGate`). This is a stochastic
max-plus linear system (Baccelli, Cohen, Olsder & Quadrat, *Synchronization and
Linearity*, 1992): P_w(c) / c converges to a constant, the Lyapunov exponent, for which no
closed form is known beyond s = 0 (lockstep, E[max of W]) and s = inf (renewal, E[X]).
Every gradient is one update, so the time per update is that constant divided by W; a
gradient's staleness is the number of pushes by others between its start and its arrival.

**k_async.** Nobody ever waits, so each worker is an independent renewal stream whatever
the policy does. An update fires at the first arrival that makes K distinct workers since
the previous update; every arrival in the window is applied with it (repeats included). A
gradient's staleness is the number of updates between its read (its worker's previous
arrival, after any update that arrival fired) and its own arrival.

Both carry W numbers per step and no event queue, and are driven by the same delays as the
simulator: fed the simulator's own per-worker draws they reproduce its schedule (tested),
so what remains is Monte Carlo error, reported as a standard error over replicas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import comb

from hybridsgd.timing.models import TimingModel

WARM = 0.1  # fraction of each replica's iterations dropped as the start-up transient


def gated_pushes(
    delays: np.ndarray,
    bound: int,
    sample: int | None = None,
    rng: np.random.Generator | None = None,
    peers: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Starts S and arrivals P, both ``(C, R, W)``, for delays ``(C, R, W)``: C gradients
    per worker, R independent replicas, W workers. ``sample`` = beta for ``psp`` (None or W:
    ``ssp``), its samples drawn from ``rng``, or given as ``peers`` ``(C, R, W, beta)``: the
    workers each worker checks at each barrier."""
    C, R, W = delays.shape
    S = np.empty_like(delays)
    P = np.empty_like(delays)
    draw = _subset_max(W, None if peers is not None else sample, rng)
    last = np.zeros((R, W))
    for c in range(C):
        gate: float | np.ndarray
        if c - bound <= 0:
            gate = 0.0
        elif peers is not None:
            seen = np.take_along_axis(P[c - bound - 1], peers[c].reshape(R, -1), axis=1)
            gate = seen.reshape(peers[c].shape).max(axis=2)
        else:
            gate = draw(P[c - bound - 1])
        S[c] = np.maximum(last, gate)
        last = P[c] = S[c] + delays[c]
    return S, P


def _subset_max(W: int, sample: int | None, rng):
    """``rows -> per-worker max over the workers each one checks`` for rows ``(R, W)``."""
    if sample is None or sample >= W:
        return lambda rows: rows.max(axis=1, keepdims=True)
    if rng is None:
        raise ValueError("psp needs an rng for its samples")
    # the largest of a uniform beta-subset of W sorted values is the m-th (0-based) with
    # P(m' <= m) = C(m + 1, beta) / C(W, beta)
    cdf = comb(np.arange(1, W + 1), sample) / comb(W, sample)
    cdf[-1] = 1.0

    def draw(rows: np.ndarray) -> np.ndarray:
        m = np.searchsorted(cdf, rng.random(rows.shape))
        return np.take_along_axis(np.sort(rows, axis=1), m, axis=1)

    return draw


def releasers(S: np.ndarray, P: np.ndarray, bound: int) -> np.ndarray:
    """For ``ssp`` (every worker checked): the worker whose push each start follows, ``(C,
    R, W)``. The simulator takes arrivals that tie in time in worker order, so a start
    follows the later, in that order, of its own arrival and the push that released it:
    the last worker, by index, of those whose push at the gate's time opened it."""
    C, R, W = P.shape
    out = np.empty((C, R, W), dtype=np.int64)
    me = np.arange(W)
    for c in range(C):
        own = P[c - 1] if c else np.zeros((R, W))
        if c - bound <= 0:
            out[c] = me
            continue
        rows = P[c - bound - 1]
        top = rows.max(axis=1, keepdims=True)
        j = np.where(rows == top, me, -1).max(axis=1, keepdims=True)  # the last one at top
        later = (top > own) | ((top == own) & (j > me))
        out[c] = np.where(later & (S[c] == top), j, me)
    return out


def staleness_counts(
    S: np.ndarray, P: np.ndarray, first: int = 0, release: np.ndarray | None = None
) -> np.ndarray:
    """Staleness of each gradient of one replica (S, P ``(C, W)``) from iteration ``first``
    on whose window holds only pushes the arrays contain: pushes after its start (the
    releasing push at the start being already applied) and before its arrival. With
    ``release`` (:func:`releasers`, ``(C, W)``) pushes that tie in time are ordered as the
    simulator orders them, by worker: a start follows its releaser's push, an arrival
    comes after the pushes of lower workers at its time; without it, a tie counts as
    simultaneous (exact when times never tie)."""
    horizon = P[-1].min()
    s, p = S[first:].ravel(), P[first:].ravel()
    ok = p < horizon
    if release is None:
        pushes = np.sort(P.ravel())
        return np.searchsorted(pushes, p[ok], "left") - np.searchsorted(pushes, s[ok], "right")
    W = P.shape[1]
    times = np.unique(np.concatenate([[0.0], P.ravel()]))

    def key(t: np.ndarray, w: np.ndarray) -> np.ndarray:  # (time, worker), one integer
        return np.searchsorted(times, t) * W + w

    pushes = np.sort(key(P.ravel(), np.tile(np.arange(W), len(P))))
    workers = np.tile(np.arange(W), len(P) - first)
    start_key = key(s[ok], release[first:].ravel()[ok])
    return np.searchsorted(pushes, key(p[ok], workers[ok]), "left") - np.searchsorted(
        pushes, start_key, "right"
    )


@dataclass
class Estimate:
    mean_update_time: float
    standard_error: float  # of mean_update_time, over replicas
    staleness_pmf: np.ndarray
    gradients: int  # simulated
    gradients_per_update: float = 1.0

    @classmethod
    def of(cls, times, counts: list[np.ndarray], gradients: int, per_update: float = 1.0):
        """From each replica's mean update time and the staleness counts observed."""
        t = np.asarray(times, dtype=float)
        pmf = np.bincount(np.concatenate(counts)).astype(float)
        se = float(t.std(ddof=1) / math.sqrt(len(t)))
        return cls(float(t.mean()), se, pmf / pmf.sum(), gradients, per_update)


def delays(
    compute: TimingModel, comm: TimingModel, shape: tuple[int, ...], speeds, rng
) -> np.ndarray:
    """Draws of compute * speed + pull + push, shape ``(..., W)`` (the last axis: workers;
    ``speeds`` None: all 1), as :class:`~hybridsgd.timing.Cluster` makes them."""
    X = compute.sample(rng, math.prod(shape)).reshape(shape)
    if speeds is not None:
        X *= np.asarray(speeds, dtype=float)
    if comm.is_constant:
        return X + 2.0 * comm.mean()
    return X + comm.sample(rng, 2 * X.size).reshape(2, *shape).sum(axis=0)


def gated(
    compute: TimingModel,
    comm: TimingModel,
    workers: int,
    bound: float,
    sample: int | None = None,
    speeds=None,
    gradients: int = 4_000_000,
    seed: int = 0,
) -> Estimate:
    """Monte Carlo of :func:`gated_pushes` with about ``gradients`` draws in all."""
    W = workers
    bound_i = int(bound)
    iters = max(2000, 40 * (bound_i + 1))
    fewest = 4 if iters * W <= 2_000_000 else 2  # a large s needs long replicas: fewer
    reps = max(fewest, math.ceil(gradients / (iters * W)))
    rng = np.random.default_rng(seed)
    S, P = gated_pushes(delays(compute, comm, (iters, reps, W), speeds, rng), bound_i, sample, rng)
    first = int(WARM * iters)
    per_rep = (P[-1].mean(axis=1) - P[first - 1].mean(axis=1)) / ((iters - first) * W)
    # ties in time (constant times) ordered as the simulator orders them: ssp only (psp's
    # sampled peers are not kept)
    release = releasers(S, P, bound_i) if sample is None or sample >= W else None
    counts = []
    for r in range(reps):
        rel = None if release is None else release[:, r]
        counts.append(staleness_counts(S[:, r], P[:, r], first, rel))
        if sum(len(c) for c in counts) >= 400_000:
            break
    return Estimate.of(per_rep, counts, iters * reps * W)


def k_async_updates(arrivals: np.ndarray, k: int | Sequence[int]) -> np.ndarray:
    """Update times of ``k_async`` for per-worker arrival times ``arrivals`` ``(W, m)``
    (each row increasing), up to the first worker's last arrival. ``k`` may change from
    update to update (a sequence: the u-th update needs ``k[u]`` workers; it ends there)."""
    ks = None if isinstance(k, int | np.integer) else list(k)  # type: ignore[arg-type]
    kk = int(k) if ks is None else 0  # type: ignore[arg-type]
    W, m = arrivals.shape
    horizon = arrivals[:, -1].min()
    offset = float(arrivals.max()) + 1.0
    base = offset * np.arange(W)
    flat = (arrivals + base[:, None]).ravel()  # one sorted array, worker by worker
    exact = arrivals.ravel()  # the same times without the offsets' rounding
    last = np.arange(1, W + 1) * m - 1
    out: list[float] = []
    tau = 0.0
    while True:
        # each worker's first arrival strictly after the window opened at tau
        idx = np.minimum(np.searchsorted(flat, base + tau, side="right"), last)
        first = exact[idx]
        if ks is not None:
            if len(out) == len(ks):
                return np.asarray(out)
            kk = ks[len(out)]
        tau = float(np.partition(first, kk - 1)[kk - 1])
        if tau > horizon:
            return np.asarray(out)
        out.append(tau)
        if tau == horizon:  # a worker's last arrival: what follows it is not drawn (and a
            return np.asarray(out)  # window opened there would find it again, for ever)


def in_event_order(arrivals: np.ndarray) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Per-worker arrival times ``(W, m)`` as keys that order them as the simulator's event
    loop does: by time, then by worker (arrivals that tie in time, as under constant times,
    are taken one at a time, in worker order); and the map from keys back to times. Key 0
    is time 0, before every arrival."""
    W = arrivals.shape[0]
    times = np.unique(np.concatenate([[0.0], arrivals.ravel()]))
    keys = (np.searchsorted(times, arrivals) * W + np.arange(W)[:, None]).astype(float)
    return keys, lambda k: times[(np.asarray(k) // W).astype(np.int64)]


def k_async_staleness(arrivals: np.ndarray, updates: np.ndarray, since: float = 0.0):
    """Staleness of every gradient applied by ``updates`` that arrived after ``since``, and
    how many gradients those updates applied in all."""
    a = arrivals.ravel()
    read = np.concatenate([np.zeros((arrivals.shape[0], 1)), arrivals[:, :-1]], axis=1).ravel()
    applied = a <= updates[-1]
    keep = applied & (a > since)
    stale = np.searchsorted(updates, a[keep], "left") - np.searchsorted(
        updates, read[keep], "right"
    )
    return stale, int(applied.sum())


def k_async(
    compute: TimingModel,
    comm: TimingModel,
    workers: int,
    k: int,
    speeds=None,
    updates: int = 40_000,
    seed: int = 0,
) -> Estimate:
    """Monte Carlo of :func:`k_async_updates`: 8 replicas of at most ``updates / 8``."""
    W = workers
    rng = np.random.default_rng(seed)
    reps = 8
    m = max(50, math.ceil(updates / reps * k / W))  # arrivals per worker: <= updates / reps
    times, counts, per_update = [], [], []
    for _ in range(reps):
        arr, to_time = in_event_order(np.cumsum(delays(compute, comm, (m, W), speeds, rng), 0).T)
        U = k_async_updates(arr, k)
        if len(U) < 20:
            raise ValueError("too few updates: raise gradients")
        first = int(WARM * len(U))
        at = to_time(U)
        times.append((at[-1] - at[first]) / (len(U) - 1 - first))
        stale, applied = k_async_staleness(arr, U, U[first])
        counts.append(stale)
        per_update.append(applied / len(U))
    return Estimate.of(times, counts, m * reps * W, float(np.mean(per_update)))


def k_async_transient(
    compute: TimingModel,
    comm: TimingModel,
    workers: int,
    ks: Sequence[int],
    speeds=None,
    reps: int = 200,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """From the start (every worker reading the initial parameters at time 0), updates
    whose u-th needs ``ks[u]`` distinct workers: the mean time of each update ``(n,)`` and,
    per update, the staleness distribution of what it applies ``(n, max + 1)``, each of its
    n_u gradients weighing 1 / n_u (the mean aggregator). ``hybrid``'s asynchronous phase."""
    W, n = workers, len(ks)
    rng = np.random.default_rng(seed)
    m = math.ceil(3 * sum(ks) / W) + 20
    times = np.zeros(n)
    rows: list[np.ndarray] = []
    width = 1
    for _ in range(reps):
        while True:
            arr, to_time = in_event_order(
                np.cumsum(delays(compute, comm, (m, W), speeds, rng), axis=0).T
            )
            U = k_async_updates(arr, ks)
            if len(U) == n:
                break
            m *= 2  # a slow worker ran out of draws first
        times += to_time(U)
        a = arr.ravel()
        read = np.concatenate([np.zeros((W, 1)), arr[:, :-1]], axis=1).ravel()
        applied = a <= U[-1]
        a, read = a[applied], read[applied]
        u = np.searchsorted(U, a, "left")  # the update that applies it
        stale = u - np.searchsorted(U, read, "right")
        size = np.bincount(u, minlength=n)
        row = np.zeros((n, int(stale.max()) + 1))
        np.add.at(row, (u, stale), 1.0 / size[u])
        rows.append(row)
        width = max(width, row.shape[1])
    pmfs = np.zeros((n, width))
    for row in rows:
        pmfs[:, : row.shape[1]] += row
    return times / reps, pmfs / reps


def ringmaster_run(draws: np.ndarray, R: float, stops: bool):
    """One run of Ringmaster ASGD's exact dynamics on per-worker delays ``draws`` ``(m, W)``
    (each worker takes its draws in order): update times, the staleness of each applied
    gradient, and the gradients started and wasted (dropped, or stopped with ``stops``).

    Without stops a worker is never interrupted, so its arrivals are the running sums of
    its draws whatever is decided; a gradient is applied iff fewer than R updates landed
    since its worker read. With stops, at each update the computations that have fallen R
    versions behind are stopped and restarted on the new version, so arrivals depend on
    the decisions: an event heap, independent of the simulator's event loop."""
    import heapq

    m, W = draws.shape
    nxt = [0] * W  # each worker's next draw
    read = [0] * W
    version, started, wasted = 0, 0, 0
    updates: list[float] = []
    stale: list[int] = []
    token = [0] * W
    at: dict[int, set[int]] = {0: set(range(W))}  # read version -> workers computing on it
    heap = []
    for w in range(W):
        heap.append((float(draws[0, w]), w, 0))
        nxt[w] = 1
    started = W
    heapq.heapify(heap)
    stop_at = int(R) if stops and not math.isinf(R) else None  # stop work this far behind

    def restart(w: int, t: float) -> bool:
        nonlocal started
        if nxt[w] >= m:
            return False
        token[w] += 1
        read[w] = version
        at.setdefault(version, set()).add(w)
        heapq.heappush(heap, (t + float(draws[nxt[w], w]), w, token[w]))
        nxt[w] += 1
        started += 1
        return True

    while heap:
        t, w, tok = heapq.heappop(heap)
        if tok != token[w]:
            continue  # stopped
        at[read[w]].discard(w)
        s = version - read[w]
        if s < R:
            version += 1
            updates.append(t)
            stale.append(s)
            if stop_at is not None:
                stopped = sorted(at.pop(version - stop_at, ()))
                wasted += len(stopped)
                if not all([restart(c, t) for c in stopped]):
                    break  # a worker out of draws ends the run
        else:
            wasted += 1
        if not restart(w, t):
            break  # a worker out of draws ends the run (its next arrival is unknown)
    return np.asarray(updates), np.asarray(stale, dtype=np.int64), started, wasted


def ringmaster(
    compute: TimingModel,
    comm: TimingModel,
    workers: int,
    R: float,
    stops: bool = False,
    speeds=None,
    updates: int = 40_000,
    seed: int = 0,
) -> tuple[Estimate, float]:
    """Monte Carlo of :func:`ringmaster_run`: 8 replicas, the start-up transient dropped;
    also the wasted share of started work."""
    W = workers
    rng = np.random.default_rng(seed)
    reps = 8
    m = max(50, math.ceil(updates / reps / W * 2))
    times, counts, wasted = [], [], []
    for _ in range(reps):
        U, S, started, lost = ringmaster_run(delays(compute, comm, (m, W), speeds, rng), R, stops)
        if len(U) < 20:
            raise ValueError("too few updates: raise updates")
        first = int(WARM * len(U))
        times.append((U[-1] - U[first]) / (len(U) - 1 - first))
        counts.append(S[first:])
        wasted.append(lost / started)
    return Estimate.of(times, counts, m * reps * W), float(np.mean(wasted))


def rennala_drop_run(draws: np.ndarray, batch: int):
    """One run of Rennala SGD with ``late = drop`` on per-worker delays ``draws`` ``(m, W)``:
    update times and the gradients started and dropped. No worker is ever interrupted, so
    its arrivals are the running sums of its draws; a gradient counts iff it was read at
    the current version, and the B-th fresh one fires the update."""
    m, W = draws.shape
    arrivals = np.cumsum(draws, axis=0)
    order = np.lexsort((np.tile(np.arange(W), m), arrivals.ravel()))  # by time, then worker
    times, workers = arrivals.ravel()[order], np.tile(np.arange(W), m)[order]
    horizon = arrivals[-1].min()  # past a worker's last draw its arrivals are unknown
    read = [0] * W
    version = count = dropped = seen = 0
    updates: list[float] = []
    for t, w in zip(times.tolist(), workers.tolist(), strict=True):
        if t > horizon:
            break
        seen += 1
        if read[w] == version:
            count += 1
            if count == batch:
                version += 1
                count = 0
                updates.append(t)
        else:
            dropped += 1
        read[w] = version
    return np.asarray(updates), seen, dropped


def rennala_drop(
    compute: TimingModel,
    comm: TimingModel,
    workers: int,
    batch: int,
    speeds=None,
    updates: int = 20_000,
    seed: int = 0,
) -> tuple[Estimate, float]:
    """Monte Carlo of :func:`rennala_drop_run`: 8 replicas, the start-up transient dropped;
    also the wasted (dropped) share of started work."""
    rng = np.random.default_rng(seed)
    reps = 8
    m = max(50, math.ceil(updates / reps * batch / workers * 1.5))
    times, wasted = [], []
    for _ in range(reps):
        U, seen, lost = rennala_drop_run(delays(compute, comm, (m, workers), speeds, rng), batch)
        if len(U) < 20:
            raise ValueError("too few updates: raise updates")
        first = int(WARM * len(U))
        times.append((U[-1] - U[first]) / (len(U) - 1 - first))
        wasted.append(lost / seen)
    zero = [np.zeros(len(U), dtype=np.int64)]  # every applied gradient is fresh
    return Estimate.of(times, zero, m * reps * workers, float(batch)), float(np.mean(wasted))
