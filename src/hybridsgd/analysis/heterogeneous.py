"""The exact dynamics of the gradient-table methods (Malenia, Ringleader) and of MindFlayer,
for ``predict``:
event logic of their own, independent of the simulator's loop, run by Monte Carlo as
:func:`hybridsgd.analysis.dynamics.ringmaster` is. IA²SGD needs none: once its table is
full every arrival fires an update and nobody waits, so it is ``async``'s renewal model.

* **Malenia**: every worker restarts on each new version; a round lasts until the slowest
  worker's first minibatch arrives (the maximum of W fresh draws, like ``sync``), while
  faster workers deliver as many minibatches as fit. At the update every worker but the
  one that completed the round has a minibatch in flight, which is stopped: W - 1 wasted
  per round. Staleness is 0.
* **Ringleader**: nobody is ever interrupted, so each worker's arrivals are the running
  sums of its draws whatever is decided; a cycle gathers until every worker has arrived
  since it began (or was held over from the last one), then steps at the first arrival of
  each of the other W - 1 workers. Arrivals of workers that stepped already are held for
  the next cycle. Staleness is counted at arrival, as the simulator's trace does.
* **MindFlayer**: Rennala's rounds (every worker restarts on each new version; the round
  ends at the B-th minibatch from anyone) where each attempt that would run past its
  worker's budget ends when the budget is spent, wasted, and the worker tries again.
  Attempts are drawn one at a time, as the simulator's workers start them, so an attempt
  never begun is never drawn.
* **ATA**: rounds whose B minibatches the bandit allocates (the policy's own rule,
  :func:`hybridsgd.policies.allocation.allocate`, from the times seen so far); a round
  lasts the longest worker's sum of its share of draws. Nothing is stopped or stale.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from hybridsgd.analysis.dynamics import WARM, Estimate, delays
from hybridsgd.timing import TimingModel

REPLICAS = 8


def malenia_run(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Malenia's rounds on per-worker delays ``draws`` ``(m, W)``, each worker taking its
    draws in order: update times, gradients applied per round, started and wasted."""
    m, W = draws.shape
    sums = np.vstack([np.zeros((1, W)), np.cumsum(draws, axis=0)])  # sums[j, w]: first j
    nxt = [0] * W  # each worker's next draw
    t = 0.0
    times: list[float] = []
    applied: list[int] = []
    started = wasted = 0
    while max(nxt) < m:
        first = [float(draws[nxt[w], w]) for w in range(W)]
        last = int(np.argmax(first))  # the round ends at the slowest first arrival
        end = first[last]
        done = 1
        for w in range(W):
            if w == last:
                continue
            # minibatches completed by the end (>= 1), and the one then in flight, stopped
            k = int(np.searchsorted(sums[:, w], sums[nxt[w], w] + end, side="right")) - 1
            k -= nxt[w]
            if nxt[w] + k >= m:  # the stopped job's draw is beyond what was drawn
                return np.asarray(times), np.asarray(applied), started, wasted
            done += k
            started += k + 1
            wasted += 1
            nxt[w] += k + 1
        nxt[last] += 1
        started += 1
        t += end
        times.append(t)
        applied.append(done)
    return np.asarray(times), np.asarray(applied), started, wasted


