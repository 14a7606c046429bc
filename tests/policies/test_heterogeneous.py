"""Malenia, IA²SGD and Ringleader (issue 37): hand-checked schedules with each update written
out in float64, the gradient table's semantics, the W = 1 equivalences and bad settings.

The hand-checked schedule: 3 workers whose minibatches take exactly 1, 1.5 and 2.5 time
units (ties go to the lower worker), with unequal data: worker w's k-th minibatch has the
gradient a_w * (x - c_w) + noise[w][k]. Its first arrivals are w0 at 1, w1 at 1.5, w0 at 2,
w2 at 2.5, then (for policies that keep work in flight) w0 and w1 at 3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import hybridsgd as h
from hybridsgd.cli import main
from hybridsgd.coordinator import Coordinator
from hybridsgd.core.compensation import DelayCompensation
from hybridsgd.core.server import ParameterServer
from hybridsgd.core.tables import GradientTable
from hybridsgd.policies import DCASGD, IA2SGD, Malenia, Rescaled, Ringleader, build_policy
from hybridsgd.record import APPLIED, CANCELLED
from tests.helpers import const_cluster, small_config

LR = 0.3
RNG = np.random.default_rng(0)
A = RNG.uniform(0.5, 2.0, (3, 4))
C = RNG.normal(0, 1, (3, 4))
NOISE = RNG.normal(0, 0.3, (3, 8, 4))
X0 = RNG.normal(0, 1, 4)


def g(w: int, k: int, x: np.ndarray) -> np.ndarray:
    """Worker w's k-th minibatch gradient at x (float64)."""
    return A[w] * (x - C[w]) + NOISE[w][k]


def drive(make, arrivals: int):
    """The simulator's schedule of the policy ``make()`` builds, on the 3 workers, up to
    ``arrivals`` arrivals, carried out again by a Coordinator (the real backends' server)
    in float64: returns the schedule and the parameters after each update."""
    policy = make()
    s = h.simulate_schedule(policy, const_cluster([1, 1.5, 2.5]), max_updates=50, fast=False)
    server = ParameterServer(torch.tensor(X0), "sgd", lr=LR, dtype=torch.float64)
    if policy.table is not None:
        server.table = GradientTable(policy.table, 3, 4)
    if policy.delay_compensation is not None:
        server.compensation = DelayCompensation(*policy.delay_compensation)
    coord = Coordinator(make(), server)
    xs = [X0.copy()]
    reading = {w: coord.request(w) for w in range(3)}
    done = 0
    for gid in np.argsort(s.end, kind="stable"):  # in time order; cancelled work never lands
        if s.fate[gid] == CANCELLED or done == arrivals:
            continue  # (a job abandoned over its budget restarts on the same version)
        w, k, v = int(s.worker[gid]), int(s.minibatch[gid]), int(s.read_version[gid])
        assert reading[w] == v  # the coordinator hands out the versions the simulator did
        r = coord.push(w, v, torch.from_numpy(g(w, k, xs[v])), float(s.end[gid]), gid=int(gid))
        if r.decision.update is not None:
            xs.append(server.params.numpy().copy())
        for c in r.decision.cancel:
            reading[c] = coord.request(c)
        reading[w] = coord.request(w)
        for c in r.decision.release:
            reading[c] = coord.request(c)
        done += 1
    return s, xs


def test_malenia_averages_each_workers_mean_and_restarts_everyone():
    s, xs = drive(lambda: Malenia(3), 6)
    # w0 at 1 and 2, w1 at 1.5, w2 at 2.5: every worker has sent one -> update 1; w0's and
    # w1's work on x0 is stopped and all three restart on x1 at 2.5 (w0 at 3.5, w1 at 4)
    assert s.worker[:6].tolist() == [0, 1, 0, 2, 0, 1]
    assert s.fate[:6].tolist() == [APPLIED] * 4 + [CANCELLED] * 2
    assert s.update_time[0] == 2.5 and s.update_reset[0]
    x1 = X0 - LR / 3 * ((g(0, 0, X0) + g(0, 1, X0)) / 2 + g(1, 0, X0) + g(2, 0, X0))
    np.testing.assert_allclose(xs[1], x1, rtol=0, atol=1e-14)
    assert len(xs) == 2  # arrivals 5 and 6 (w0 at 3.5, w1 at 4, on x1) wait for w2


