"""A user's own module: BatchNorm semantics on every backend, dtypes, frozen and missing
parameters, and where the trained weights end up."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import hybridsgd as h
from hybridsgd.core.aggregators import AGGREGATORS
from tests.helpers import make_config


def bn_cnn() -> nn.Module:
    """A small CNN with BatchNorm on 8x8 digits (module level: local workers unpickle it)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def digits(n_train: int = 600):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    return (x[:n_train], y[:n_train]), (x[1500:], y[1500:])


def bn_task() -> h.Task:
    train, test = digits()
    return h.Task.from_module(bn_cnn(), train, nn.functional.cross_entropy, test=test)


BASE = {
    "policy": {"name": "sync", "workers": 4},
    "task": {"batch_size": 16},
    "optimizer": {"lr": 0.05},
    "run": {"updates": 12, "eval_every": 6, "time_unit": 0.002},
}


def config(**policy) -> h.Config:
    return make_config(BASE, policy=policy)


def reference_sync_bn(task: h.Task, cfg: h.Config, updates: int) -> torch.Tensor:
    """Sync SGD written out by hand: each worker's gradient from a fresh copy of the model
    in training mode on its own minibatch alone (its own batch statistics), then the mean."""
    import copy

    feeds = h.tasks.samplers(task.y_train.numpy(), 4, cfg.task.batch_size, "iid", 1.0, cfg.run.seed)
    model = copy.deepcopy(bn_cnn())
    params = [p for p in model.parameters()]
    for k in range(updates):
        grads = []
        for w in range(4):
            x, y = task.batch(feeds[w].batch(k))
            model.train()
            model.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            grads.append([p.grad.clone() for p in params])
        with torch.no_grad():
            for i, p in enumerate(params):
                p -= cfg.optimizer.lr * sum(g[i] for g in grads) / 4
    return torch.cat([p.detach().reshape(-1) for p in params])


def test_batchnorm_uses_each_workers_own_minibatch_in_the_simulator():
    """The simulator used to stack all W x b samples into one BatchNorm batch."""
    task, cfg = bn_task(), config()
    sim = h.run(cfg, task=task)
    want = reference_sync_bn(task, cfg, 12)
    assert torch.allclose(sim.params, want, atol=1e-5)


def test_batchnorm_simulator_equals_local_backend():
    """Per-worker statistics on both backends: the parameters agree to float tolerance
    (they differed by 0.077 after 20 updates)."""
    cfg = config().replace("run.updates=20", "run.eval_every=10")
    sim = h.run(cfg, task=bn_task())
    local = h.run(cfg.replace("run.backend=local"), task=bn_task())
    assert torch.allclose(sim.params, local.params, atol=1e-5)
    assert sim.summary["final_loss"] == pytest.approx(local.summary["final_loss"], rel=1e-4)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_batchnorm_runs_with_every_aggregator(name):
    """A robust rule computes one row per gradient with vmap: BatchNorm used to raise torch's
    'in-place operation' error there."""
    spec = {"krum": "krum:f=1", "multi-krum": "multi-krum:f=1"}.get(name, name)
    r = h.run(config(workers=5, aggregator=spec).replace("run.updates=4"), task=bn_task())
    assert np.isfinite(r.summary["final_loss"])
    assert r.summary["gradients"]["rejected"] == 0


