"""Tasks, data splits and a user's own module through the public API."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hybridsgd as h
from hybridsgd.tasks import split
from hybridsgd.tasks.data import WorkerSampler
from tests.helpers import small_config


def test_mlp_digits_reaches_90_percent():
    cfg = h.Config.from_dict(
        {
            "task": {"name": "mlp-digits"},
            "policy": {"name": "backup", "workers": 8, "backups": 1},
            "optimizer": {"lr": 0.1, "momentum": 0.5},
            "run": {"updates": 250, "eval_every": 50, "target_accuracy": 0.9},
        }
    )
    s = h.run(cfg).summary
    assert s["final_accuracy"] >= 0.90
    assert s["time_to_target"] is not None and s["time_to_target"] <= s["end_time"]


@pytest.mark.parametrize("name", ["quadratic", "logistic", "mlp-mnist"])
def test_builtin_tasks_train(name):
    cfg = small_config(
        task={"name": name}, policy={"name": "sync", "workers": 4}, run={"updates": 60}
    )
    if name == "quadratic":
        cfg = cfg.replace("optimizer.lr=0.5")
    ev = h.run(cfg).trace.evals
    assert ev.loss.iloc[-1] < 0.7 * ev.loss.iloc[0]


def test_quadratic_has_the_chosen_spectrum():
    cfg = small_config(
        task={"name": "quadratic", "dim": 8, "curvature_min": 0.1, "curvature_max": 2.0}
    )
    task = h.build_task(cfg.task, seed=0)
    a = task.x_train.double()
    eig = torch.linalg.eigvalsh(a.T @ a / len(a))
    np.testing.assert_allclose(eig.numpy(), np.geomspace(0.1, 2.0, 8), rtol=1e-4)


def test_user_module_and_dataset():
    torch.manual_seed(0)
    x = torch.randn(400, 5)
    y = (x[:, 0] > 0).long()
    dataset = torch.utils.data.TensorDataset(x, y)
    task = h.Task.from_module(
        torch.nn.Linear(5, 2), dataset, torch.nn.functional.cross_entropy, test=(x, y)
    )
    cfg = small_config(
        policy={"name": "async", "workers": 3}, optimizer={"lr": 0.5}, run={"updates": 100}
    )
    s = h.run(cfg, task=task).summary
    assert s["task"] == "custom" and s["final_accuracy"] > 0.9


def test_iid_split_partitions_and_dirichlet_skews():
    labels = np.repeat(np.arange(10), 100)
    rng = np.random.default_rng(0)
    shards = split(labels, 8, "iid", 0.5, rng)
    assert sorted(np.concatenate(shards).tolist()) == list(range(1000))
    skewed = split(labels, 8, "dirichlet", 0.1, rng)
    assert sorted(np.concatenate(skewed).tolist()) == list(range(1000))
    top_share = [np.bincount(labels[s], minlength=10).max() / len(s) for s in skewed]
    assert np.mean(top_share) > 0.4  # iid shards would be near 0.1


def test_sampler_stream_is_epochs_of_the_shard():
    s = WorkerSampler(np.arange(10), 4, np.random.default_rng(0))
    first_epochs = np.concatenate([s.batch(k) for k in range(5)])
    assert sorted(first_epochs[:10].tolist()) == list(range(10))
    assert sorted(first_epochs[10:20].tolist()) == list(range(10))
    assert np.array_equal(s.batch(2), first_epochs[8:12])  # any order of asking


def test_dirichlet_needs_labels():
    with pytest.raises(h.ConfigError, match="task.split"):
        h.run(small_config(task={"name": "quadratic", "split": "dirichlet"}))


def test_more_workers_than_samples_never_hangs():
    """The iid split used to leave workers with empty shards, whose sampler looped forever.
    Now every worker streams the whole training set, and the run says so."""
    cfg = h.Config.from_dict(
        {
            "task": {"name": "logistic", "samples": 100},
            "policy": {"name": "async", "workers": 200},
            "run": {"updates": 300, "eval_every": 100},
        }
    )
    s = h.run(cfg).summary
    assert s["updates"] == 300
    assert any("every worker draws from the whole training set" in n for n in s["notes"])
    with pytest.raises(h.ConfigError) as e:
        h.run(cfg.replace("task.name=mlp-digits", "task.split=dirichlet", "policy.workers=2000"))
    assert e.value.field == "policy.workers"
    with pytest.raises(ValueError, match="empty"):
        WorkerSampler(np.empty(0, dtype=np.int64), 4, np.random.default_rng(0))


def test_digits_are_scikit_learns_load_digits():
    """The digits are read from scikit-learn's file without importing it: the same data."""
    from sklearn.datasets import load_digits

    from hybridsgd.tasks.builtin import _digits

    x, y = _digits()
    d = load_digits()
    assert np.array_equal(x, d.data.astype(np.float32)) and np.array_equal(y, d.target)
