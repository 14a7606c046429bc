"""The simulator: exact equivalences, determinism, and the numerics replay."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from hybridsgd import (
    Cluster,
    Coordinator,
    asynchronous,
    backup,
    build_task,
    parse_model,
    run,
    simulate_schedule,
    sync,
)
from hybridsgd.backends.sim import replay
from hybridsgd.core import Mean, NoStalenessRule
from hybridsgd.core.staleness import build_staleness
from hybridsgd.policies import QuorumPolicy, k_async, k_batch_async, k_sync, ssp
from hybridsgd.runner import build_server
from hybridsgd.tasks import samplers
from hybridsgd.timing import Slowdown
from tests.helpers import assert_consistent, small_config

#: every policy shape with a fast path: lockstep rounds (sync, backup, k_sync) and merged
#: renewal streams (async, k_batch_async with K > 1, k_async counting distinct workers, a
#: staleness rule that only scales)
POLICIES = {
    "sync": lambda W: sync(W),
    "backup": lambda W: backup(W, 2),
    "k_sync": lambda W: k_sync(W, 4),
    "async": lambda W: asynchronous(W),
    "async-inverse": lambda W: asynchronous(W, build_staleness("inverse")),
    "k_batch_async": lambda W: k_batch_async(W, 3),
    "k_async": lambda W: k_async(W, 3),
    "k_async-inverse": lambda W: k_async(W, 4, build_staleness("inverse")),
    "ssp-0": lambda W: ssp(W, 0),
    "ssp-2": lambda W: ssp(W, 2),
    "ssp-inverse": lambda W: ssp(W, 1, build_staleness("inverse")),
}
MODELS = ["exp:mu=1", "constant:value=1", "pareto:alpha=1.5,scale=1", "uniform:low=0.5,high=1"]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("budget", [(200, None), (None, 40.0), (60, 25.0)])
def test_fast_path_equals_event_loop(policy, model, budget):
    def cluster():
        return Cluster(parse_model(model), 7, seed=11, speeds=[1, 1, 1, 2, 1, 3, 1])

    fast = simulate_schedule(POLICIES[policy](7), cluster(), *budget)
    slow = simulate_schedule(POLICIES[policy](7), cluster(), *budget, fast=False)
    assert fast.path != "events" and slow.path == "events"  # two paths, or a test of nothing
    assert fast.equals(slow)


def test_sync_equals_sequential_sgd_on_the_union_batch():
    W, B, U, lr, momentum = 4, 16, 25, 0.2, 0.5
    cfg = small_config(
        policy={"name": "sync", "workers": W},
        task={"batch_size": B},
        optimizer={"lr": lr, "momentum": momentum},
        run={"updates": U, "seed": 5},
    )
    result = run(cfg)

    task = build_task(cfg.task, seed=5)
    feeds = samplers(task.y_train.numpy(), W, B, "iid", 0.5, seed=5)
    model = task.model
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    for t in range(U):
        x, y = task.batch(np.concatenate([feeds[w].batch(t) for w in range(W)]))
        opt.zero_grad()
        task.loss_fn(model(x), y).backward()
        opt.step()
    trained = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(result.params, trained, atol=1e-5, rtol=1e-4)


REPLAY_POLICIES = {
    "backup": lambda: backup(6, 2),
    "async": lambda: asynchronous(6),
    # two stale gradients per update, often read at different versions: several groups
    "quorum-2-stale": lambda: QuorumPolicy(
        6, 2, counts="minibatches", fresh_only=False, after_push="latest", in_flight="keep"
    ),
}


@pytest.mark.parametrize("name", REPLAY_POLICIES)
def test_replay_equals_a_coordinator_fed_one_gradient_at_a_time(name):
    """The batched replay and the per-gradient path real backends use give the same model."""
    make = REPLAY_POLICIES[name]
    cfg = small_config(optimizer={"momentum": 0.5}, run={"updates": 15, "seed": 2})
    task = build_task(cfg.task, seed=2)
    cluster = Cluster(parse_model("lognormal:mu=0,sigma=1"), 6, seed=2)
    s = simulate_schedule(make(), cluster, max_updates=15)
    server = build_server(cfg, task.initial_params(), layout=task.shapes)
    feeds = samplers(task.y_train.numpy(), 6, cfg.task.batch_size, "iid", 0.5, seed=2)
    replay(s, task, feeds, server, Mean(), NoStalenessRule(), eval_every=100)

    feeds = samplers(task.y_train.numpy(), 6, cfg.task.batch_size, "iid", 0.5, seed=2)
    coord = Coordinator(make(), build_server(cfg, task.initial_params()))
    # replay the simulated order of events through the coordinator, computing each gradient
    # on the parameters the worker read
    reads = {w: (coord.request(w), coord.server.params.clone()) for w in range(6)}
    for gid in np.argsort(s.end, kind="stable"):
        w, k = int(s.worker[gid]), int(s.minibatch[gid])
        if s.fate[gid] == 2:  # cancelled: the backend stops it; it re-requests below
            continue
        version, params = reads[w]
        grad, _ = task.grad(params, *task.batch(feeds[w].batch(k)))
        d = coord.push(w, version, grad).decision
        for c in [*d.cancel, *d.release, w]:
            v = coord.request(c)
            if v is not None:
                reads[c] = (v, coord.server.params.clone())
        if coord.server.version == s.n_updates:
            break
    assert coord.server.version == s.n_updates == 15
    if name == "quorum-2-stale":
        n, _, _ = s.per_update()
        assert (n == 2).all() and len(set(zip(s.read_version, s.update, strict=True))) > 15
    torch.testing.assert_close(coord.server.params, server.params, atol=1e-5, rtol=1e-4)


def test_same_seed_same_trace_bit_for_bit_other_seed_differs():
    cfg = small_config(
        policy={"name": "async", "workers": 5}, timing={"compute": "lognormal:mu=0,sigma=1"}
    )
    a, b = run(cfg), run(cfg)
    for name in ("gradients", "updates", "evals"):
        pd.testing.assert_frame_equal(getattr(a.trace, name), getattr(b.trace, name))
    assert torch.equal(a.params, b.params)
    c = run(cfg.replace("run.seed=1"))
    assert not c.trace.gradients.equals(a.trace.gradients)
    assert not torch.equal(a.params, c.params)


@pytest.mark.parametrize("name", ["sync", "backup", "async"])
def test_traces_are_consistent(name):
    cfg = small_config(policy={"name": name, "workers": 6, "backups": 2 if name == "backup" else 0})
    assert_consistent(run(cfg).trace)


def test_slowdown_stretches_only_its_window():
    def cluster(slowdowns=()):
        return Cluster(parse_model("constant:value=1"), 2, seed=0, slowdowns=slowdowns)

    s = simulate_schedule(asynchronous(2), cluster([Slowdown(1, 0.0, 5.0, 10.0)]), max_time=30.0)
    w1 = s.end[s.worker == 1]
    # worker 1's first minibatch starts at 0 inside the window (takes 10), later ones take 1
    assert w1.tolist()[:3] == [10.0, 11.0, 12.0]
    assert s.path == "events"


def test_transient_slowdowns_are_random_but_reproducible():
    def cluster(seed):
        return Cluster(
            parse_model("constant:value=1"),
            4,
            seed=seed,
            transient=__import__("hybridsgd").timing.Transient(0.1, 3.0, 5.0),
        )

    a = simulate_schedule(sync(4), cluster(0), max_updates=50)
    b = simulate_schedule(sync(4), cluster(0), max_updates=50)
    assert a.equals(b)
    gaps = np.diff(np.concatenate([[0.0], a.update_time]))
    assert gaps.max() == 5.0 and gaps.min() == 1.0  # some rounds hit a slow episode


def test_a_thousand_workers():
    s = simulate_schedule(backup(1000, 50), Cluster(parse_model("exp:mu=1"), 1000, seed=0), 50)
    assert s.n_updates == 50 and (np.bincount(s.update[s.fate == 0]) == 950).all()
    e = simulate_schedule(
        asynchronous(1000), Cluster(parse_model("exp:mu=1"), 1000, seed=0), 5000, fast=False
    )
    assert e.n_updates == 5000


def test_vmapped_gradients_equal_one_at_a_time():
    cfg = small_config()
    task = build_task(cfg.task, seed=0)
    flat = task.initial_params()
    x, y = task.batch(np.arange(48))
    rows = task.grads(flat, x.view(3, 16, -1), y.view(3, 16))
    for i in range(3):
        g, _ = task.grad(flat, x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)])
        torch.testing.assert_close(rows[i], g)
    mean, _ = task.grad(flat, x, y)
    torch.testing.assert_close(rows.mean(0), mean)


def test_k_async_fast_path_when_one_worker_arrives_many_times_per_update():
    """With one fast worker, most updates wait for K distinct workers while the fast one
    delivers again and again: each of its gradients still joins the update being built."""

    def cluster():
        return Cluster(parse_model("exp:mu=1"), 4, seed=3, speeds=[1, 30, 40, 50])

    fast = simulate_schedule(k_async(4, 3), cluster(), 300)
    slow = simulate_schedule(k_async(4, 3), cluster(), 300, fast=False)
    assert fast.path == "renewal" and slow.path == "events"
    assert fast.equals(slow)
    n, _, _ = fast.per_update()
    assert n.max() > 10  # the fast worker's many gradients in one update


def test_the_merge_of_arrival_streams_orders_as_a_stable_float_sort():
    """The fast paths sort arrival times through their int64 bit patterns; the order must be
    the stable float order, ties (equal times, kept in worker-major order) included, and a
    time with its sign bit set (a -0.0) must not be read as a huge one."""
    from hybridsgd.backends.sim.fast import _merge_order

    rng = np.random.default_rng(5)
    F = np.add.accumulate(rng.exponential(1.0, (8, 500)).round(1), axis=1)  # many ties
    F[:, 0] = 0.0  # every worker's first arrival at time 0
    flat = F.ravel()
    np.testing.assert_array_equal(_merge_order(flat), np.argsort(flat, kind="stable"))
    signed = np.array([0.5, -0.0, 0.0, 0.25])
    np.testing.assert_array_equal(_merge_order(signed), [1, 2, 3, 0])
