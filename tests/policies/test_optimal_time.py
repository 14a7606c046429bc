"""Rennala SGD, Ringmaster ASGD and m-Synchronous SGD (policies/optimal_time.py): their
decisions on hand-checked scenarios, their equivalences, and their bad parameters.

Three workers whose minibatches take exactly 1, 2 and 10 time units; ties in time go by
worker index."""

from __future__ import annotations

import numpy as np
import pytest

from hybridsgd import Cluster, Config, ConfigError, asynchronous, parse_model, simulate_schedule
from hybridsgd.cli import main
from hybridsgd.policies import k_batch_sync, k_sync, m_sync, rennala, ringmaster, sync
from hybridsgd.policies.optimal_time import rennala_batch, ringmaster_threshold
from hybridsgd.record import APPLIED, CANCELLED, DROPPED
from tests.helpers import const_cluster

SPEEDS = [1.0, 2.0, 10.0]


def events(policy, updates, speeds=SPEEDS):
    return simulate_schedule(policy, const_cluster(speeds), max_updates=updates, fast=False)


def random_cluster(W=6, seed=3):
    return Cluster(parse_model("lognormal:mu=0,sigma=1"), W, seed=seed)


def ringmaster_policy(W, R, stops=False):
    """As the registry builds it: ringmaster's own threshold as a staleness bound."""
    from hybridsgd.policies import build_policy, policy_config

    return build_policy(policy_config(f"ringmaster:R={R},stops={str(stops).lower()},workers={W}"))


def test_ringmaster_ignores_gradients_of_delay_R_or_more():
    s = events(ringmaster_policy(3, 2), 8)
    # w0 (1 unit) makes every update; w1 (2 units) always arrives two updates late
    applied, dropped = s.fate == APPLIED, s.fate == DROPPED
    assert s.worker[applied].tolist() == [0] * 8 and (s.staleness[applied] == 0).all()
    assert s.worker[dropped].tolist() == [1, 1, 1] and (s.staleness[dropped] == 2).all()
    assert s.end[dropped].tolist() == [2.0, 4.0, 6.0]
    # with R = 3 the same gradients of delay 2 are applied
    s3 = events(ringmaster_policy(3, 3), 8)
    assert not (s3.fate == DROPPED).any() and 1 in s3.worker[s3.fate == APPLIED]


def test_ringmaster_with_stops_cancels_work_when_its_delay_reaches_R():
    s = events(ringmaster_policy(3, 2, stops=True), 8)
    assert not (s.fate == DROPPED).any()
    cancelled = s.fate == CANCELLED
    # w1 and w2 are stopped two updates after they start, at t = 2, 4, 6, 8 and restarted
    assert sorted(set(s.worker[cancelled].tolist())) == [1, 2]
    assert (s.staleness[cancelled] == 2).all()
    assert set(s.end[cancelled].tolist()) <= set(s.update_time.tolist())
    assert s.worker[s.fate == APPLIED].tolist() == [0] * 8


@pytest.mark.parametrize("stops", [False, True])
def test_ringmaster_never_applies_a_gradient_of_delay_R_or_more(stops):
    for R in (1, 3, 5):
        s = simulate_schedule(ringmaster_policy(6, R, stops), random_cluster(), 400, fast=False)
        assert s.staleness[s.fate == APPLIED].max() < R
        if stops:  # nothing arrives too late: it was stopped first
            assert not (s.fate == DROPPED).any() and (s.staleness[s.fate == CANCELLED] == R).all()


def test_ringmaster_without_a_threshold_is_async():
    for stops in (False, True):
        a = simulate_schedule(ringmaster_policy(6, "inf", stops), random_cluster(), 300)
        b = simulate_schedule(asynchronous(6), random_cluster(), 300)
        assert a.equals(b)
        assert a.equals(simulate_schedule(ringmaster(6, np.inf), random_cluster(), 300, fast=False))


def test_m_sync_is_k_sync_and_with_m_W_it_is_sync():
    for fast in (True, False):
        for m in (1, 4, 6):
            a = simulate_schedule(m_sync(6, m), random_cluster(), 50, fast=fast)
            assert a.equals(simulate_schedule(k_sync(6, m), random_cluster(), 50, fast=fast))
        a = simulate_schedule(m_sync(6, 6), random_cluster(), 50, fast=fast)
        assert a.equals(simulate_schedule(sync(6), random_cluster(), 50, fast=fast))


def test_rennala_takes_B_fresh_gradients_from_any_workers():
    s = events(rennala(3, 4), 3)
    first = s.update == 0
    # t=1 w0, t=2 w0 then w1, t=3 w0: four fresh gradients, three of them from w0
    assert s.worker[first].tolist() == [0, 0, 1, 0] and s.update_time[0] == 3.0
    assert (s.staleness[s.fate == APPLIED] == 0).all()
    # the work still running at the update (w1 from t=2, w2 from t=0) is stopped then
    stopped = (s.fate == CANCELLED) & (s.end == 3.0)
    assert sorted(s.worker[stopped].tolist()) == [1, 2]
    assert (np.bincount(s.update[s.fate == APPLIED]) == 4).all()


