"""Faulty workers, the server's gradient check, crashes (docs/design.md section 7)."""

from __future__ import annotations

import pytest
import torch

from hybridsgd import Config
from hybridsgd.config import FaultsConfig
from hybridsgd.core.faults import Faults, GradientCheck
from hybridsgd.errors import WorkerLost
from hybridsgd.runner import run
from hybridsgd.tasks import build_task
from tests.helpers import assert_consistent, make_config

BASE = {
    "task": {"name": "mlp-digits", "batch_size": 16},
    "policy": {"name": "async", "workers": 4},
    "run": {"updates": 60, "eval_every": 20},
}


def cfg(**sections) -> Config:
    return make_config(BASE, **sections)


def test_attacks_corrupt_exactly_the_faulty_rows():
    g = torch.arange(1.0, 7.0).view(3, 2)
    f = Faults(frozenset({1}), "sign-flip", {"factor": 4.0}, nan=frozenset({2}))
    out = f.corrupt(g.clone(), [0, 1, 2])
    assert out[0].tolist() == [1.0, 2.0] and out[1].tolist() == [-12.0, -16.0]
    assert torch.isnan(out[2]).all()
    replay = Faults(frozenset({0}), "stale-replay")
    first = replay.corrupt(g[:1].clone(), [0])
    assert replay.corrupt(g[1:2].clone(), [0]).tolist() == first.tolist() == [[1.0, 2.0]]
    noise = Faults(frozenset({0}), "gaussian", {"std": 10.0}).corrupt(torch.zeros(1, 10_000), [0])
    assert 9.5 < float(noise.std()) < 10.5
    assert Faults(frozenset({0}), "zero").corrupt(g.clone(), [0])[0].tolist() == [0.0, 0.0]


def test_byzantine_workers_are_chosen_by_the_seed_or_named():
    f = Faults.from_config(FaultsConfig(byzantine=0.25), 20, seed=3)
    assert (
        len(f.byzantine) == 5
        and f.byzantine == Faults.from_config(FaultsConfig(byzantine=0.25), 20, 3).byzantine
    )
    named = Faults.from_config(FaultsConfig(byzantine=0.5, byzantine_workers=[2]), 20, 3)
    assert named.byzantine == {2}


def test_the_check_rejects_non_finite_and_clips_or_rejects_large_gradients():
    check = GradientCheck(max_norm=5.0)
    assert check.row(torch.tensor([float("inf"), 0.0])) == "non-finite"
    g = torch.tensor([30.0, 40.0])
    assert check.row(g) == "" and g.tolist() == pytest.approx([3.0, 4.0])
    assert GradientCheck(5.0, "reject").row(torch.tensor([30.0, 40.0])) == "norm 50 > 5"
    # 3e38 each: finite, but their sum overflows float32 (issue 15: it used to pass)
    assert GradientCheck().row(torch.tensor([3e38, 3e38])) == "overflow"


@pytest.mark.parametrize("backend", ["sim", "local"])
def test_a_nan_worker_never_changes_the_parameters(backend):
    extra = {"backend": backend, "time_unit": 0.002}
    everyone = run(cfg(faults={"nan_workers": [0, 1, 2, 3]}, run=extra))
    initial = build_task(everyone.config.task, 0).initial_params()
    assert torch.equal(everyone.params, initial)
    assert (everyone.trace.gradients.fate == "rejected").all()

    one = run(cfg(faults={"nan_workers": [1]}, run=extra))
    g = one.trace.gradients
    assert_consistent(one.trace)
    assert (g[g.worker == 1].fate == "rejected").all()
    assert (g[g.fate == "rejected"].reason == "non-finite").all()
    assert (g[g.worker != 1].fate == "applied").all()
    assert torch.isfinite(one.params).all() and not torch.equal(one.params, initial)
    assert one.summary["gradients"]["rejected"] == int((g.worker == 1).sum())


