"""The Monte Carlo models are the exact dynamics: fed the simulator's own draws they
reproduce its schedule, gradient for gradient (so all that is left is Monte Carlo error)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import hybridsgd as h
from hybridsgd.analysis.dynamics import (
    gated_pushes,
    in_event_order,
    k_async_staleness,
    k_async_transient,
    k_async_updates,
    releasers,
    staleness_counts,
)
from hybridsgd.analysis.stability import steps_to_reduce
from hybridsgd.policies import psp, ssp
from hybridsgd.policies.gates import SampledClockGate
from hybridsgd.policies.k_variants import k_async
from hybridsgd.record import APPLIED
from hybridsgd.timing.models import Constant

MODELS = ["shifted-exp:delta=1,mu=2", "pareto:alpha=2.5,scale=1", "lognormal:mu=0,sigma=0.5"]


def draws(model: str, W: int, n: int, seed: int = 5) -> np.ndarray:
    """Each worker's first n delays, as the simulator's cluster draws them: (n, W)."""
    cluster = h.Cluster(h.parse_model(model), W, seed=seed)
    return np.stack([cluster.delays(w, n) for w in range(W)], axis=1)


def by_worker(schedule, W: int, n: int, column) -> np.ndarray:
    """A schedule column as (minibatch, worker), for each worker's first n gradients."""
    out = np.full((n, W), np.nan)
    keep = schedule.minibatch < n
    out[schedule.minibatch[keep], schedule.worker[keep]] = column[keep]
    return out


@pytest.mark.parametrize("speeds", [[1, 1, 1, 1], [1, 1, 2, 3]], ids=["equal", "mixed"])
@pytest.mark.parametrize("bound", [0, 1, 2])
def test_ties_in_time_are_counted_in_the_simulators_order(speeds, bound):
    """Constant times make arrivals tie; the simulator takes them in worker order (a start
    follows the push that released it). Ordered so, the recursion's staleness is the
    simulator's, gradient for gradient (counted as simultaneous, ssp with s = 1 and four
    equal workers would show 0 where the simulator shows 3)."""
    W, n = 4, 40
    D = np.tile(np.asarray(speeds, dtype=float), (n + bound + 2, 1))  # constant 1 x speed
    S, P = gated_pushes(D[:, None, :], bound)
    cluster = h.Cluster(h.parse_model("constant:value=1"), W, seed=0, speeds=speeds)
    s = h.simulate_schedule(ssp(W, bound), cluster, W * n, fast=False)
    done = ~np.isnan(by_worker(s, W, n, s.end))
    assert np.array_equal(by_worker(s, W, n, s.end)[done], P[:n, 0][done])
    theirs = by_worker(s, W, n, s.staleness.astype(float))
    rel = releasers(S, P, bound)[:, 0]
    counted = staleness_counts(S[:n, 0], P[:n, 0], 0, rel[:n])
    ok = P[:n, 0] < P[n - 1, 0].min()
    mine = np.full((n, W), np.nan)
    mine[ok] = counted
    both = ~np.isnan(mine) & ~np.isnan(theirs)
    assert both.sum() > W * n // 2
    assert np.array_equal(mine[both], theirs[both])
    if speeds == [1, 1, 1, 1] and bound == 1:
        assert (mine[both][W:] == 3).all()


@pytest.mark.parametrize("W", [8, 64])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("bound", [1, 3])
def test_the_ssp_recursion_is_the_simulators_schedule(model, W, bound):
    n = 60
    D = draws(model, W, n + bound + 2)
    S, P = gated_pushes(D[:, None, :], bound)
    s = h.simulate_schedule(ssp(W, bound), h.Cluster(h.parse_model(model), W, seed=5), W * n)
    end, start = by_worker(s, W, n, s.end), by_worker(s, W, n, s.start)
    done = ~np.isnan(end)  # the simulator stopped after W n updates
    assert done.sum() > W * n * 0.9
    assert np.array_equal(end[done], P[:n, 0][done]), "arrival times differ"
    assert np.array_equal(start[done], S[:n, 0][done]), "start times differ"
    pushes = np.sort(P[:, 0].ravel())
    mine = (
        np.searchsorted(pushes, P[:n, 0], "left") - np.searchsorted(pushes, S[:n, 0], "right")
    ).astype(float)
    mine[P[:n, 0] >= P[-1, 0].min()] = np.nan  # windows reaching past the drawn delays
    theirs = by_worker(s, W, n, s.staleness.astype(float))
    both = ~np.isnan(mine) & ~np.isnan(theirs)
    assert both.sum() > W * n // 2
    assert np.array_equal(mine[both], theirs[both])
    # the module's own counter agrees
    assert np.array_equal(
        np.sort(staleness_counts(S[:, 0], P[:, 0])),
        np.sort(
            np.searchsorted(pushes, P[:, 0], "left")[P[:, 0] < P[-1, 0].min()]
            - np.searchsorted(pushes, S[:, 0], "right")[P[:, 0] < P[-1, 0].min()]
        ),
    )