def test_ia2sgd_steps_with_the_mean_of_each_workers_latest_gradient():
    s, xs = drive(lambda: IA2SGD(3), 6)
    assert s.worker[:6].tolist() == [0, 1, 0, 2, 0, 1]
    # arrivals 1-3 fill rows 0, 1 and replace row 0; w2's at 2.5 fills the table: update 1
    assert (s.update[:6] == [0, 0, 0, 0, 1, 2]).all() and s.update_reset is None
    rows = {0: g(0, 1, X0), 1: g(1, 0, X0), 2: g(2, 0, X0)}
    x1 = X0 - LR * (rows[0] + rows[1] + rows[2]) / 3
    rows[0] = g(0, 2, X0)  # w0 at 3, read at 2 (x0): replaces its row
    x2 = x1 - LR * (rows[0] + rows[1] + rows[2]) / 3
    rows[1] = g(1, 1, X0)  # w1 at 3, read at 1.5 (x0)
    x3 = x2 - LR * (rows[0] + rows[1] + rows[2]) / 3
    np.testing.assert_allclose(np.stack(xs[1:4]), np.stack([x1, x2, x3]), rtol=0, atol=1e-14)


def test_ia2sgd_after_steps_from_the_arrival_after_the_filling_one():
    s, xs = drive(lambda: IA2SGD(3, first_update="after"), 6)
    assert (s.update[:6] == [0, 0, 0, 0, 0, 1]).all()
    rows = {0: g(0, 2, X0), 1: g(1, 0, X0), 2: g(2, 0, X0)}  # w0's third (at 3) is the first
    x1 = X0 - LR * (rows[0] + rows[1] + rows[2]) / 3
    np.testing.assert_allclose(xs[1], x1, rtol=0, atol=1e-14)


def test_ringleader_gathers_then_steps_once_per_worker_with_running_means():
    s, xs = drive(lambda: Ringleader(3), 6)
    assert s.worker[:6].tolist() == [0, 1, 0, 2, 0, 1]
    # phase 1 ends when w2 arrives (update 1, table reset); then w0 and w1 step once each
    assert (s.update[:6] == [0, 0, 0, 0, 1, 2]).all()
    assert s.update_reset[:3].tolist() == [True, False, False]
    m0 = (g(0, 0, X0) + g(0, 1, X0)) / 2
    x1 = X0 - LR * (m0 + g(1, 0, X0) + g(2, 0, X0)) / 3
    m0 = (g(0, 0, X0) + g(0, 1, X0) + g(0, 2, X0)) / 3  # w0 at 3 (read x0) joins its row
    x2 = x1 - LR * (m0 + g(1, 0, X0) + g(2, 0, X0)) / 3
    m1 = (g(1, 0, X0) + g(1, 1, X0)) / 2  # w1 at 3 (read x0)
    x3 = x2 - LR * (m0 + m1 + g(2, 0, X0)) / 3
    np.testing.assert_allclose(np.stack(xs[1:4]), np.stack([x1, x2, x3]), rtol=0, atol=1e-14)


def test_ringleader_holds_a_stepped_workers_arrival_for_the_next_cycle():
    """Cycle 3 steps at 8 (w0) and 9 (w1); w0, which stepped already, arrives at 9 too
    (before w1: ties go to the lower worker): its gradient is held and folded into cycle
    4's fresh table, which opens at 10 when w2 arrives."""
    s = h.simulate_schedule(Ringleader(3), const_cluster([1, 1.5, 2.5]), max_updates=12, fast=False)
    cycle_starts = np.flatnonzero(s.update_reset)
    assert cycle_starts.tolist() == [0, 3, 6, 9]
    for u in cycle_starts:  # the update that opens a cycle has a gradient from every worker
        assert set(s.worker[s.update == u].tolist()) == {0, 1, 2}
    for u in set(range(12)) - set(cycle_starts.tolist()):  # the others: exactly one
        assert (s.update == u).sum() == 1
    held = (s.update >= 0) & (s.staleness < s.update - s.read_version)  # applied later on
    assert np.flatnonzero(held).tolist() == [16]
    assert (s.worker[16], s.read_version[16], s.end[16], s.update[16]) == (0, 8, 9.0, 9)


