"""Exact time to target: the first update that reaches the target, whatever run.eval_every."""

from __future__ import annotations

import pytest
import torch

from hybridsgd import Config
from hybridsgd.record import Evals
from hybridsgd.runner import resume, run, run_grid
from hybridsgd.target import TargetSearch
from tests.test_checkpoint import stop_at


def base(policy: dict, **run_) -> Config:
    return Config.from_dict(
        {
            "task": {"name": "mlp-digits", "batch_size": 16},
            "policy": policy,
            "optimizer": {"lr": 0.1, "momentum": 0.5},
            "timing": {"compute": "pareto:alpha=2.5,scale=1"},
            "run": {"updates": 120, "target_accuracy": 0.9, "seed": 3} | run_,
        }
    )


def hit(summary: dict) -> tuple:
    return summary["time_to_target"], summary["updates_to_target"]


# (policy, lr, target): each crosses its target between evaluations every 25 updates
CASES = {
    "sync": ({"name": "sync", "workers": 8}, 0.1, 0.93),
    "backup": ({"name": "backup", "workers": 8, "backups": 2}, 0.1, 0.93),
    "async": ({"name": "async", "workers": 8}, 0.03, 0.85),
    "hybrid-partition": (
        {
            "name": "hybrid",
            "workers": 4,
            "reading": "partition",
            "threshold": "linear:start=0,end=60",
        },
        0.1,
        0.85,
    ),
}


def case(name: str, **run_) -> Config:
    policy, lr, target = CASES[name]
    return base(policy, **run_).replace(f"optimizer.lr={lr}", f"run.target_accuracy={target}")


@pytest.mark.parametrize("name", CASES)
def test_time_to_target_does_not_depend_on_the_evaluation_grid(name):
    every = run(case(name, eval_every=1), progress=False).summary
    coarse = run(case(name, eval_every=25), progress=False).summary
    assert every["time_to_target"] is not None, "the case must reach its target"
    assert every["updates_to_target"] % 25 != 0, "the case must cross between evaluations"
    assert hit(coarse) == hit(every)
    assert coarse["time_to_target_resolution"] == "update"


def test_a_grid_replay_finds_each_runs_crossing_exactly():
    lrs = [0.05, 0.1, 0.2]
    cfgs = [case("sync", eval_every=25).replace(f"optimizer.lr={lr}") for lr in lrs]
    fine = [case("sync", eval_every=1).replace(f"optimizer.lr={lr}") for lr in lrs]
    grouped = run_grid(cfgs)
    assert grouped[0].summary.get("replayed_with") == 3
    for g, c in zip(grouped, run_grid(fine), strict=True):
        assert hit(g.summary) == hit(c.summary)
        assert g.summary["updates_to_target"] is not None


@pytest.mark.slow
def test_a_run_resumed_between_evaluations_finds_the_same_crossing(tmp_path):
    # evaluations every 25 and a checkpoint at 30: it holds versions 26-30, which the search
    # for the crossing after it (at 39) evaluates after the resume
    cfg = case("sync", eval_every=25, checkpoint_every=30)
    result = run(cfg, out=tmp_path / "whole", progress=False)
    whole = result.summary
    assert 30 < whole["updates_to_target"] < 50
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out=tmp_path / "cut", progress=stop_at(35))
    resumed = resume(tmp_path / "cut")
    assert resumed.summary["resumed_from"] == 30
    assert hit(resumed.summary) == hit(whole)
    # versions 26-30 were evaluated from the checkpoint's copies, 31-39 after the resume
    assert resumed.trace.evals.equals(result.trace.evals)
    assert 26 in resumed.trace.evals.version.tolist()


def test_the_search_takes_the_first_kept_version_at_the_target_not_a_later_one():
    # accuracies along versions 1..9 go up, down and up again: the first crossing is 3
    acc = {1: 0.1, 2: 0.5, 3: 0.92, 4: 0.6, 5: 0.95, 6: 0.7, 7: 0.8, 8: 0.9, 9: 0.99}
    evals = Evals()
    evals.add(0, 0.0, 2.0, 0.0)
    seen = []

    def evaluate(p: torch.Tensor) -> tuple[float, float]:
        v = int(p.item())
        seen.append(v)
        return 1.0, acc[v]

    s = TargetSearch(0.9, evaluate, evals)
    for v in range(1, 10):
        s.keep(v, 10.0 * v, torch.tensor([float(v)]))
    evals.add(10, 100.0, 0.1, 0.97)
    s.evaluated(evals)
    assert evals.version == [0, 1, 2, 3, 10]
    assert evals.time == [0.0, 10.0, 20.0, 30.0, 100.0]
    assert seen == [1, 2, 3]  # nothing past the first crossing is evaluated
    assert not s.active and not s.kept
    s.keep(11, 110.0, torch.tensor([11.0]))  # done: later versions are not kept
    assert not s.kept


def test_exact_finds_a_crossing_that_falls_back_before_the_next_evaluation():
    # versions 1-4 between the evaluations at 0 and 5: 2 reaches the target, 5 is below it
    acc = {1: 0.5, 2: 0.95, 3: 0.6, 4: 0.7}
    found = {}
    for search in ("exact", "interval"):
        evals = Evals()
        evals.add(0, 0.0, 2.0, 0.0)
        s = TargetSearch(0.9, lambda p: (1.0, acc[int(p.item())]), evals, search=search)
        for v in range(1, 5):
            s.keep(v, float(v), torch.tensor([float(v)]))
        evals.add(5, 5.0, 1.0, 0.8)
        s.evaluated(evals)
        found[search] = (evals.version, s.active)
    assert found["exact"] == ([0, 1, 2, 5], False)
    assert found["interval"] == ([0, 5], True)  # still searching: it misses version 2


def test_an_evaluation_below_the_target_releases_the_kept_versions():
    evals = Evals()
    evals.add(0, 0.0, 2.0, 0.0)
    s = TargetSearch(0.9, lambda p: (0.0, 0.5), evals)
    s.keep(1, 1.0, torch.zeros(3))
    evals.add(2, 2.0, 1.0, 0.5)
    s.evaluated(evals)
    assert not s.kept and s.active and evals.version == [0, 2]
    # no target, or one the initial evaluation already reached: nothing is kept
    assert not TargetSearch(None, lambda p: (0.0, 1.0), evals).active
    assert not TargetSearch(0.4, lambda p: (0.0, 1.0), evals).active