def test_batchnorm_evaluation_recomputes_running_statistics_from_training_data():
    """Evaluation is in eval mode with running statistics recomputed at the parameters
    evaluated, from the first training samples, whatever the module held before."""
    task = bn_task()
    flat = task.initial_params()
    first = task.evaluate(flat)
    bn = task.model[2]
    bn.running_mean.fill_(100.0)  # garbage left by anything else
    assert task.evaluate(flat) == first
    with torch.no_grad():  # the first 1,024 training samples (all 600 here), at `flat`
        h_ = task.model[1](task.model[0](task.x_train[: task.CALIBRATION_SAMPLES]))
    assert torch.allclose(bn.running_mean, h_.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(bn.running_var, h_.var(dim=(0, 2, 3), unbiased=True), atol=1e-6)
    assert task.model.training  # the module's mode is restored


def test_the_users_module_holds_the_trained_weights():
    model = bn_cnn()
    train, test = digits()
    task = h.Task.from_module(model, train, nn.functional.cross_entropy, test=test)
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    result = h.run(config(), task=task)
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert torch.equal(after, result.params) and not torch.equal(after, before)
    again = h.run(config(), task=task)  # a second run starts where the task was made
    assert torch.equal(again.params, result.params)


def test_frozen_parameters_stay_frozen_and_are_not_sent():
    model = bn_cnn()
    model[1].weight.requires_grad_(False)
    frozen = model[1].weight.detach().clone()
    train, test = digits()
    task = h.Task.from_module(model, train, nn.functional.cross_entropy, test=test)
    assert task.numel == sum(p.numel() for p in model.parameters() if p.requires_grad)
    r = h.run(config(aggregator="median"), task=task)
    assert np.isfinite(r.summary["final_loss"]) and torch.equal(model[1].weight, frozen)


def test_float64_inputs_are_cast_and_float64_models_refused_in_one_line():
    train, test = digits()
    x64 = train[0].double().numpy()  # numpy's default dtype
    task = h.Task.from_module(
        bn_cnn(), (torch.from_numpy(x64), train[1]), nn.functional.cross_entropy
    )
    assert task.x_train.dtype == torch.float32
    with pytest.raises(ValueError, match=r"float64.*model\.float\(\)") as e:
        h.Task.from_module(bn_cnn().double(), train, nn.functional.cross_entropy)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["none", "frozen"])
def test_a_model_without_trainable_parameters_is_refused_in_one_line(kind):
    model = nn.Sequential(nn.Flatten()) if kind == "none" else bn_cnn().requires_grad_(False)
    train, _ = digits()
    with pytest.raises(ValueError, match="no trainable parameters") as e:
        h.Task.from_module(model, train, nn.functional.cross_entropy)
    assert "\n" not in str(e.value)


def test_a_run_on_a_users_task_records_it_and_is_not_rerun_as_a_builtin(tmp_path, capsys):
    """config.toml used to say task.name = "mlp-digits", so rerunning it from the CLI quietly
    trained a different model."""
    from hybridsgd.cli import main

    out = tmp_path / "r"
    h.run(config().replace("run.updates=2"), task=bn_task(), out=out)
    saved = h.Config.load(out / "config.toml")
    assert saved.task.custom.startswith("custom: ") and "sha256" in saved.task.custom
    assert main(["run", str(out / "config.toml"), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridsgd: error: task.custom:") and "from Python" in err
    again = h.run(saved, task=bn_task())  # from Python, with the task, it reruns
    assert again.summary["config"]["task"]["custom"] == saved.task.custom


def _digits_like(n: int = 200, classes: int = 10):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 8, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("where", ["train", "test"])
def test_nan_in_the_data_is_refused_naming_the_first_bad_sample(where):
    """NaN in 1% of the inputs used to read "diverged: true, diverged_at: 0 ... lower
    optimizer.lr"; in the training inputs only, 27.7% of the gradients were rejected
    without a word."""
    x, y = _digits_like()
    xt, yt = _digits_like(50)
    bad = x if where == "train" else xt
    bad[[17, 40]] = torch.nan
    with pytest.raises(h.ConfigError) as e:
        h.Task.from_module(nn.Linear(8, 10), (x, y), F.cross_entropy, test=(xt, yt))
    what = "training" if where == "train" else "test"
    assert str(e.value).startswith(f"{what} data: {what} input 17 holds NaN (2 of ")
    x, y = _digits_like()
    x[3, 2] = torch.inf
    with pytest.raises(h.ConfigError, match="training input 3 holds an infinite value"):
        h.Task.from_module(nn.Linear(8, 10), (x, y), F.cross_entropy)


def test_targets_outside_the_models_classes_are_refused_naming_the_first():
    """They used to end a simulated run in torch's "IndexError: Target 10 is out of
    bounds." after a 38-line traceback, with nothing written."""
    x, y = _digits_like(classes=11)  # labels 0-10 for a model of 10 outputs
    first = int(torch.nonzero(y == 10)[0])
    with pytest.raises(h.ConfigError) as e:
        h.Task.from_module(nn.Linear(8, 10), (x, y), F.cross_entropy)
    said = str(e.value)
    assert said.startswith(f"training data: training target {first} is class 10, but the model")
    assert "(classes 0-9;" in said and "\n" not in said
    y[y == 10] = -1  # below zero, too
    with pytest.raises(h.ConfigError, match=f"training target {first} is class -1"):
        h.Task.from_module(nn.Linear(8, 10), (x, y), F.cross_entropy)
