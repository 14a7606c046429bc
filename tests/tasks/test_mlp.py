"""The closed-form batched gradient of plain MLPs (hybridsgd.tasks.mlp), against autograd in
float64 on each row's own copy of the model: a reference that shares no code with it."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybridsgd import Task
from hybridsgd.tasks.mlp import BatchedMLP


def reference(model: nn.Module, rows: list[list[torch.Tensor]], xs, ys, loss_fn) -> list:
    """Per row: the model in float64 with the row's parameters, autograd on its minibatch."""
    out = []
    for params, x, y in zip(rows, xs, ys, strict=True):
        m = copy.deepcopy(model).double()
        with torch.no_grad():
            for p, v in zip(m.parameters(), params, strict=True):
                p.copy_(v.double())
        y = y.double() if y.is_floating_point() else y
        loss_fn(m(x.double()), y).backward()
        out.append([p.grad for p in m.parameters()])
    return out


MODELS = {
    "logistic": lambda: nn.Linear(6, 3),
    "relu": lambda: nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)),
    "deep, tanh, no bias": lambda: nn.Sequential(
        nn.Linear(6, 12, bias=False), nn.Tanh(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3)
    ),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("shared", [False, True])
def test_the_closed_form_equals_float64_autograd(name, loss, shared):
    torch.manual_seed(0)
    model = MODELS[name]()
    loss_fn = getattr(F, loss if loss == "cross_entropy" else "mse_loss")
    names = [n for n, _ in model.named_parameters()]
    mlp = BatchedMLP.detect(model, loss_fn, names)
    assert mlp is not None
    m, b = 5, 7
    params = [p.detach() + 0.3 * torch.randn(m, *p.shape) for p in model.parameters()]
    x = torch.randn(b, 6) if shared else torch.randn(m, b, 6)
    if loss == "cross_entropy":
        y = torch.randint(0, 3, (b,) if shared else (m, b))
    else:
        y = torch.randn(b, 3) if shared else torch.randn(m, b, 3)
    assert mlp.fits(x, y, shared)
    got = mlp.grads(params, x, y, shared)
    xs = [x] * m if shared else list(x)
    ys = [y] * m if shared else list(y)
    want = reference(model, [[p[i] for p in params] for i in range(m)], xs, ys, loss_fn)
    for k, g in enumerate(got):
        assert g.shape == (m, *params[k].shape[1:]) and g.dtype == torch.float32
        for i in range(m):
            torch.testing.assert_close(g[i].double(), want[i][k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("model", "loss"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2)), F.cross_entropy),
        (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)), F.cross_entropy),
        (nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2)), F.cross_entropy),
        (nn.Sequential(nn.Linear(4, 2)), lambda out, y: 0.5 * F.mse_loss(out, y)),
        (nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), F.cross_entropy),
        (nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), F.cross_entropy),
        (
            type("Scaled", (nn.Linear,), {"forward": lambda self, x: 2 * x @ self.weight.T})(4, 2),
            F.cross_entropy,
        ),
    ],
    ids=[
        "dropout",
        "batchnorm",
        "gelu",
        "own loss",
        "flatten",
        "activation first",
        "a Linear subclass",
    ],
)
def test_other_models_and_losses_are_not_taken(model, loss):
    names = [n for n, _ in model.named_parameters()]
    assert BatchedMLP.detect(model, loss, names) is None


def test_inputs_it_cannot_take_go_to_vmap():
    mlp = BatchedMLP.detect(nn.Linear(4, 3), F.cross_entropy, ["weight", "bias"])
    assert mlp is not None
    x = torch.randn(2, 5, 4)
    assert mlp.fits(x, torch.zeros(2, 5, dtype=torch.long), shared=False)
    assert not mlp.fits(torch.randn(2, 5, 1, 4), torch.zeros(2, 5, dtype=torch.long), False)
    assert not mlp.fits(x, torch.rand(2, 5, 3), False)  # class probabilities
    assert not mlp.fits(x, torch.full((2, 5), -100), False)  # ignore_index
    assert not mlp.fits(torch.randn(2, 5, 6), torch.zeros(2, 5, dtype=torch.long), False)


def test_a_task_with_a_plain_mlp_gives_vmaps_gradients(monkeypatch):
    """Task.grads_at takes the closed form for a plain MLP, and its rows equal the vmap
    path's, per row and with a shared minibatch."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    task = Task(model, (torch.randn(64, 8), torch.randint(0, 4, (64,))), F.cross_entropy)
    calls = []
    original = BatchedMLP.grads

    def spy(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(BatchedMLP, "grads", spy)
    rows = task.initial_params() + 0.1 * torch.randn(6, task.numel)
    x, y = task.x_train[:48].view(6, 8, 8), task.y_train[:48].view(6, 8)
    closed = task.grads_at(rows, x, y)
    closed_shared = task.grads_at(rows, x[0], y[0], shared=True)
    assert len(calls) == 2
    task._mlp = False  # the vmap path
    torch.testing.assert_close(closed, task.grads_at(rows, x, y), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        closed_shared, task.grads_at(rows, x[0], y[0], shared=True), rtol=1e-5, atol=1e-6
    )
    assert len(calls) == 2
