"""Gradients of plain MLPs for many parameter vectors at once, by their closed-form backward
pass: the simulator's batched gradients (:meth:`hybridsgd.tasks.Task.grads_at`) without
``torch.func.vmap``.

A model qualifies when it is an ``nn.Linear``, or an ``nn.Sequential`` of ``nn.Linear``,
``nn.ReLU`` and ``nn.Tanh`` (all parameters trainable, no buffers), its loss is
``torch.nn.functional.cross_entropy`` (class indices) or ``torch.nn.functional.mse_loss``,
both with their default mean reduction, and its inputs are feature vectors. Then m
gradients, each on its own parameter vector and minibatch, are a few batched matrix
products (``bmm``): the forward pass, the loss's derivative
(softmax - one-hot, or the difference), and the backward pass layer by layer.

Why: ``vmap(grad(...))`` over ``functional_call`` spends most of its time outside the
matrix products for small models. On mlp-mnist (batch 32, 2 threads) it took 0.45 ms a
gradient for 4 versions and 0.31 ms for 16, one autograd gradient 0.48 ms, and this
backward pass 0.22 ms at any m (docs/performance.md). The results equal autograd's to
float rounding; tests compare them with a float64 autograd reference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_ACTIVATIONS = (nn.ReLU, nn.Tanh)


class BatchedMLP:
    """The closed-form batched gradient of one qualifying model (see the module doc):
    ``layers`` are ``("linear", weight_index, bias_index or None)`` or
    ``("relu" | "tanh",)`` in order; the indices are positions in the task's parameter
    list."""

    def __init__(
        self, layers: list[tuple[Any, ...]], loss: str, in_features: int, out_features: int
    ) -> None:
        self.layers = layers
        self.loss = loss
        self.in_features, self.out_features = in_features, out_features

    @classmethod
    def detect(cls, model: nn.Module, loss_fn: Any, names: list[str]) -> BatchedMLP | None:
        """The batched gradient of ``model`` under ``loss_fn``, or None when either is not
        of the supported kinds. ``names``: the task's trainable parameters, in order."""
        if loss_fn is F.cross_entropy:
            loss = "cross_entropy"
        elif loss_fn is F.mse_loss:
            loss = "mse"
        else:
            return None
        if any(True for _ in model.buffers()):
            return None
        if [n for n, _ in model.named_parameters()] != names:
            return None  # frozen parameters, or an order we do not follow
        modules: list[tuple[str, nn.Module]]
        if type(model) is nn.Linear:  # a subclass may compute something else
            modules = [("", model)]
        elif type(model) is nn.Sequential:
            modules = [(f"{k}.", m) for k, m in model.named_children()]
        else:
            return None
        index = {n: i for i, n in enumerate(names)}
        layers: list[tuple[Any, ...]] = []
        linears = [m for _, m in modules if type(m) is nn.Linear]
        for prefix, m in modules:
            if type(m) is nn.Linear:
                bias = index[prefix + "bias"] if m.bias is not None else None
                layers.append(("linear", index[prefix + "weight"], bias))
            elif type(m) in _ACTIVATIONS:
                layers.append(("relu" if isinstance(m, nn.ReLU) else "tanh",))
            else:
                return None
        if not layers or layers[0][0] != "linear" or layers[-1][0] != "linear":
            return None
        return cls(layers, loss, linears[0].in_features, linears[-1].out_features)

    def fits(self, x: torch.Tensor, y: torch.Tensor, shared: bool) -> bool:
        """Whether inputs of this shape are feature vectors this pass handles."""
        want = 2 if shared else 3
        if x.dim() != want or not x.is_floating_point() or x.shape[-1] != self.in_features:
            return False
        if self.loss == "cross_entropy":  # class indices (ignore_index's -100 is not handled)
            return (
                y.dim() == want - 1
                and not y.is_floating_point()
                and y.shape == x.shape[:-1]
                and bool((y >= 0).all())
            )
        return y.is_floating_point() and y.shape == (*x.shape[:-1], self.out_features)

    def grads(
        self, params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, shared: bool
    ) -> list[torch.Tensor]:
        """One gradient per row: ``params`` are the model's tensors, each ``[m, *shape]``;
        ``x`` is ``[m, b, features]`` (or ``[b, features]`` for all rows with ``shared``),
        ``y`` its targets. Returns one ``[m, *shape]`` tensor per model tensor."""
        m = params[0].shape[0]
        b = x.shape[-2]
        h = x if not shared else x.unsqueeze(0).expand(m, *x.shape)
        acts: list[torch.Tensor] = []  # each layer's input
        for layer in self.layers:
            acts.append(h)
            if layer[0] == "linear":
                w = params[layer[1]]  # [m, out, in]
                if layer[2] is not None:
                    h = torch.baddbmm(params[layer[2]].unsqueeze(1), h, w.transpose(1, 2))
                else:
                    h = torch.bmm(h, w.transpose(1, 2))
            elif layer[0] == "relu":
                h = torch.relu(h)
            else:
                h = torch.tanh(h)
        # the loss's derivative with respect to the outputs h [m, b, out]
        if self.loss == "cross_entropy":
            delta = torch.softmax(h, dim=-1)
            yy = y if not shared else y.unsqueeze(0).expand(m, b)
            delta.scatter_add_(-1, yy.unsqueeze(-1), torch.full_like(delta[..., :1], -1.0))
            delta.div_(b)
        else:
            yy = y if not shared else y.unsqueeze(0).expand_as(h)
            delta = (h - yy).mul_(2.0 / h[0].numel())
        out: list[torch.Tensor | None] = [None] * len(params)
        for i in range(len(self.layers) - 1, -1, -1):
            layer, a = self.layers[i], acts[i]
            if layer[0] == "linear":
                out[layer[1]] = torch.bmm(delta.transpose(1, 2), a)
                if layer[2] is not None:
                    out[layer[2]] = delta.sum(dim=1)
                if i > 0:
                    delta = torch.bmm(delta, params[layer[1]])
            elif layer[0] == "relu":  # as torch: the gradient passes where the output > 0
                delta = delta * (acts[i + 1] > 0)
            else:
                delta = delta * (1 - acts[i + 1] * acts[i + 1])
        assert all(t is not None for t in out)
        return [t for t in out if t is not None]
