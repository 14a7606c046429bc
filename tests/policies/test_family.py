"""The whole policy family (docs/design.md section 3): conformance, hand-checked rows,
equivalences, closed forms and the SSP bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

import hybridsgd as h
from hybridsgd.policies import (
    asynchronous,
    hybrid,
    k_async,
    k_batch_async,
    k_batch_sync,
    k_sync,
    parse_threshold,
    psp,
    ssp,
    sync,
)
from hybridsgd.record import APPLIED, CANCELLED, DROPPED
from tests.helpers import assert_consistent, const_cluster, registered_examples, small_config


@pytest.mark.parametrize(("spec", "name", "own"), registered_examples(), ids=lambda v: str(v))
def test_every_policy_trains_with_a_consistent_trace(spec, name, own):
    cfg = small_config(
        policy={"name": name, "workers": 6, **own},
        timing={"compute": "lognormal:mu=0,sigma=0.5"},
        run={"updates": 30},
    )
    result = h.run(cfg)
    assert_consistent(result.trace)
    assert result.summary["updates"] == 30
    ev = result.trace.evals
    assert ev.loss.iloc[-1] < ev.loss.iloc[0]
    assert result.trace.updates.regime.between(0, 1).all()


def events(policy, speeds, updates):
    return h.simulate_schedule(policy, const_cluster(speeds), max_updates=updates, fast=False)


# -- each row's own rule, workers taking exactly 1, 2 (or 2.5) and 10 ------------------------
def test_k_sync_takes_the_first_k_distinct_workers_and_cancels_the_rest():
    s = events(k_sync(3, 2), [1, 2, 10], 3)
    assert s.update_time.tolist() == [2.0, 4.0, 6.0]
    assert s.fate.tolist() == [APPLIED, APPLIED, CANCELLED] * 3
    assert s.worker.tolist() == [0, 1, 2] * 3


def test_k_batch_sync_lets_a_fast_worker_give_several():
    s = events(k_batch_sync(3, 3), [1, 2.5, 10], 2)
    # round 1: w0 at 1 and 2, w1 at 2.5 -> update; w0's third minibatch and w2 cancelled
    assert s.update_time.tolist() == [2.5, 5.0]
    first = s.update == 0
    assert s.worker[first].tolist() == [0, 0, 1]
    assert (s.read_version[first] == 0).all()
    round1 = s.end <= 2.5
    assert sorted(s.worker[round1 & (s.fate == CANCELLED)].tolist()) == [0, 2]


def test_k_async_counts_distinct_workers_and_accepts_stale_gradients():
    s = events(k_async(3, 2), [1, 2, 10], 2)
    assert s.update_time.tolist() == [2.0, 4.0]
    # w0's second gradient joins the update but only w1 completes the 2 distinct workers
    assert s.worker[s.update == 0].tolist() == [0, 0, 1]
    u2 = s.update == 1
    assert s.worker[u2].tolist() == [0, 0, 1]
    assert s.staleness[u2].tolist() == [1, 0, 0]  # w0 read v0 at t=2, landed after v1


def test_k_batch_async_fires_every_k_arrivals():
    s = events(k_batch_async(3, 2), [1, 2, 10], 5)
    n, _, _ = s.per_update()
    assert (n == 2).all()
    assert s.end[s.fate == APPLIED].tolist()[:4] == [1.0, 2.0, 2.0, 3.0]


def test_ssp_holds_the_fast_worker_within_the_bound():
    s = events(ssp(3, 1), [1, 2, 10], 6)
    w0 = s.end[s.worker == 0].tolist()
    # w0 finishes at 1 and 2, then is 2 ticks ahead of w2 (clock 0) and waits until t=10
    assert w0[:3] == [1.0, 2.0, 11.0]
    assert (s.fate == APPLIED).all()


def test_hybrid_step_switches_from_async_to_sync():
    s = events(hybrid(3, parse_threshold("step:at=4")), [1, 2, 10], 6)
    n, _, _ = s.per_update()
    assert n[:4].tolist() == [1, 1, 1, 1] and n[4:].tolist() == [3, 3]
    assert s.update_regime.tolist() == [0, 0, 0, 0, 1, 1]
    # entering sync, work read before the switch arrives stale and is dropped
    assert (s.fate[s.fate == DROPPED].size > 0) and (s.staleness[s.fate == DROPPED] > 0).all()


# -- equivalences (docs/design.md section 3) ------------------------------------------------------
def cluster(W=5, seed=3):
    return h.Cluster(h.parse_model("lognormal:mu=0,sigma=1"), W, seed=seed, speeds=[1, 1, 2, 1, 3])


@pytest.mark.parametrize(
    "make_a, make_b",
    [
        (lambda: k_async(5, 1), lambda: asynchronous(5)),
        (lambda: k_batch_async(5, 1), lambda: asynchronous(5)),
        (lambda: k_sync(5, 5), lambda: sync(5)),
        (lambda: psp(5, 5, 2, seed=9), lambda: ssp(5, 2)),
        (lambda: ssp(5, math.inf), lambda: asynchronous(5)),
        (lambda: hybrid(5, parse_threshold("constant:value=0")), lambda: asynchronous(5)),
        (lambda: hybrid(5, parse_threshold("constant:value=1")), lambda: sync(5)),
    ],
    ids=[
        "k_async K=1",
        "k_batch_async K=1",
        "k_sync K=W",
        "psp beta=W",
        "ssp s=inf",
        "hybrid 0",
        "hybrid 1",
    ],
)
def test_equivalences(make_a, make_b):
    a = h.simulate_schedule(make_a(), cluster(), max_updates=200, fast=False)
    b = h.simulate_schedule(make_b(), cluster(), max_updates=200)
    assert a.equals(b)


def clock_spread_at_starts(s) -> list[int]:
    """For each gradient: its iteration index minus the slowest worker's completed count
    at its start (pushes at the same instant count: the gate saw them first)."""
    ends = [np.sort(s.end[s.worker == w]) for w in range(s.workers)]
    out = []
    for k, t in zip(s.minibatch.tolist(), s.start.tolist(), strict=True):
        slowest = min(int(np.searchsorted(e, t, side="right")) for e in ends)
        out.append(k - slowest)
    return out


@pytest.mark.parametrize("bound", [0, 1, 3])
def test_ssp_never_runs_more_than_s_ahead(bound):
    s = h.simulate_schedule(ssp(5, bound), cluster(), max_updates=400)
    spread = clock_spread_at_starts(s)
    assert max(spread) == bound  # reached, never exceeded
    if bound == 0:  # bulk-synchronous: iteration k starts only after every worker finished k-1
        assert max(spread) == 0


def test_psp_with_a_small_sample_runs_further_ahead_than_ssp():
    s_ssp = h.simulate_schedule(ssp(5, 1), cluster(), max_updates=400)
    s_psp = h.simulate_schedule(psp(5, 1, 1, seed=0), cluster(), max_updates=400)
    assert max(clock_spread_at_starts(s_ssp)) == 1
    assert max(clock_spread_at_starts(s_psp)) > 1
    assert s_psp.end_time < s_ssp.end_time  # waiting on fewer peers is faster


# -- closed forms (docs/design.md section 4), Monte Carlo within 2% --------------------------------
def H(n: int) -> float:
    return sum(1.0 / i for i in range(1, n + 1))


def test_k_sync_closed_form():
    W, K, delta, mu = 20, 12, 0.5, 2.0
    c = h.Cluster(h.parse_model(f"shifted-exp:delta={delta},mu={mu}"), W, seed=1)
    s = h.simulate_schedule(k_sync(W, K), c, 20_000)
    assert s.end_time / s.n_updates == pytest.approx(delta + (H(W) - H(W - K)) / mu, rel=0.02)


def test_k_batch_sync_closed_form():
    W, K, mu = 8, 12, 1.5
    s = h.simulate_schedule(
        k_batch_sync(W, min(K, W)), h.Cluster(h.parse_model(f"exp:mu={mu}"), W, seed=2), 20_000
    )
    assert s.end_time / s.n_updates == pytest.approx(min(K, W) / (W * mu), rel=0.02)


@pytest.mark.parametrize(
    "model", ["exp:mu=1", "uniform:low=0.5,high=1.5", "pareto:alpha=3,scale=1"]
)
def test_k_batch_async_closed_form(model):
    W, K = 10, 4
    m = h.parse_model(model)
    s = h.simulate_schedule(k_batch_async(W, K), h.Cluster(m, W, seed=3), 50_000)
    assert s.end_time / s.n_updates == pytest.approx(K * m.mean() / W, rel=0.02)


# -- staleness rules -------------------------------------------------------------------------
def test_max_staleness_drops_and_inverse_reweights():
    cfg = small_config(
        policy={"name": "async", "workers": 6, "staleness": "inverse", "max_staleness": 3},
        timing={"compute": "lognormal:mu=0,sigma=1"},
    )
    g = h.run(cfg).trace.gradients
    assert (g[g.fate == "dropped"].staleness > 3).all() and (g.fate == "dropped").any()
    assert (g[g.fate == "applied"].staleness <= 3).all()
    rule = h.core.build_staleness("inverse")
    assert [rule.scale(s) for s in (0, 1, 4)] == [1.0, 1.0, 0.25]
    assert h.core.build_staleness("inverse-sqrt").scale(4) == 0.5


def test_inverse_staleness_is_a_per_gradient_learning_rate():
    """async + inverse at lr equals plain async when every gradient's lr is divided by tau:
    with one gradient per update, the update is lr / tau * g."""
    base = small_config(
        policy={"name": "async", "workers": 4}, optimizer={"lr": 0.1}, run={"updates": 20}
    )
    a = h.run(base.replace("policy.staleness=inverse"))
    s = a.schedule
    task = h.build_task(base.task, seed=0)
    from hybridsgd.tasks import samplers

    feeds = samplers(task.y_train.numpy(), 4, 16, "iid", 0.5, seed=0)
    theta = task.initial_params()
    snapshots = {0: theta.clone()}
    for u in range(s.n_updates):
        gid = int(np.flatnonzero(s.update == u)[0])
        r = int(s.read_version[gid])
        g, _ = task.grad(
            snapshots[r], *task.batch(feeds[int(s.worker[gid])].batch(int(s.minibatch[gid])))
        )
        theta = theta - 0.1 / max(1, u - r) * g
        snapshots[u + 1] = theta.clone()
    np.testing.assert_allclose(a.params.numpy(), theta.numpy(), atol=1e-5)


# -- adaptive --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model", ["shifted-exp:delta=1,mu=2", "pareto:alpha=1.5,scale=1", "lognormal:mu=0,sigma=1"]
)
def test_adaptive_is_within_3_percent_of_the_best_fixed_k(model):
    W = 16
    p = h.policies.adaptive(W)
    s = h.simulate_schedule(p, h.Cluster(h.parse_model(model), W, seed=0), 3000)
    rate = (s.fate == APPLIED).sum() / s.end_time
    best = max(
        k * s2.n_updates / s2.end_time
        for k in range(1, W + 1)
        for s2 in [
            h.simulate_schedule(k_sync(W, k), h.Cluster(h.parse_model(model), W, seed=0), 3000)
        ]
    )
    assert rate >= 0.97 * best
    assert 1 < p.chosen < W  # these tails make waiting for everyone a bad deal
    assert np.unique(s.update_regime).size > 1  # the regime column shows K changing


def test_adaptive_settles_on_sync_when_nobody_straggles():
    p = h.policies.adaptive(8)
    s = h.simulate_schedule(p, const_cluster([1.0] * 8), 200)
    assert p.chosen == 8 and (s.fate == APPLIED).all()


# -- hybrid, partition reading ---------------------------------------------------------------
def partition_run(level: str, speeds, updates):
    from hybridsgd.backends.sim import replay
    from hybridsgd.core import Mean, NoStalenessRule
    from hybridsgd.policies import PartitionHybrid
    from hybridsgd.runner import build_server
    from hybridsgd.tasks import samplers

    cfg = small_config(task={"name": "logistic", "dim": 5}, optimizer={"lr": 0.2, "momentum": 0.5})
    task = h.build_task(cfg.task, seed=0)  # Linear(5, 2): weight [2, 5] then bias [2]
    policy = PartitionHybrid(len(speeds), parse_threshold(level), tensors=len(task.shapes))
    s = h.simulate_schedule(policy, const_cluster(speeds), max_updates=updates)
    server = build_server(cfg, task.initial_params(), task.shapes, partial_updates=True)
    feeds = samplers(task.y_train.numpy(), len(speeds), 16, "iid", 0.5, seed=0)
    after = []
    replay(
        s,
        task,
        feeds,
        server,
        Mean(),
        NoStalenessRule(),
        eval_every=1000,
        on_update=lambda v: after.append(server.params.clone()),
    )
    return s, np.stack([task.initial_params().numpy(), *[p.numpy() for p in after]])


def test_partition_syncs_the_first_tensors_and_applies_the_rest_on_arrival():
    s, params = partition_run("constant:value=0.5", [1, 2, 10], 20)  # weight sync, bias async
    assert s.update_sync_tensors.tolist() == [1] * 20
    rounds = [
        np.flatnonzero(s.sync_update == u) for u in np.unique(s.sync_update[s.sync_update >= 0])
    ]
    assert len(rounds) >= 1
    for members in rounds:  # one fresh gradient from each of the 3 workers
        assert sorted(s.worker[members].tolist()) == [0, 1, 2]
    # the first round: w0 at t=1, w1 at t=2, w2 at t=10 (w0's extra gradients do not count)
    first = rounds[0]
    assert s.end[first].tolist() == [1.0, 2.0, 10.0]
    sync_versions = set(np.unique(s.sync_update[s.sync_update >= 0]).tolist())
    weight, bias = params[:, :10], params[:, 10:]
    for u in range(s.n_updates):  # update u turns params[u] into params[u + 1]
        assert not np.array_equal(bias[u], bias[u + 1])
        assert np.array_equal(weight[u], weight[u + 1]) == (u not in sync_versions)


def test_partition_at_level_0_is_async():
    s_p, p_p = partition_run("constant:value=0", [1, 1.5, 3], 30)
    s_a = h.simulate_schedule(asynchronous(3), const_cluster([1, 1.5, 3]), max_updates=30)
    assert s_p.equals(s_a) and not s_p.partitioned


def test_partition_reading_from_config():
    cfg = small_config(
        policy={
            "name": "hybrid",
            "workers": 6,
            "reading": "partition",
            "threshold": "linear:start=0,end=30",
        },
        run={"updates": 60},
    )
    result = h.run(cfg)
    assert_consistent(result.trace)
    g = result.trace.gradients
    assert (g.sync_update > 0).any()
    assert result.trace.evals.loss.iloc[-1] < result.trace.evals.loss.iloc[0]
