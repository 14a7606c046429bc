"""Batching across versions (hybridsgd.backends.sim.versions): the batched replay equals the
one-at-a-time replay to float tolerance for every policy family, staleness rule, robust
aggregator and fault, and its plan keeps each gradient inside its window."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybridsgd import Config, run
from hybridsgd.backends.sim import versions
from hybridsgd.tasks.base import Task
from tests.helpers import make_config

CASES = {
    "async": {"policy": {"name": "async"}},
    "async-momentum-inverse": {
        "policy": {"name": "async", "staleness": "inverse"},
        "optimizer": {"momentum": 0.9},
    },
    "async-max-staleness": {"policy": {"name": "async", "max_staleness": 6}},
    "k_async": {"policy": {"name": "k_async", "k": 3}},
    "ssp": {"policy": {"name": "ssp", "staleness_bound": 2}},
    "ringmaster-stops": {"policy": {"name": "ringmaster", "delay_threshold": 5, "stops": True}},
    "hybrid": {"policy": {"name": "hybrid", "threshold": "step:at=60"}},
    "k_async-median": {"policy": {"name": "k_async", "k": 3, "aggregator": "median"}},
    "k_async-krum": {"policy": {"name": "k_async", "k": 5, "aggregator": "krum:f=1"}},
    "async-byzantine-nan": {
        "policy": {"name": "async"},
        "faults": {"byzantine_workers": [1], "attack": "sign-flip", "nan_workers": [3]},
    },
    "async-label-flip": {
        "policy": {"name": "async"},
        "faults": {"byzantine_workers": [0, 2], "attack": "label-flip"},
    },
    "async-clip": {"policy": {"name": "async"}, "optimizer": {"max_grad_norm": 0.5}},
    # diverges: lone gradients stop being finite and are rejected, whether a batch or the
    # update's own check finds them
    "async-diverging": {"policy": {"name": "async"}, "optimizer": {"lr": 1e6}},
    # (eps 1e-4: at the default 1e-8, a coordinate whose gradients are near zero steps by
    # about lr whatever their sign, so rounding alone moved parameters by 0.018 here)
    "async-adam": {
        "policy": {"name": "async"},
        "optimizer": {"name": "adam", "lr": 0.01, "options": {"eps": 1e-4}},
    },
    "async-batchnorm": {
        "policy": {"name": "async"},
        # (batch 32: with BatchNorm over 8 samples, a change of 1e-7 in the parameters moved
        # a gradient by 0.05, so no two computations could agree after 70 updates)
        "task": {"name": "cnn-digits", "norm": "batch", "channels": [4, 8], "batch_size": 32},
    },
}


def config(case: str, workers: int = 12, updates: int = 120) -> Config:
    base = {
        "task": {"name": "mlp-digits", "batch_size": 8},
        "policy": {"workers": workers},
        "optimizer": {"lr": 0.05},
        "timing": {"compute": "exp:mu=1", "speed": "1x6,3x6" if workers == 12 else ""},
        "run": {"updates": updates, "eval_every": 40, "seed": 3},
    }
    return make_config(base, **CASES[case])


@pytest.fixture
def counted(monkeypatch):
    """Calls of the batched gradient (so that a test knows the path ran), with batches of 2
    allowed, so that small runs form them."""
    calls = []
    original = Task.grads_at

    def spy(self, rows, x, y, flat=True):
        calls.append(len(rows))
        return original(self, rows, x, y, flat)

    monkeypatch.setattr(Task, "grads_at", spy)
    monkeypatch.setattr(versions, "MIN_BATCH", 2)
    return calls


@pytest.mark.parametrize("case", CASES)
def test_batched_replay_equals_one_at_a_time(case, counted, monkeypatch):
    batched = run(config(case), progress=False)
    assert counted, "the batched path did not run"
    monkeypatch.setattr(versions, "ENABLED", False)
    n = len(counted)
    alone = run(config(case), progress=False)
    assert len(counted) == n  # and here it did not
    # (a diverging run amplifies rounding: its parameters reach about 70)
    tol = 1e-3 if case == "async-diverging" else 1e-4
    torch.testing.assert_close(batched.params, alone.params, atol=2e-5, rtol=tol)
    # the schedule, and every gradient's fate and reason, are the same
    a, b = batched.trace.gradients, alone.trace.gradients
    assert a.equals(b)
    assert batched.summary["gradients"] == alone.summary["gradients"]
    np.testing.assert_allclose(batched.trace.evals.loss, alone.trace.evals.loss, rtol=1e-4)


@pytest.mark.parametrize(
    ("task", "smallest"),
    [({}, versions.MIN_BATCH_CLOSED_FORM), ({"name": "cnn-digits", "channels": [4, 8]}, 8)],
    ids=["plain MLP (closed form)", "CNN (vmap)"],
)
def test_default_settings_batch_a_large_async_run(counted, monkeypatch, task, smallest):
    """At the default smallest batches, async with 64 workers batches most of its
    gradients: in pairs and up for a plain MLP, in eights and up for other models."""
    monkeypatch.setattr(versions, "MIN_BATCH", 8)
    cfg = config("async", workers=64, updates=300)
    cfg = cfg.replace(*[f"task.{k}={v}" for k, v in task.items()])
    batched = run(cfg, progress=False)
    assert counted and min(counted) >= smallest and sum(counted) > 150
    monkeypatch.setattr(versions, "ENABLED", False)
    torch.testing.assert_close(
        batched.params, run(cfg, progress=False).params, atol=2e-5, rtol=1e-4
    )


def test_stab_keeps_every_gradient_in_its_window_with_fewest_batches():
    rng = np.random.default_rng(0)
    reads = rng.integers(0, 200, 300)
    updates = reads + rng.geometric(0.1, 300)
    queue = np.lexsort((np.arange(300), updates)).tolist()
    batches = versions.stab(queue, reads.tolist(), updates.tolist(), limit=10**6)
    assert sorted(c for _, chosen in batches for c in chosen) == list(range(300))
    for v, chosen in batches:
        assert all(reads[c] <= v <= updates[c] for c in chosen)
    # fewest: the first gradient of each batch has its deadline there, and those gradients'
    # windows are pairwise disjoint, so any set of versions that meets every window needs
    # at least one version per batch
    firsts = [(reads[chosen[0]], updates[chosen[0]], v) for v, chosen in batches]
    assert all(d == v for _, d, v in firsts)
    firsts.sort()
    assert all(firsts[i][1] < firsts[i + 1][0] for i in range(len(firsts) - 1))


def test_checkpoint_deadlines_keep_batches_inside_one_interval():
    reads = np.array([0, 5, 9, 10, 19, 20])
    updates = np.array([30, 12, 25, 11, 40, 21])
    due = versions.deadlines(reads, updates, 10)
    assert due.tolist() == [9, 9, 9, 11, 19, 21]
    assert versions.deadlines(reads, updates, 0) is updates


def test_versions_held_counts_overlapping_windows():
    reads = np.array([0, 1, 1, 5])
    last = np.array([4, 2, 6, 5])
    # versions 0 (to 4), 1 (to 6) and 5 (to 5): three at once at 5? 0 ends at 4, so two
    assert versions.versions_held(reads, last, 10) == 2
    assert versions.versions_held(np.array([0, 2]), np.array([3, 3]), 5) == 2


def test_batch_limit_follows_model_size():
    assert versions.batch_limit(203_530, 32, 7_000) == 19  # mlp-mnist: 4M floats of rows
    assert versions.batch_limit(50, 32, 10**6) == versions.MAX_BATCH
    assert versions.batch_limit(10**8, 32, 10**6) == 1
    assert versions.batch_limit(1000, 32, 64) == 2  # two minibatches fill a stacked pass


class _Scalar(torch.nn.Module):
    """A model torch.func.vmap cannot batch: it reads a tensor's value as a Python float."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 + 0.0 * float(x.abs().max())  # .item(): data-dependent Python
        return self.linear(x) * scale


def test_a_model_vmap_cannot_batch_runs_one_at_a_time(counted, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(256, 4, generator=g), torch.randint(0, 3, (256,), generator=g)

    def make() -> Task:
        torch.manual_seed(0)
        return Task(_Scalar(), (x, y), torch.nn.functional.cross_entropy)

    cfg = Config.from_dict(
        {
            "task": {"batch_size": 8},
            "policy": {"name": "async", "workers": 12},
            "run": {"updates": 60, "eval_every": 60},
        }
    )
    task = make()
    with pytest.raises(Exception):  # noqa: B017 (torch.func's error type is not public)
        task.grads_at(task.initial_params().repeat(2, 1), x[:16].view(2, 8, 4), y[:16].view(2, 8))
    batched = run(cfg, task=make(), progress=False)
    assert counted  # it was tried, failed, and the run went on
    monkeypatch.setattr(versions, "ENABLED", False)
    alone = run(cfg, task=make(), progress=False)
    assert torch.equal(batched.params, alone.params)  # the same computations, one at a time