def test_large_gradients_are_clipped_or_rejected():
    clipped = run(cfg(optimizer={"max_grad_norm": 1e-3, "lr": 0.1}, run={"updates": 5}))
    rejected = run(
        cfg(optimizer={"max_grad_norm": 1e-3, "large_gradients": "reject"}, run={"updates": 5})
    )
    initial = build_task(clipped.config.task, 0).initial_params()
    # async, plain SGD: each update is one clipped gradient, so it moves at most lr * 1e-3
    assert 0 < float(torch.linalg.vector_norm(clipped.params - initial)) <= 5 * 0.1 * 1e-3 + 1e-7
    assert torch.equal(rejected.params, initial)
    assert rejected.trace.gradients.reason.str.startswith("norm").all()


def test_a_crashed_worker_in_the_simulator():
    crash = {"crashes": [{"worker": 2, "time": 5.0}]}
    r = run(cfg(policy={"name": "backup", "backups": 1}, faults=crash))
    g = r.trace.gradients
    assert r.summary["updates"] == 60 and r.summary["lost_workers"][0]["worker"] == 2
    assert (g[g.worker == 2].end_time <= 5.0).all() and (g.end_time > 5.0).any()
    assert_consistent(r.trace)
    with pytest.raises(WorkerLost, match="on_worker_loss = fail"):
        run(cfg(policy={"name": "sync", "on_worker_loss": "fail"}, faults=crash))
    shrunk = run(cfg(policy={"name": "sync"}, faults=crash)).trace.updates
    assert (shrunk[shrunk.time > 5.0].n_gradients == 3).all()


def test_a_crash_at_a_time_on_the_local_backend():
    local = {"backend": "local", "time_unit": 0.005, "updates": 150}
    r = run(cfg(faults={"crashes": [{"worker": 3, "time": 0.2}]}, run=local))
    assert r.summary["updates"] == 150
    assert r.summary["lost_workers"][0] | {"time": 0} == {
        "worker": 3,
        "time": 0,
        "why": "crashed (faults)",
    }
    assert_consistent(r.trace)


@pytest.mark.slow
def test_robust_aggregators_withstand_20_percent_sign_flipping_workers():
    """mlp-digits, sync, W = 20, 4 workers send -4 g. Quoted in docs/robustness.md."""

    def accuracy(aggregator: str, byzantine: float) -> float:
        c = Config.from_dict(
            {
                "policy": {"name": "sync", "workers": 20, "aggregator": aggregator},
                "faults": {"byzantine": byzantine, "attack": "sign-flip:factor=4"},
                "run": {"updates": 150, "eval_every": 150},
            }
        )
        return run(c).summary["final_accuracy"]

    clean = accuracy("mean", 0.0)
    assert accuracy("mean", 0.2) < clean - 0.2  # the mean breaks
    for rule in ("median", "trimmed-mean:beta=0.2", "geometric-median", "krum:f=4"):
        attacked = accuracy(rule, 0.2)
        assert attacked >= accuracy(rule, 0.0) - 0.02, rule  # within 2 points of its clean run
        if rule != "krum:f=4":  # Krum averages nothing: slower, judged against its own
            assert attacked >= clean - 0.02, rule


@pytest.mark.parametrize(
    "attack", ["label-flip", "stale-replay", "gaussian:std=5", "alie", "ipm:eps=0.5"]
)
def test_attacks_act_alike_in_the_simulator_and_on_processes(attack):
    """Lockstep rounds give both backends the same schedule; the attack is the same too."""
    c = cfg(
        policy={"name": "sync", "aggregator": "median"},
        faults={"byzantine_workers": [0], "attack": attack},
        run={"updates": 20, "time_unit": 0.002},
    )
    sim, local = run(c), run(c.replace("run.backend=local"))
    assert torch.allclose(sim.params, local.params, atol=1e-5)
    clean = run(c.replace("faults.byzantine_workers=[]"))
    assert not torch.allclose(sim.params, clean.params, atol=1e-3)