def test_rennala_late_drop_lets_stale_work_finish_then_ignores_it():
    s = events(rennala(3, 4, late="drop"), 6)
    assert not (s.fate == CANCELLED).any()
    dropped = s.fate == DROPPED
    assert (s.staleness[dropped] > 0).all() and 2 in s.worker[dropped]
    assert (np.bincount(s.update[s.fate == APPLIED]) == 4).all()


def test_rennala_with_B_at_most_W_is_k_batch_sync():
    for B in (1, 3, 6):
        a = simulate_schedule(rennala(6, B), random_cluster(), 60, fast=False)
        assert a.equals(simulate_schedule(k_batch_sync(6, B), random_cluster(), 60, fast=False))


def test_the_papers_parameters_from_noise_and_precision():
    assert rennala_batch(4.0, 0.5) == 8 and ringmaster_threshold(0.1, 1.0) == 1
    assert ringmaster_threshold(10.0, 3.0) == 4
    with pytest.raises(ConfigError, match="epsilon"):
        rennala_batch(1.0, 0.0)


@pytest.mark.parametrize(
    "spec, field",
    [
        ("ringmaster:R=0", "policy.delay_threshold"),
        ("ringmaster:R=2.5", "policy.delay_threshold"),
        ("ringmaster", "policy.delay_threshold"),
        ("m_sync:m=9", "policy.m"),
        ("rennala:B=0", "policy.batch"),
        ("rennala:B=4,late=later", "policy.late"),
    ],
)
def test_bad_parameters_are_one_line_and_exit_2(spec, field, capsys):
    from hybridsgd.policies import parse_spec

    with pytest.raises(ConfigError) as e:
        Config.from_dict({"policy": {"workers": 8}}, parse_spec(spec)[1])
    assert e.value.field == field
    argv = ["predict", "--policy", spec, "--workers", "8", "--compute", "exp:mu=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and field in err


@pytest.mark.parametrize("model", ["lognormal:mu=0,sigma=1", "pareto:alpha=2.5,scale=1"])
@pytest.mark.parametrize("policy, quorum", [("rennala", 4), ("rennala", 12), ("m_sync", 5)])
def test_predict_matches_the_simulator(policy, quorum, model):
    """Time per update within 3%, staleness 0, and the wasted share exact by counting: K
    applied and the W - 1 other jobs stopped per update (rennala), W - m (m_sync)."""
    from hybridsgd.analysis import measure, predict

    W = 8
    p = predict(policy, W, parse_model(model), quorum=quorum)
    build = rennala(W, quorum) if policy == "rennala" else m_sync(W, quorum)
    s = simulate_schedule(build, Cluster(parse_model(model), W, seed=3), 6000)
    m = measure(s)
    assert p.mean_update_time == pytest.approx(m["mean_update_time"], rel=0.03)
    assert p.mean_staleness == m["mean_staleness"] == 0
    assert p.wasted_fraction == pytest.approx(m["wasted_fraction"], rel=0.01)


def test_the_optimal_time_is_the_brute_force_minimum_over_worker_subsets():
    """Tyurin & Richtarik's bound: the best subset of workers is always some m fastest; a
    brute force over every non-empty subset of 8 workers finds the same time."""
    import itertools

    from hybridsgd.analysis.optimal import Problem, optimal_time

    rng = np.random.default_rng(1)
    for sigma2 in (0.0, 0.3, 5.0, 400.0):
        problem = Problem(L=2.0, delta=3.0, sigma2=sigma2, epsilon=0.1)
        taus = rng.lognormal(0.0, 1.0, 8)
        best = min(
            (len(s) + sigma2 / 0.1) / sum(1.0 / taus[list(s)]) * 2.0 * 3.0 / 0.1
            for r in range(1, 9)
            for s in itertools.combinations(range(8), r)
        )
        t, m = optimal_time(taus, problem)
        assert t == pytest.approx(best, rel=1e-12)
        assert 1 <= m <= 8 and (sigma2 > 0 or m == 1)  # no noise: the fastest alone


def test_predict_prints_the_bound_and_the_policys_ratio(capsys):
    """Equal workers, synchronous SGD: the policy's time equals the bound at m = W (the same
    constants), so the ratio is the order-statistics penalty of waiting for the slowest."""
    import json

    argv = ["predict", "--policy", "sync", "--workers", "4", "--compute", "constant:value=2",
            "--epsilon", "0.1", "--sigma2", "1", "--json"]  # fmt: skip
    assert main(argv) == 0
    bound = json.loads(capsys.readouterr().out)["optimal"]
    assert bound["fastest_workers_used"] == 4  # with equal workers, every one helps
    assert bound["ratio"] == pytest.approx(1.0, rel=1e-9)
    assert main(["predict", "--policy", "async", "--workers", "4", "--compute", "exp:mu=1",
                 "--epsilon", "0.1"]) == 0  # fmt: skip
    assert "stale gradients" in capsys.readouterr().out
    assert main(["predict", "--policy", "sync", "--workers", "4", "--compute", "exp:mu=1",
                 "--epsilon", "-1"]) == 2  # fmt: skip
    assert "--epsilon" in capsys.readouterr().err


@pytest.mark.parametrize("stops", [False, True])
@pytest.mark.parametrize("R", [1, 2, 3, 7])
def test_ringmasters_exact_dynamics_reproduce_the_simulators_schedule(R, stops):
    """predict's Monte Carlo (analysis.dynamics.ringmaster_run, its own event heap) fed the
    same durations as the simulator, worker by worker: the same update times and staleness."""
    from hybridsgd.analysis.dynamics import ringmaster_run

    speeds = [1.0, 1.5, 2.5, 4.0, 11.0]
    draws = np.tile(np.asarray(speeds), (400, 1))
    U, S, started, wasted = ringmaster_run(draws, R, stops)
    s = simulate_schedule(ringmaster_policy(5, R, stops), const_cluster(speeds), len(U), fast=False)
    assert np.array_equal(U, s.update_time[: len(U)])
    assert np.array_equal(S, s.staleness[s.fate == APPLIED][: len(S)])


@pytest.mark.parametrize("stops", [False, True])
@pytest.mark.parametrize(
    "model, speeds",
    [("exp:mu=1", None), ("lognormal:mu=0,sigma=1", None), ("exp:mu=1", "1x4,4x4,16x4,64x4")],
)
def test_ringmaster_prediction_matches_the_simulator(model, speeds, stops):
    from hybridsgd.analysis import measure, predict

    W, R = 16, 4
    multipliers = None
    if speeds:
        multipliers = [float(v) for part in speeds.split(",") for v in [part.split("x")[0]] * 4]
    p = predict("ringmaster", W, parse_model(model), speeds=multipliers, delay_threshold=R,
                stops=stops)  # fmt: skip
    policy = ringmaster_policy(W, R, stops)
    s = simulate_schedule(
        policy, Cluster(parse_model(model), W, seed=3, speeds=multipliers), 40_000
    )
    m = measure(s)
    assert p.mean_update_time == pytest.approx(m["mean_update_time"], rel=0.03)
    assert p.mean_staleness == pytest.approx(m["mean_staleness"], rel=0.05)
    assert p.wasted_fraction == pytest.approx(m["wasted_fraction"], rel=0.03)


def test_recommend_says_how_far_each_fresh_candidate_is_from_the_optimum(capsys):
    import json

    argv = ["recommend", "--workers", "4", "--compute", "constant:value=2", "--lr", "0.1",
            "--curvature", "1", "--epsilon", "0.1", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["policy"]: r for r in out["ranking"]}
    assert rows["sync"]["vs_optimal"] == pytest.approx(1.0)  # equal workers: sync is optimal
    assert rows["async"]["vs_optimal"] is None  # stale gradients: no ratio
    assert out["optimal"]["fastest_workers_used"] == 4


@pytest.mark.parametrize("B", [1, 2, 4, 9])
def test_rennala_drops_exact_dynamics_reproduce_the_simulators_schedule(B):
    from hybridsgd.analysis.dynamics import rennala_drop_run

    speeds = [1.0, 1.5, 2.5, 4.0, 11.0]
    U, seen, dropped = rennala_drop_run(np.tile(np.asarray(speeds), (400, 1)), B)
    s = simulate_schedule(rennala(5, B, late="drop"), const_cluster(speeds), len(U), fast=False)
    assert np.array_equal(U, s.update_time[: len(U)])


@pytest.mark.parametrize("model", ["lognormal:mu=0,sigma=1", "pareto:alpha=2.5,scale=1"])
@pytest.mark.parametrize("B", [4, 12])
def test_rennala_drop_prediction_matches_the_simulator(model, B):
    from hybridsgd.analysis import measure, predict

    p = predict("rennala", 8, parse_model(model), quorum=B, late="drop")
    s = simulate_schedule(rennala(8, B, late="drop"), Cluster(parse_model(model), 8, seed=3), 6000)
    m = measure(s)
    assert p.mean_update_time == pytest.approx(m["mean_update_time"], rel=0.03)
    assert p.mean_staleness == m["mean_staleness"] == 0
    assert p.wasted_fraction == pytest.approx(m["wasted_fraction"], rel=0.03)
