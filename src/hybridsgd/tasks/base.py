"""A task: a model, its data and its loss, seen through one flat parameter vector.

Tasks know nothing of backends. A backend asks a task for the gradient of the loss at given
flat parameters on given minibatches; the simulator asks for several minibatches at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Task:
    """A ``torch.nn.Module``, training and test tensors, and a mean-reduced loss.

    >>> import torch
    >>> task = Task(torch.nn.Linear(3, 2), (torch.randn(20, 3), torch.randint(0, 2, (20,))),
    ...             torch.nn.functional.cross_entropy)
    >>> task.numel, task.grad(task.initial_params(), *task.batch([0, 1, 2]))[0].shape
    (8, torch.Size([8]))
    """

    def __init__(
        self,
        model: nn.Module,
        train: tuple[torch.Tensor, torch.Tensor],
        loss: LossFn,
        test: tuple[torch.Tensor, torch.Tensor] | None = None,
        metric: str | None = "accuracy",
        name: str = "custom",
        info: dict[str, Any] | None = None,
    ) -> None:
        if metric not in ("accuracy", None):
            raise ValueError("metric must be 'accuracy' or None")
        self.name = name
        self.model = model
        self.x_train, self.y_train = _tensors(train, "train")
        self.x_test, self.y_test = (
            _tensors(test, "test") if test is not None else (self.x_train, self.y_train)
        )
        if len(self.x_train) != len(self.y_train):
            raise ValueError("train inputs and targets differ in length")
        self.loss_fn = loss
        self.metric = metric
        self.info = info or {}
        self._names = [n for n, _ in model.named_parameters()]
        self._shapes = [p.shape for _, p in model.named_parameters()]
        self._sizes = [p.numel() for _, p in model.named_parameters()]
        self._buffers = {n: b for n, b in model.named_buffers()}
        self.numel = sum(self._sizes)
        self._vgrad = None

    @classmethod
    def from_module(
        cls,
        model: nn.Module,
        train: Any,
        loss: LossFn,
        test: Any = None,
        metric: str | None = "accuracy",
        name: str = "custom",
    ) -> Task:
        """A task from a user's module and data: ``(inputs, targets)`` tensors or a torch
        ``Dataset`` of ``(input, target)`` pairs (loaded into memory once)."""
        return cls(
            model, _as_pair(train), loss, _as_pair(test) if test is not None else None, metric, name
        )

    # -- parameters ---------------------------------------------------------------------------
    def initial_params(self) -> torch.Tensor:
        """The module's current parameters as one flat float32 vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()]).float()

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, shape, size in zip(self._names, self._shapes, self._sizes, strict=True):
            out[name] = flat[offset : offset + size].view(shape)
            offset += size
        return out

    def _loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(
            functional_call(self.model, (self.unflatten(flat), self._buffers), (x,)), y
        )

    # -- data -----------------------------------------------------------------------------------
    @property
    def n_train(self) -> int:
        return len(self.x_train)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.x_train[idx], self.y_train[idx]

    # -- gradients ------------------------------------------------------------------------------
    def grad(
        self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, float]:
        """Gradient of the mean loss over ``(x, y)`` at ``flat``, and that loss.

        Given several equal-size minibatches stacked along the first axis, this is their
        mean gradient in one forward/backward pass: the simulator's batching lever.
        """
        theta = flat.detach().requires_grad_(True)
        loss = self._loss(theta, x, y)
        (g,) = torch.autograd.grad(loss, theta)
        return g, float(loss.detach())

    def grads(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One gradient per minibatch: ``x`` is ``[m, batch, ...]``, the result ``[m, numel]``.

        Uses ``torch.func.vmap`` so that m gradients still cost one vectorised call; for the
        aggregators that need gradients kept apart (median, Krum, ...).
        """
        if self._vgrad is None:
            self._vgrad = vmap(grad(self._loss), in_dims=(None, 0, 0))
        return self._vgrad(flat.detach(), x, y)

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, flat: torch.Tensor) -> tuple[float, float]:
        """Test loss and test accuracy (NaN when the task has no accuracy)."""
        out = functional_call(self.model, (self.unflatten(flat), self._buffers), (self.x_test,))
        loss = float(self.loss_fn(out, self.y_test))
        if self.metric == "accuracy":
            return loss, float((out.argmax(dim=1) == self.y_test).float().mean())
        return loss, math.nan


def _tensors(pair, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        x, y = pair
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an (inputs, targets) pair") from None
    return torch.as_tensor(x), torch.as_tensor(y)


def _as_pair(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0], data[1]
    items = [data[i] for i in range(len(data))]  # a map-style torch Dataset
    return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.as_tensor(
        [y for _, y in items]
    )