@pytest.mark.parametrize("model", MODELS)
def test_the_psp_recursion_is_the_simulators_schedule_given_its_samples(model):
    W, bound, beta, n = 12, 1, 3, 60
    policy = psp(W, beta, bound, seed=4)
    gate = policy.gate
    samples: dict[tuple[int, int], np.ndarray] = {}  # (worker, clock) -> the peers it drew
    at: list[tuple[int, int]] = []
    draw = gate.rng.choice

    def choice(*args, **kwargs):
        peers = draw(*args, **kwargs)
        assert at[-1] not in samples, "a barrier drew a second sample"
        samples[at[-1]] = peers
        return peers

    def allows(worker: int) -> bool:
        at.append((worker, gate.clock[worker]))
        return SampledClockGate.allows(gate, worker)

    class Recording:  # a Generator's methods cannot be replaced; wrap it
        pass

    gate.rng = Recording()
    gate.rng.choice = choice
    gate.allows = allows
    s = h.simulate_schedule(policy, h.Cluster(h.parse_model(model), W, seed=5), W * n)
    C = int(s.minibatch.max()) + 1
    peers = np.zeros((C, 1, W, beta), dtype=np.int64)
    for (w, c), who in samples.items():
        if c < C:
            peers[c, 0, w] = who
    S, P = gated_pushes(draws(model, W, C)[:, None, :], bound, beta, peers=peers)
    end = by_worker(s, W, C, s.end)
    done = ~np.isnan(end)
    assert done.sum() >= W * n
    assert np.array_equal(end[done], P[:, 0][done])


@pytest.mark.parametrize("W", [8, 64])
@pytest.mark.parametrize("model", MODELS)
def test_the_k_async_windows_are_the_simulators_updates(model, W):
    for K in (2, W - 1):
        arrivals = np.cumsum(draws(model, W, 300), axis=0).T
        U = k_async_updates(arrivals, K)
        s = h.simulate_schedule(k_async(W, K), h.Cluster(h.parse_model(model), W, seed=5), len(U))
        assert np.array_equal(s.update_time, U)
        stale, applied = k_async_staleness(arrivals, U)
        sim = np.sort(s.staleness[s.fate == APPLIED])
        assert applied == len(sim) and np.array_equal(np.sort(stale), sim)


def test_the_k_async_windows_end_on_equal_arrival_times():
    """Constant compute times: every worker arrives at 2, 4, 6, ... together. The windows
    used to reopen at the last arrival for ever (recommend --compute constant hung)."""
    arrivals = np.cumsum(np.full((50, 4), 2.0), axis=0).T
    for K in (1, 2, 4):
        U = k_async_updates(arrivals, K)  # returns (times alone merge ties: see below)
        assert U[-1] == 100.0 and np.all(np.diff(U) > 0)


@pytest.mark.parametrize("K", [1, 2, 3])
@pytest.mark.parametrize("speeds", [[1, 1, 1, 1], [1, 1, 2, 2]], ids=["equal", "mixed"])
def test_ties_in_time_make_the_simulators_k_async_windows_in_event_order(K, speeds):
    """Under constant times arrivals tie; the event loop takes them one at a time in worker
    order, so W = 4 workers arriving together make W / K updates, not one. Keyed by (time,
    worker) (:func:`in_event_order`) the windows are the simulator's updates and their
    staleness its staleness, gradient for gradient; predict then agrees with it."""
    W, n = 4, 60
    arrivals = np.cumsum(np.tile(np.asarray(speeds, dtype=float), (n, 1)), axis=0).T
    keys, to_time = in_event_order(arrivals)
    U = k_async_updates(keys, K)
    cluster = h.Cluster(h.parse_model("constant:value=1"), W, seed=0, speeds=speeds)
    s = h.simulate_schedule(k_async(W, K), cluster, len(U), fast=False)
    assert np.array_equal(s.update_time, to_time(U))
    stale, applied = k_async_staleness(keys, U)
    sim = np.sort(s.staleness[s.fate == APPLIED])
    assert applied == len(sim) and np.array_equal(np.sort(stale), sim)


def test_from_rest_the_first_updates_read_the_initial_parameters():
    """From time 0, before any worker's second arrival, update u applies a gradient read at
    version 0: staleness exactly u."""
    W = 16
    model = h.parse_model("shifted-exp:delta=1,mu=2")  # second arrivals come after 1 + 1
    times, pmfs = k_async_transient(model, Constant(0.0), W, [1] * 40, reps=20)
    assert np.all(np.diff(times) > 0)
    for u in range(W // 2):  # every first arrival lands in (1, 2): before any second one
        assert pmfs[u, u] == pytest.approx(1.0)


def test_reduction_steps_without_staleness_are_gradient_descent():
    for eta_h in (0.01, 0.3, 1.5):
        n = steps_to_reduce(eta_h, lambda t: np.array([1.0]), math.sqrt(1000), 10**5)
        assert n == math.ceil(math.log(math.sqrt(1000)) / -math.log(abs(1 - eta_h)))
    assert steps_to_reduce(2.5, lambda t: np.array([1.0]), 10.0, 1000) is None


def test_the_recursion_meets_the_closed_forms_at_both_ends():
    """s = 0 is lockstep (E[max of W] per round of W updates); a bound that never binds is
    async (renewal: E[X] / W per update, staleness W - 1)."""
    from hybridsgd.analysis import predict
    from hybridsgd.analysis.dynamics import gated

    model = h.parse_model("lognormal:mu=0,sigma=0.5")
    W = 16
    lockstep = gated(model, Constant(0.0), W, 0, gradients=1_000_000)
    exact = predict("ssp", W, model, staleness_bound=0).mean_update_time
    assert lockstep.mean_update_time == pytest.approx(exact, rel=0.01)
    free = predict("ssp", W, model, staleness_bound=200)
    renewal = predict("async", W, model)
    assert free.mean_update_time == pytest.approx(renewal.mean_update_time, rel=0.01)
    assert free.mean_staleness == pytest.approx(W - 1, rel=0.01)