def ringleader_run(draws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ringleader's cycles on per-worker delays ``draws`` ``(m, W)``: update times and the
    staleness (at arrival) of each applied gradient."""
    m, W = draws.shape
    arrive = np.cumsum(draws, axis=0)  # nobody is interrupted
    workers = np.tile(np.arange(W), m)
    order = np.lexsort((workers, arrive.ravel()))  # by time, ties to the lower worker
    version = 0
    read = [0] * W
    gathering = True
    arrived: set[int] = set()  # this cycle's gathering: workers with a gradient in the table
    held: set[int] = set()  # phase 2: workers whose arrivals wait for the next cycle
    to_step: set[int] = set()
    waiting: list[int] = []  # staleness of the gradients the next update will apply
    times: list[float] = []
    stale: list[int] = []
    for w, t in zip(workers[order].tolist(), arrive.ravel()[order].tolist(), strict=True):
        s = version - read[w]
        if gathering:
            waiting.append(s)
            arrived.add(w)
            if len(arrived) == W:  # the cycle's first step, with every worker's mean
                version += 1
                times.append(t)
                stale.extend(waiting)
                waiting, gathering, to_step = [], False, set(range(W)) - {w}
        elif w in to_step:  # its first arrival since the cycle's first step
            to_step.discard(w)
            version += 1
            times.append(t)
            stale.append(s)
        else:  # stepped already this cycle: held for the next one
            waiting.append(s)
            held.add(w)
        if not gathering and not to_step:  # W steps done: the next cycle gathers
            gathering, arrived, held = True, held, set()
        read[w] = version
    return np.asarray(times), np.asarray(stale, dtype=np.int64)


def mindflayer_run(draws: np.ndarray, batch: int, budgets) -> tuple[np.ndarray, int, int]:
    """MindFlayer's rounds on per-worker delays ``draws`` ``(m, W)`` (one per attempt, in
    order): update times, attempts started and wasted (past the budget, or stopped)."""
    m, W = draws.shape
    nxt = [0] * W
    t = 0.0
    times: list[float] = []
    started = wasted = 0
    while True:
        heap = []  # (end, worker, succeeds)
        for w in range(W):
            if nxt[w] >= m:
                return np.asarray(times), started, wasted
            d = float(draws[nxt[w], w])
            nxt[w] += 1
            started += 1
            heap.append((t + min(d, budgets[w]), w, d <= budgets[w]))
        heapq.heapify(heap)
        got = 0
        while True:
            end, w, ok = heapq.heappop(heap)
            got += ok
            wasted += not ok
            if got == batch:
                break
            if nxt[w] >= m:
                return np.asarray(times), started, wasted
            d = float(draws[nxt[w], w])
            nxt[w] += 1
            started += 1
            heapq.heappush(heap, (end + min(d, budgets[w]), w, d <= budgets[w]))
        wasted += W - 1  # every other worker's attempt in flight is stopped
        t = end
        times.append(t)


def mindflayer(
    compute: TimingModel, comm: TimingModel, workers: int, batch: int, budgets,
    speeds=None, updates: int = 20_000, seed: int = 0,
) -> tuple[Estimate, float]:  # fmt: skip
    """Monte Carlo of :func:`mindflayer_run`: 8 replicas, the start-up transient dropped;
    also the wasted share of started attempts."""
    rng = np.random.default_rng(seed)
    times, counts, wasted = [], [], []
    m = max(50, math.ceil(updates / REPLICAS * (batch + workers) / workers * 2))
    for _ in range(REPLICAS):
        draws = delays(compute, comm, (m, workers), speeds, rng)
        U, started, lost = mindflayer_run(draws, batch, budgets)
        if len(U) < 20:
            raise ValueError("too few updates: raise updates")
        first = int(WARM * len(U))
        times.append((U[-1] - U[first]) / (len(U) - 1 - first))
        counts.append(np.zeros(batch * (len(U) - first), dtype=np.int64))  # all fresh
        wasted.append(lost / started)
    return Estimate.of(times, counts, m * REPLICAS * workers, float(batch)), float(np.mean(wasted))


def ata_run(draws: np.ndarray, batch: int, alpha: float | str) -> np.ndarray:
    """ATA's rounds on per-worker delays ``draws`` ``(m, W)``: update times."""
    from hybridsgd.policies.allocation import allocate, score

    m, W = draws.shape
    nxt = [0] * W
    n, mean = [0] * W, [0.0] * W
    scores = [-math.inf] * W
    t, k = 0.0, 1
    times: list[float] = []
    while True:
        quota = allocate(scores, batch)
        if any(nxt[w] + quota[w] > m for w in range(W)):
            return np.asarray(times)
        end_of_round = t
        for w in range(W):
            clock = t  # its jobs run back to back from the round's start
            for d in draws[nxt[w] : nxt[w] + quota[w], w].tolist():
                arrival = clock + d
                took = arrival - clock  # what the server sees: the time between arrivals
                clock = arrival
                mean[w] = (n[w] * mean[w] + took) / (n[w] + 1)
                n[w] += 1
            nxt[w] += quota[w]
            end_of_round = max(end_of_round, clock)
        t = end_of_round
        times.append(t)
        scores = [score(mean[w], n[w], k, alpha) for w in range(W)]
        k += 1


