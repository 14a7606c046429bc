"""Batching across configurations (hybridsgd.backends.sim.grid): an lr/momentum grid that
shares a schedule, replayed in one pass, equals separate runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridsgd import Config, run
from hybridsgd.app.sweep import run_many
from hybridsgd.backends.sim.grid import BatchedSGD, grid_jobs, grid_key
from hybridsgd.runner import run_grid

POLICIES = {
    "sync": {"name": "sync"},
    "backup-drop": {"name": "backup", "backups": 2, "late": "drop"},
    "async": {"name": "async"},
    "k_async-inverse": {"name": "k_async", "k": 3, "staleness": "inverse"},
    "ssp": {"name": "ssp", "staleness_bound": 1},
    "hybrid": {"name": "hybrid", "threshold": "step:at=30"},
    "rennala": {"name": "rennala", "batch": 5},
}


def configs(policy: dict, optimizer: dict | None = None, task: str = "mlp-digits"):
    base = Config.from_dict(
        {
            "task": {"name": task, "batch_size": 8},
            "policy": {"workers": 6, **policy},
            "optimizer": optimizer or {},
            "timing": {"compute": "exp:mu=1", "speed": "1x3,2x3"},
            "run": {"updates": 60, "eval_every": 20, "seed": 4},
        }
    )
    grid = [(0.01, 0.0), (0.05, 0.0), (0.02, 0.9), (0.1, 0.5)]
    return [base.replace(f"optimizer.lr={lr}", f"optimizer.momentum={m}") for lr, m in grid]


def assert_same_runs(together, alone, grid: int = 0):
    for a, b in zip(together, alone, strict=True):
        assert a.summary["replayed_with"] == (grid or len(together))
        torch.testing.assert_close(a.params, b.params, atol=2e-5, rtol=1e-4)
        assert a.trace.gradients.equals(b.trace.gradients)
        pd_a, pd_b = a.trace.updates, b.trace.updates
        assert pd_a.drop(columns=["lr", "momentum"]).equals(pd_b.drop(columns=["lr", "momentum"]))
        np.testing.assert_array_equal(pd_a.lr, pd_b.lr)
        np.testing.assert_array_equal(pd_a.momentum, pd_b.momentum)
        np.testing.assert_allclose(a.trace.evals.loss, b.trace.evals.loss, rtol=1e-4)
        assert a.summary["gradients"] == b.summary["gradients"]


@pytest.mark.parametrize("policy", POLICIES)
def test_a_grid_in_one_pass_equals_separate_runs(policy):
    cfgs = configs(POLICIES[policy])
    assert_same_runs(run_grid(cfgs), [run(c, progress=False) for c in cfgs])


@pytest.mark.parametrize(
    "optimizer",
    # (Adam's eps 1e-4: at the default 1e-8 a coordinate whose gradients are near zero steps
    # by about lr whatever their sign, so rounding differences of 1e-7 in a gradient become
    # parameter differences of 1e-4 and more)
    [{"weight_decay": 0.01}, {"name": "adam", "lr": 0.01, "options": {"eps": 1e-4}}],
    ids=["sgd-weight-decay", "adam (one server each)"],
)
def test_other_optimizers(optimizer):
    cfgs = configs({"name": "k_async", "k": 2}, optimizer)
    if optimizer.get("name") == "adam":  # the grid's momentum is SGD's: Adam varies lr only
        cfgs = [c.replace("optimizer.momentum=0") for c in cfgs]
    assert_same_runs(run_grid(cfgs), [run(c, progress=False) for c in cfgs])


def test_a_diverging_config_leaves_the_pass_and_runs_alone():
    cfgs = configs({"name": "async"})
    cfgs.append(cfgs[0].replace("optimizer.lr=1e35"))
    together = run_grid(cfgs)
    alone = run(cfgs[-1], progress=False)
    assert "replayed_with" not in together[-1].summary  # run on its own
    assert together[-1].summary["gradients"] == alone.summary["gradients"]
    assert together[-1].summary["gradients"]["rejected"] > 0  # what run does with NaN
    assert_same_runs(together[:-1], [run(c, progress=False) for c in cfgs[:-1]], grid=5)


def test_batched_sgd_is_torch_sgd_row_by_row():
    torch.manual_seed(0)
    lrs, mus, wd = [0.1, 0.03, 0.5], [0.0, 0.9, 0.5], 0.01
    start = torch.randn(3, 7)
    sgd = BatchedSGD(start.clone(), lrs, mus, wd)
    refs = []
    for i in range(3):
        p = torch.nn.Parameter(start[i].clone())
        refs.append((p, torch.optim.SGD([p], lr=lrs[i], momentum=mus[i], weight_decay=wd)))
    for _ in range(5):
        g = torch.randn(3, 7)
        sgd.step([0, 1, 2], g)
        for i, (p, opt) in enumerate(refs):
            p.grad = g[i].clone()
            opt.step()
    for i, (p, _) in enumerate(refs):
        torch.testing.assert_close(sgd.params[i], p.detach(), atol=1e-6, rtol=1e-6)


def test_which_configs_share_a_pass():
    a, b = configs({"name": "async"})[:2]
    assert grid_key(a) == grid_key(b) is not None
    assert grid_key(a.replace("run.seed=5")) != grid_key(a)  # another schedule
    for change in (
        ["optimizer.max_grad_norm=1"],
        ["faults.nan_workers=[1]"],
        ["run.backend=local"],
        ["policy.name=k_async", "policy.k=3", "policy.aggregator=median"],
        ["run.log=['tensorboard']"],
    ):
        assert grid_key(a.replace(*change)) is None, change
    jobs = grid_jobs([a, a.replace("run.seed=5"), b, a.replace("faults.nan_workers=[1]")])
    assert jobs == [[0, 2], [1], [3]]
    # a model whose gradients are compute-bound runs faster apart (GRID_MAX_NUMEL)
    big = [c.replace("task.name=mlp-mnist") for c in (a, b)]
    assert grid_key(big[0]) == grid_key(big[1]) and grid_jobs(big) == [[0], [1]]


def test_a_grouped_sweep_replays_its_grid_together_and_keeps_order():
    cfgs = configs({"name": "async"})[:3]
    other = cfgs[0].replace("run.seed=9")
    outcomes = run_many([cfgs[0], other, cfgs[1], cfgs[2]], jobs=1, grouped=True)
    assert [o.config.run.seed for o in outcomes] == [4, 9, 4, 4]
    assert [o.trace.summary.get("replayed_with") for o in outcomes] == [3, None, 3, 3]
    alone = run(cfgs[1], progress=False).params
    torch.testing.assert_close(outcomes[2].params, alone, atol=2e-5, rtol=1e-4)


def test_each_key_a_section_declares_apart_keeps_a_run_out_of_a_grid():
    """grid_key reads the sections' declarations (hybridsgd.config: _apart, _varies), not a
    list of its own: every key declared apart, set, makes a run alone; the keys declared
    varying may differ within a pass, and nothing else may."""
    from hybridsgd.config import grid_rules

    a = configs({"name": "async"})[0]
    examples = {
        "task.split": "task.split=dirichlet",
        "task.norm": "task.norm=batch",
        "task.custom": "task.custom=mine",
        "optimizer.max_grad_norm": "optimizer.max_grad_norm=1",
        # local steps (issue 36): the grid's pass computes plain gradients
        "worker.steps": "worker.steps=2",
        "worker.optimizer": "worker.optimizer=adamw",
        "worker.lr": "worker.lr=0.5",
        "worker.momentum": "worker.momentum=0.5",
        "worker.weight_decay": "worker.weight_decay=0.1",
        "worker.options": "worker.options={dampening=0.1}",
        "worker.reset_state": "worker.reset_state=true",
        "worker.quantize": "worker.quantize=int8",
        "faults.byzantine": "faults.byzantine=0.25",
        "faults.byzantine_workers": "faults.byzantine_workers=[1]",
        "faults.nan_workers": "faults.nan_workers=[1]",
        "faults.crash_rate": "faults.crash_rate=0.01",
        "faults.crashes": "faults.crashes=[{worker=1,time=5}]",
        "run.backend": "run.backend=local",
        "run.checkpoint_every": "run.checkpoint_every=5",
        "run.device": "run.device=cuda",
        "run.local.devices": "run.local.devices=['cuda:0']",
        "run.log": "run.log=['tensorboard']",
    }
    declared = {f"{name}.{key}": rule for name, s in a.sections() for key, rule, _ in grid_rules(s)}
    assert {k for k, r in declared.items() if r == "apart"} == set(examples)
    assert {k for k, r in declared.items() if r == "varies"} == {
        "optimizer.lr",
        "optimizer.momentum",
    }
    for key, change in examples.items():
        cfg = a.replace(change) if key not in ("run.device", "run.local.devices") else None
        if cfg is None:  # no GPU here: the config refuses the value; the section decides
            *tables, name = key.split(".")
            cfg = a.replace()
            section = cfg
            for t in tables:
                section = getattr(section, t)
            setattr(section, name, ["cuda:0"] if name == "devices" else "cuda")
        assert grid_key(cfg) is None, key
    assert grid_key(a.replace("task.norm=group")) is not None  # only batch norm couples rows
    assert grid_key(a.replace("optimizer.lr=0.7", "optimizer.momentum=0.5")) == grid_key(a)
