"""A user's own model and data: every input that cannot work is one line naming what is
expected, raised when the Task is made (not minutes later in a worker)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

import hybridsgd as h
from hybridsgd.errors import ConfigError

X = torch.randn(64, 4)
Y = torch.randint(0, 3, (64,))


def linear() -> nn.Module:
    return nn.Linear(4, 3)


class DictDataset(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i):
        return {"x": X[i], "y": Y[i]}


# (case, make the task, the field named, words the line must hold)
BAD = [
    (
        "loss without mean",
        lambda: h.Task.from_module(linear(), (X, Y), nn.CrossEntropyLoss(reduction="none")),
        "loss",
        "one number",
    ),
    (
        "dataset of dicts",
        lambda: h.Task.from_module(linear(), DictDataset(), F.cross_entropy),
        "train",
        "(input, target) pairs",
    ),
    (
        "empty dataset",
        lambda: h.Task.from_module(
            linear(), torch.utils.data.TensorDataset(X[:0], Y[:0]), F.cross_entropy
        ),
        "train",
        "at least one",
    ),
    (
        "test targets of the wrong length",
        lambda: h.Task.from_module(linear(), (X, Y), F.cross_entropy, test=(X, Y[:10])),
        "test",
        "one target per input",
    ),
    (
        "model without parameters",
        lambda: h.Task.from_module(nn.ReLU(), (X, Y), F.cross_entropy),
        "model",
        "at least one parameter",
    ),
    (
        "not a module",
        lambda: h.Task.from_module("model", (X, Y), F.cross_entropy),
        "model",
        "torch.nn.Module",
    ),
    (
        "loss not callable",
        lambda: h.Task.from_module(linear(), (X, Y), "cross_entropy"),
        "loss",
        "loss(outputs, targets)",
    ),
    (
        "inputs the model cannot take",
        lambda: h.Task.from_module(nn.Linear(5, 3), (X, Y), F.cross_entropy),
        "model",
        "inputs the model accepts",
    ),
    (
        "accuracy on regression targets",
        lambda: h.Task.from_module(linear(), (X, torch.randn(64, 3)), F.mse_loss),
        "metric",
        "metric=None",
    ),
    (
        "not a pair",
        lambda: h.Task.from_module(linear(), 3, F.cross_entropy),
        "train",
        "(inputs, targets) pair",
    ),
]


@pytest.mark.parametrize("make,field,words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_bad_input_is_one_line_when_the_task_is_made(make, field, words):
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.field == field
    assert words in str(e.value) and "\n" not in str(e.value)


def test_numpy_arrays_are_accepted_and_the_probe_leaves_the_model_alone():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 3))
    stats = model[1].running_mean.clone()
    state = torch.random.get_rng_state()
    task = h.Task.from_module(model, (X.double().numpy(), Y.numpy()), F.cross_entropy)
    assert task.x_train.dtype == torch.float32 and task.n_train == 64
    assert model.training and torch.equal(model[1].running_mean, stats)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert np.isfinite(h.run(_cfg(), task=task).summary["final_loss"])


def _cfg(*sets: str):
    return h.Config.from_dict({}, ["policy.workers=2", "run.updates=3", "task.batch_size=8", *sets])


def test_run_names_a_wrong_config_or_task_type():
    with pytest.raises(ConfigError, match=r"^config: expected a hybridsgd\.Config"):
        h.run(42)
    with pytest.raises(ConfigError, match=r"^task: .*h\.Task\.from_module"):
        h.run(_cfg(), task=linear())
    with pytest.raises(ConfigError, match=r"^run directory: nothere: no such directory"):
        h.resume("nothere")


class TrainsBadly(nn.Module):
    """Fine in eval mode (the probe), raises in training mode (in the workers)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        if self.training:
            raise RuntimeError("boom in training")
        return self.lin(x)


def test_a_model_that_raises_in_local_workers_is_said_once(capfd):
    task = h.Task.from_module(TrainsBadly(), (X, Y), F.cross_entropy)
    with pytest.raises(h.WorkerLost, match="boom in training") as e:
        h.run(_cfg("policy.workers=3", "run.backend=local"), task=task)
    assert "the model or its loss raised" in str(e.value) and "in forward" in str(e.value)
    out, err = capfd.readouterr()
    assert "boom" not in out + err  # no worker printed its traceback