def ata(
    compute: TimingModel, comm: TimingModel, workers: int, batch: int, alpha: float | str,
    speeds=None, updates: int = 20_000, seed: int = 0,
) -> Estimate:  # fmt: skip
    """Monte Carlo of :func:`ata_run`: 4 replicas of a whole run of ``updates`` rounds.
    The bandit's confidence bounds widen with ln(k), so it explores again and again and
    there is no steady state: the time per update is that of a run of this length, from
    its start."""
    rng = np.random.default_rng(seed)
    times, counts = [], []
    m = max(50, math.ceil(updates * batch / workers * 3))  # draws enough for any share
    for _ in range(4):
        U = ata_run(delays(compute, comm, (m, workers), speeds, rng), batch, alpha)[:updates]
        if len(U) < 20:
            raise ValueError("too few updates: raise updates")
        times.append(U[-1] / len(U))
        counts.append(np.zeros(batch * len(U), dtype=np.int64))  # all fresh
    return Estimate.of(times, counts, m * 4 * workers, float(batch))


def malenia(
    compute: TimingModel, comm: TimingModel, workers: int, speeds=None, updates: int = 20_000,
    seed: int = 0,
) -> tuple[Estimate, float]:  # fmt: skip
    """Monte Carlo of :func:`malenia_run`: 8 replicas, the start-up transient dropped; also
    the wasted share of started work."""
    rng = np.random.default_rng(seed)
    times, counts, wasted, per_update = [], [], [], []
    m = max(50, math.ceil(updates / REPLICAS * 4))
    for _ in range(REPLICAS):
        U, applied, started, lost = malenia_run(delays(compute, comm, (m, workers), speeds, rng))
        if len(U) < 20:
            raise ValueError("too few updates: raise updates")
        first = int(WARM * len(U))
        times.append((U[-1] - U[first]) / (len(U) - 1 - first))
        counts.append(np.zeros(int(applied[first:].sum()), dtype=np.int64))  # all fresh
        wasted.append(lost / started)
        per_update.append(applied[first:].mean())
    est = Estimate.of(times, counts, m * REPLICAS * workers, float(np.mean(per_update)))
    return est, float(np.mean(wasted))


def ringleader(
    compute: TimingModel, comm: TimingModel, workers: int, speeds=None, updates: int = 40_000,
    seed: int = 0,
) -> Estimate:  # fmt: skip
    """Monte Carlo of :func:`ringleader_run`: 8 replicas, the start-up transient dropped."""
    rng = np.random.default_rng(seed)
    times, counts, per_update = [], [], []
    m = max(50, math.ceil(updates / REPLICAS / workers * 2))
    for _ in range(REPLICAS):
        U, S = ringleader_run(delays(compute, comm, (m, workers), speeds, rng))
        if len(U) < 20:
            raise ValueError("too few updates: raise updates")
        first = int(WARM * len(U))
        times.append((U[-1] - U[first]) / (len(U) - 1 - first))
        counts.append(S[int(WARM * len(S)) :])
        per_update.append(len(S) / len(U))  # every arrival applied, some a cycle later
    return Estimate.of(times, counts, m * REPLICAS * workers, float(np.mean(per_update)))