@pytest.mark.parametrize(
    ("taus", "factors"),
    [
        ([1.0, 1.5, 2.5], [0.6, 0.9, 0.6, 1.5, 0.6, 0.9]),  # given: tau_w / (5 / 3)
        # measured: the mean time between each worker's arrivals, over those seen so far
        (None, [1.0, 1.5 / 1.25, 1 / 1.25, 1.5, 0.6, 0.9]),
    ],
    ids=["given", "measured"],
)
def test_rescaled_scales_each_step_by_its_workers_relative_time(taus, factors):
    s, xs = drive(lambda: Rescaled(3, taus), 6)
    assert s.worker[:6].tolist() == [0, 1, 0, 2, 0, 1]
    np.testing.assert_allclose(s.update_scale[:6], factors, rtol=1e-15)
    x = [X0]
    reads = s.read_version[:6]
    for i in range(6):
        w, k = int(s.worker[i]), int(s.minibatch[i])
        x.append(x[-1] - LR * factors[i] * g(w, k, x[int(reads[i])]))
    np.testing.assert_allclose(np.stack(xs[1:7]), np.stack(x[1:]), rtol=0, atol=1e-13)


def async_config(workers: int = 4) -> h.Config:
    """30 updates of async on mlp-digits under log-normal times: the runs the equivalences
    compare with."""
    return small_config(
        policy={"name": "async", "workers": workers},
        timing={"compute": "lognormal:mu=0,sigma=0.5"},
        run={"updates": 30},
    )


def test_rescaled_with_equal_times_is_async_bit_for_bit():
    cfg = async_config()
    ref = h.run(cfg).params
    assert torch.equal(h.run(cfg.replace("policy.name=rescaled", "policy.taus=2x4")).params, ref)
    const = cfg.replace("timing.compute=constant:value=1")
    ref = h.run(const).params
    assert torch.equal(h.run(const.replace("policy.name=rescaled")).params, ref)  # measured
    # unequal times: not async
    assert not torch.equal(h.run(cfg.replace("policy.name=rescaled")).params, h.run(cfg).params)


@pytest.mark.parametrize("name", ["malenia", "ia2sgd", "ringleader"])
def test_with_one_worker_each_is_sgd_bit_for_bit(name):
    cfg = async_config(workers=1)
    sgd = h.run(cfg)
    assert torch.equal(h.run(cfg.replace(f"policy.name={name}")).params, sgd.params)


def test_the_table_is_the_mean_of_rows_latest_or_running():
    t = GradientTable("latest", 3, 2)
    rows = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=torch.float64)
    assert t.fold(rows[:2], [0, 0], reset=False).tolist() == [3.0, 4.0]  # replaced
    assert t.fold(rows[2:], [2], reset=False).tolist() == [4.0, 5.0]  # rows 0 and 2
    m = GradientTable("mean", 2, 1)
    m.fold(torch.tensor([[1.0], [2.0]]), [0, 0], reset=False)
    assert m.fold(torch.tensor([[9.0]]), [1], reset=False).tolist() == [5.25]
    assert m.fold(torch.tensor([[4.0]]), [0], reset=True).tolist() == [4.0]
    saved = m.state_dict()
    m.fold(torch.tensor([[8.0]]), [1], reset=False)
    m.load_state_dict(saved)
    assert m.value().tolist() == [4.0]


def test_malenia_shrinks_its_rounds_when_a_worker_is_lost_and_the_others_refuse():
    p = Malenia(3)
    for w in range(3):
        p.request(w)
    assert p.push(0, 0, 0).fate == "buffered"
    assert p.push(1, 0, 1).fate == "buffered"
    d = p.lose(2)
    assert d.update is not None and d.update.members == [0, 1] and d.update.reset
    with pytest.raises(h.WorkerLost, match="ringleader cannot go on without it"):
        Ringleader(3).lose(1)