def test_a_gradient_of_the_wrong_shape_or_dtype_is_rejected_not_applied():
    from hybridsgd import sync
    from hybridsgd.coordinator import Coordinator
    from hybridsgd.core.server import ParameterServer

    c = Coordinator(sync(3), ParameterServer(torch.zeros(2), "sgd", lr=1.0))
    assert [c.request(w) for w in range(3)] == [0, 0, 0]
    c.push(0, 0, torch.tensor([1.0, 1.0]))
    c.push(1, 0, torch.tensor([1.0, 1.0, 1.0]))
    c.push(2, 0, torch.tensor([5.0, 5.0], dtype=torch.float64))
    assert c.rejected == [(1, "shape (3,), expected (2,)"), (2, "dtype float64, expected float32")]
    assert c.server.params.tolist() == [-1.0, -1.0] and c.server.version == 1


def test_huge_finite_gradients_and_graph_tensors_are_handled():
    """3e38 values passed the check (finite, yet their sum overflows float32); a tensor that
    requires grad gave a raw torch error."""
    import torch

    from hybridsgd import Coordinator, ParameterServer, sync
    from hybridsgd.core.faults import GradientCheck

    assert GradientCheck().row(torch.full((8,), 3e38)) == "overflow"
    assert GradientCheck().row(torch.ones(8)) == ""
    c = Coordinator(sync(1), ParameterServer(torch.zeros(2), "sgd", lr=1.0))
    c.request(0)
    g = torch.ones(2, requires_grad=True)
    assert c.push(0, 0, g * 2).decision.fate == "applied"
    assert c.server.params.tolist() == [-2.0, -2.0]
    c.request(0)
    c.push(0, 1, torch.full((2,), 3e38))
    assert c.rejected == [(1, "overflow")] and c.server.params.tolist() == [-2.0, -2.0]


def test_omniscient_attacks_follow_their_papers():
    """ALIE (Baruch et al. 2019): mu - z sigma of the honest gradients, z_max from n and f;
    IPM (Xie et al. 2020): -eps mu. Checked against float64 numpy."""
    from statistics import NormalDist

    import numpy as np

    from hybridsgd.core.faults import Faults

    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 7))
    workers = list(range(20))
    byz = frozenset({3, 11, 17, 19})
    honest = np.delete(x, sorted(byz), axis=0)
    for attack, params, want in (
        ("ipm", {"eps": 0.5}, -0.5 * honest.mean(0)),
        ("alie", {"z": 1.5}, honest.mean(0) - 1.5 * honest.std(0, ddof=1)),
    ):
        rows = torch.tensor(x)
        Faults(byz, attack, params, workers=20).attack_update(rows, workers)
        for i in range(20):
            expected = want if i in byz else x[i]
            assert np.allclose(rows[i].numpy(), expected, atol=1e-12)
    # z = 0: the paper's z_max; n = 20, f = 4: s = floor(11) - 4 = 7, z = Phi^-1(13 / 20)
    z = Faults(byz, "alie", {"z": 0.0}, workers=20).alie_z()
    assert z == pytest.approx(NormalDist().inv_cdf(13 / 20))


def test_a_custom_attack_sees_the_honest_gradients_of_each_update():
    """h.run(cfg, attack=fn) with faults.attack = "custom": fn(honest rows) -> the vector
    each Byzantine worker sends. -mean is IPM with eps = 1, on both backends."""
    from hybridsgd import ConfigError

    seen = []

    def minus_mean(honest):
        seen.append(honest.shape[0])
        return -honest.mean(dim=0)

    c = cfg(
        policy={"name": "sync", "workers": 4, "aggregator": "mean"},
        faults={"byzantine_workers": [0], "attack": "custom"},
        run={"updates": 10},
    )
    custom = run(c, attack=minus_mean)
    ipm = run(c.replace('faults.attack="ipm:eps=1"'))
    assert torch.allclose(custom.params, ipm.params, atol=1e-6) and set(seen) == {3}
    with pytest.raises(ConfigError, match="custom"):
        run(c)  # a custom attack without its callable