def test_a_table_policy_takes_no_other_aggregator(capsys):
    with pytest.raises(h.ConfigError, match="policy.aggregator: ringleader steps with the mean"):
        build_policy("ringleader:workers=4,aggregator=median")
    code = main(["run", "examples/digits-backup.toml", "--set", "policy.name=ia2sgd",
                 "--set", "policy.aggregator=trimmed_mean:trim=1"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "policy.aggregator" in err[0]


# -- predict ------------------------------------------------------------------------------
def test_the_exact_dynamics_reproduce_the_simulators_schedule():
    """predict's Monte Carlos (hybridsgd.analysis.heterogeneous, event logic of their own)
    fed the simulator's durations, worker by worker: the same update times and staleness
    (ringleader), gradients per round (malenia) and budget overruns (mindflayer)."""
    from hybridsgd.analysis.heterogeneous import malenia_run, mindflayer_run, ringleader_run
    from hybridsgd.policies.optimal_time import mindflayer
    from hybridsgd.timing import Cluster, parse_model

    W = 5
    cluster = Cluster(parse_model("lognormal:mu=0,sigma=0.7"), W, seed=4, speeds=[1, 1, 2, 3, 5])
    draws = np.stack([cluster.delays(w, 3000) for w in range(W)], axis=1)
    U, S = ringleader_run(draws)
    again = Cluster(parse_model("lognormal:mu=0,sigma=0.7"), W, seed=4, speeds=[1, 1, 2, 3, 5])
    s = h.simulate_schedule(Ringleader(W), again, 500, fast=False)
    np.testing.assert_array_equal(U[:500], s.update_time)
    applied = s.fate == APPLIED
    order = np.argsort(s.update[applied], kind="stable")  # by update, arrival order within
    np.testing.assert_array_equal(S[: applied.sum()], s.staleness[applied][order])
    U, started, wasted = mindflayer_run(draws, 4, [1.5, 1.5, 2.0, 4.0, 4.0])
    again = Cluster(parse_model("lognormal:mu=0,sigma=0.7"), W, seed=4, speeds=[1, 1, 2, 3, 5])
    s = h.simulate_schedule(mindflayer(W, 4, [1.5, 1.5, 2.0, 4.0, 4.0]), again, 300, fast=False)
    np.testing.assert_array_equal(U[:300], s.update_time)
    assert len(s.overran) > 100  # budgets that bite
    U, applied_per_round, started, wasted = malenia_run(draws)
    again = Cluster(parse_model("lognormal:mu=0,sigma=0.7"), W, seed=4, speeds=[1, 1, 2, 3, 5])
    s = h.simulate_schedule(Malenia(W), again, 300, fast=False)
    np.testing.assert_array_equal(U[:300], s.update_time)
    assert applied_per_round[:300].tolist() == np.bincount(s.update[s.fate == APPLIED]).tolist()


@pytest.mark.parametrize(
    "name", ["malenia", "ia2sgd", "ringleader", "mindflayer", "rescaled", "dc_asgd"]
)
@pytest.mark.parametrize(
    ("model", "speeds"),
    [
        ("exp:mu=1", None),
        ("lognormal:mu=0,sigma=1", None),
        ("pareto:alpha=3.5,scale=1", [1, 2, 4, 8] * 2),
    ],
)
def test_predict_matches_the_simulator(name, model, speeds):
    """Time per update within 3%, staleness within 5% (0 for malenia and mindflayer), the
    wasted share and the gradients per update within 3%, under three timing models."""
    from hybridsgd.analysis import measure, predict
    from hybridsgd.timing import Cluster, parse_model

    W = 8
    own = {"quorum": 6, "budgets": 3.0} if name == "mindflayer" else {}
    p = predict(name, W, parse_model(model), speeds=speeds, **own)
    spec = f"{name}:batch=6,budgets=3,workers={W}" if own else f"{name}:workers={W}"
    spec += ",lam=0.1" if name == "dc_asgd" else ""
    policy = build_policy(spec)
    s = h.simulate_schedule(policy, Cluster(parse_model(model), W, seed=3, speeds=speeds), 20_000)
    m = measure(s)
    assert p.mean_update_time == pytest.approx(m["mean_update_time"], rel=0.03)
    assert p.mean_staleness == pytest.approx(m["mean_staleness"], rel=0.05, abs=1e-9)
    assert p.wasted_fraction == pytest.approx(m["wasted_fraction"], rel=0.03, abs=1e-9)
    per_update = (s.fate == APPLIED).sum() / s.n_updates
    assert p.quorum == pytest.approx(per_update, rel=0.03)


# -- DC-ASGD ------------------------------------------------------------------------------
@pytest.mark.parametrize("adaptive", [False, True], ids=["constant", "adaptive"])
def test_dc_asgd_corrects_each_gradient_for_its_delay(adaptive):
    """Zheng et al.'s update, written out: g + lam * g * g * (w_now - w_read) with lam
    constant, or lam0 / sqrt(MeanSquare) after MeanSquare <- 0.95 MeanSquare + 0.05 g * g."""
    lam = 0.5
    s, xs = drive(lambda: DCASGD(3, lam, adaptive), 6)
    assert s.worker[:6].tolist() == [0, 1, 0, 2, 0, 1]
    x, ms = [X0], np.zeros(4)
    for i in range(6):
        w, k, r = int(s.worker[i]), int(s.minibatch[i]), int(s.read_version[i])
        grad = g(w, k, x[r])
        ms = 0.95 * ms + 0.05 * grad * grad
        weight = lam / np.sqrt(ms) if adaptive else lam
        x.append(x[-1] - LR * (grad + weight * grad * grad * (x[-1] - x[r])))
    assert (s.staleness[:6] > 0).sum() >= 3  # the correction had delays to correct
    np.testing.assert_allclose(np.stack(xs[1:7]), np.stack(x[1:]), rtol=0, atol=1e-13)


def test_dc_asgd_with_lambda_0_is_async_bit_for_bit():
    cfg = async_config()
    ref = h.run(cfg).params
    assert torch.equal(h.run(cfg.replace("policy.name=dc_asgd", "policy.lam=0")).params, ref)
    assert not torch.equal(h.run(cfg.replace("policy.name=dc_asgd", "policy.lam=1")).params, ref)


@pytest.mark.parametrize(
    "spec",
    [
        "dc_asgd:lam=2",
        "dc_asgd:lam=0.2,adaptive=true",
        "ringleader",
        "rescaled",
        "malenia",
        "ia2sgd",
    ],
)
def test_the_replay_and_the_coordinator_build_the_same_updates(spec):
    """The simulator's replay and the real backends' coordinator, fed the same schedule on
    mlp-digits: the same parameters (to float tolerance)."""
    from hybridsgd.backends.sim.backend import SimBackend
    from hybridsgd.runner import build_run
    from hybridsgd.tasks.registry import build_task

    name, _, rest = spec.partition(":")
    own = dict(kv.split("=") for kv in rest.split(",")) if rest else {}
    own = {k: (v == "true") if v in ("true", "false") else float(v) for k, v in own.items()}
    cfg = small_config(
        policy={"name": name, "workers": 3, **own},
        timing={"compute": "lognormal:mu=0,sigma=0.5"},
        task={"split": "dirichlet", "alpha": 0.3},
        run={"updates": 25},
    )
    sim = h.run(cfg)
    task = build_task(cfg.task, cfg.run.seed)
    ctx = build_run(cfg, task, SimBackend())
    coord = Coordinator(ctx.policy, ctx.server)
    g_ = sim.trace.gradients
    snaps = {0: ctx.server.params.clone()}
    reading = {w: coord.request(w) for w in range(3)}
    for row in g_.sort_values("end_time", kind="stable").itertuples():
        if row.fate == "cancelled":
            continue
        w, v = int(row.worker), int(row.read_version)
        assert reading[w] == v
        x, y = task.batch(ctx.feeds[w].batch(int(row.minibatch)))
        grad, _ = task.grad(snaps[v], x, y)
        r = coord.push(w, v, grad.clone(), float(row.end_time), gid=int(row.gid))
        snaps[ctx.server.version] = ctx.server.params.clone()
        for c in r.decision.cancel:
            reading[c] = coord.request(c)
        reading[w] = coord.request(w)
        if ctx.server.version == 25:
            break
    torch.testing.assert_close(ctx.server.params, sim.params, rtol=1e-5, atol=1e-6)


# -- MindFlayer ---------------------------------------------------------------------------
def test_mindflayer_abandons_a_minibatch_past_its_budget_and_restarts_it():
    """Workers of 1, 1.5 and 4 units, budgets 5, 5 and 2.5, B = 5: w2's minibatch is
    abandoned at 2.5 (cancelled, "over its time budget") and restarted; the round ends at 3
    with w0 at 1, 2, 3 and w1 at 1.5, 3, and w2's second try is stopped with it (as
    Rennala stops work at the end of a round)."""
    from hybridsgd.policies.optimal_time import mindflayer
    from hybridsgd.record import OVER_BUDGET

    s = h.simulate_schedule(
        mindflayer(3, 5, [5, 5, 2.5]), const_cluster([1, 1.5, 4]), max_updates=1, fast=False
    )
    rows = list(zip(s.worker.tolist(), s.end.tolist(), s.fate.tolist(), strict=True))
    assert rows == [
        (0, 1.0, APPLIED), (1, 1.5, APPLIED), (0, 2.0, APPLIED), (2, 2.5, CANCELLED),
        (0, 3.0, APPLIED), (1, 3.0, APPLIED), (0, 3.0, CANCELLED), (2, 3.0, CANCELLED),
    ]  # fmt: skip
    # (w0's fourth minibatch, begun at 3 on the old version, is stopped at once)
    assert s.overran.tolist() == [3] and s.start[3] == 0.0 and s.start[7] == 2.5
    cfg = small_config(
        policy={"name": "mindflayer", "workers": 3, "batch": 5, "budgets": "5,5,2.5"},
        timing={"compute": "constant:value=1", "speed": [1, 1.5, 4]},
        run={"updates": 2},
    )
    reasons = h.run(cfg).trace.gradients.reason.tolist()
    assert reasons[3] == OVER_BUDGET and reasons.count(OVER_BUDGET) >= 1
    assert reasons[7] == ""  # stopped by the round's end, not by its budget


def test_mindflayer_with_infinite_budgets_is_rennala_bit_for_bit():
    cfg = small_config(
        policy={"name": "rennala", "workers": 4, "batch": 6},
        timing={"compute": "lognormal:mu=0,sigma=1"},
        run={"updates": 30},
    )
    ref = h.run(cfg)
    flayer = h.run(cfg.replace("policy.name=mindflayer", "policy.budgets=inf"))
    assert torch.equal(flayer.params, ref.params)
    tight = h.run(cfg.replace("policy.name=mindflayer", "policy.budgets=1.5")).trace.gradients
    over = tight[tight.reason == "over its time budget"]
    assert len(over) > 0 and np.allclose(over.end_time - over.start_time, 1.5)
    ok = tight[tight.fate == "applied"]
    assert ((ok.end_time - ok.start_time) <= 1.5 + 1e-12).all()  # nothing past its budget


# -- ATA ----------------------------------------------------------------------------------
def test_ata_allocates_fresh_workers_first_then_by_the_bounds():
    """Hand-checked allocations (the authors' harmonia and discordia, ties to the lowest)."""
    from hybridsgd.policies.allocation import allocate

    inf = math.inf
    assert allocate([-inf] * 4, 4) == [1, 1, 1, 1]  # nobody seen: one each
    # then the greedy over the negative bounds, shifted by +4 to 2 and 3: 2, 3, 4 ...
    assert allocate([-inf, -2.0, -inf, -1.0], 5) == [1, 2, 1, 1]
    # nobody left to prefer (every other bound >= 0): the least loaded (the authors' code
    # draws one at random)
    assert allocate([-inf, 2.0, -inf, 1.0], 3) == [1, 1, 1, 0]
    # a bound <= 0 somewhere: only the negative ones take part, shifted by -2 min = +6:
    # scores 3 and 5, so 3 -> 3, 5 -> 5, 3 -> 6 (ties to the lowest), 6 ...
    assert allocate([-3.0, 4.0, -1.0], 4) == [3, 0, 1]
    # all positive: one at a time to whoever would finish soonest (1, 2, 2, 3, 4, 4 ...)
    assert allocate([1.0, 2.0, 4.0], 6) == [4, 2, 0]
    assert allocate([1.0, 2.0, 4.0], 7) == [4, 2, 1]


def test_ata_learns_to_give_the_slow_worker_less():
    """Workers of 1, 1, 1 and 6 units, B = 8: after a round of exploration the bandit gives
    the slow worker nothing and shares the batch among the three others."""
    from hybridsgd.policies import ATA

    s = h.simulate_schedule(ATA(4, 8, alpha=0.05), const_cluster([1, 1, 1, 6]), 30, fast=False)
    late = s.update >= 20
    per_worker = np.bincount(s.worker[late], minlength=4)
    assert per_worker[3] == 0 and per_worker[:3].min() >= 20
    assert (s.fate == APPLIED).sum() == 30 * 8 and (s.staleness == 0).all()


def test_ata_with_equal_times_and_b_equal_to_w_is_sync_bit_for_bit():
    """Every round gives each worker one minibatch, and each waits for the next version."""
    cfg = small_config(
        policy={"name": "sync", "workers": 4},
        timing={"compute": "constant:value=1"},
        run={"updates": 20},
    )
    ref = h.run(cfg).params
    assert torch.equal(h.run(cfg.replace("policy.name=ata", "policy.batch=4")).params, ref)


def test_atas_dynamics_reproduce_the_simulator_and_predict_matches_it():
    """predict's ATA (analysis.heterogeneous.ata_run: rounds, the policy's own allocation
    rule) fed the simulator's draws gives its update times exactly; over whole runs of 3000
    updates the prediction is within 3% of the simulator under three timing models."""
    from hybridsgd.analysis import measure, predict
    from hybridsgd.analysis.heterogeneous import ata_run
    from hybridsgd.policies import ATA
    from hybridsgd.timing import Cluster, parse_model

    speeds = [1, 1, 2, 6]
    cluster = Cluster(parse_model("lognormal:mu=0,sigma=0.7"), 4, seed=4, speeds=speeds)
    draws = np.stack([cluster.delays(w, 4000) for w in range(4)], axis=1)
    U = ata_run(draws, 6, "empirical")
    again = Cluster(parse_model("lognormal:mu=0,sigma=0.7"), 4, seed=4, speeds=speeds)
    s = h.simulate_schedule(ATA(4, 6), again, 300, fast=False)
    np.testing.assert_array_equal(U[:300], s.update_time)
    for model in ("exp:mu=1", "lognormal:mu=0,sigma=1", "pareto:alpha=3.5,scale=1"):
        p = predict("ata", 4, parse_model(model), speeds=speeds, quorum=6, updates=3000)
        sim = Cluster(parse_model(model), 4, seed=3, speeds=speeds)
        m = measure(h.simulate_schedule(ATA(4, 6), sim, 3000))
        assert p.mean_update_time == pytest.approx(m["mean_update_time"], rel=0.03), model
        assert p.mean_staleness == m["mean_staleness"] == 0


@pytest.mark.parametrize("method", ["mindflayer", "ata"])
def test_mindflayer_and_ata_step_with_the_mean_of_the_rounds_gradients(method):
    """6 arrivals on the 3 workers (1, 1.5, 2.5 units). MindFlayer, B = 3, budgets 5, 5,
    1.2: w2 never finishes in time (abandoned at 1.2 and 3.2); w0 at 1 and 2, w1 at 1.5
    make update 1 at 2; then w0 at 3, w1 at 3.5, w0 at 4 make update 2. ATA, B = 3: one
    minibatch each first (update 1 at 2.5, the round's slowest), then its bounds'
    allocation."""
    from hybridsgd.policies import ATA
    from hybridsgd.policies.optimal_time import mindflayer

    make = (lambda: mindflayer(3, 3, [5, 5, 1.2])) if method == "mindflayer" else lambda: ATA(3, 3)
    s, xs = drive(make, 6)
    x, buffer = [X0], []
    for gid in np.argsort(s.end, kind="stable"):
        if s.fate[gid] == CANCELLED:
            continue
        w, k, r = int(s.worker[gid]), int(s.minibatch[gid]), int(s.read_version[gid])
        buffer.append(g(w, k, x[r]))
        if len(buffer) == 3:  # B fresh gradients: step with their mean
            x.append(x[-1] - LR * np.mean(buffer, axis=0))
            buffer = []
        if len(x) == len(xs):
            break
    assert len(xs) >= 3
    np.testing.assert_allclose(np.stack(xs[1:]), np.stack(x[1:]), rtol=0, atol=1e-14)
    if method == "mindflayer":
        assert s.update_time[:2].tolist() == [2.0, 4.0]
        assert s.end[s.overran[:2]].tolist() == [1.2, 3.2]
    else:
        assert s.update_time[0] == 2.5
