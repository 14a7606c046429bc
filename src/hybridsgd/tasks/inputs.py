"""A task's inputs checked before anything trains: the data pairs a user gives, the model,
loss and targets probed on two samples, non-finite data and out-of-range classes, each
refused in one line naming the first bad sample."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hybridsgd.errors import ConfigError, one_line

if TYPE_CHECKING:
    from hybridsgd.tasks.base import Task


@torch.no_grad()
def probe(task: Task) -> None:
    """Run the model and the loss on two training and two test samples, in eval mode and
    without touching the random state: a model, data or loss that cannot work together is
    one line now, not a traceback from a worker minutes later."""
    model, was = task.model, task.model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for what, x, y in (
                ("training", task.x_train[:2], task.y_train[:2]),
                ("test", task.x_test[:2], task.y_test[:2]),
            ):
                _probe_one(task, what, x, y)
    finally:
        model.train(was)


def _datasets(task: Task) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    same = task.x_test is task.x_train
    test = [] if same else [("test", task.x_test, task.y_test)]
    return [("training", task.x_train, task.y_train), *test]


def check_finite(task: Task) -> None:
    """Refuse inputs or float targets that are NaN or infinite, in one line naming the
    first bad sample. Such data used to surface as divergence at update 0 ("lower
    optimizer.lr"), or as a quarter of the gradients rejected without a word."""
    for what, x, y in _datasets(task):
        for part, t in (("input", x), ("target", y)):
            if not t.is_floating_point() or not len(t):
                continue
            bad = ~torch.isfinite(t.reshape(len(t), -1)).all(dim=1)
            if bool(bad.any()):
                i = int(torch.nonzero(bad)[0])
                kind = "NaN" if bool(torch.isnan(t[i]).any()) else "an infinite value"
                raise ConfigError(
                    f"{what} data",
                    f"{what} {part} {i} holds {kind} ({int(bad.sum())} of {len(t)} "
                    f"{what} samples do): drop or repair them before training",
                )


def _check_classes(task: Task) -> None:
    """Refuse class targets outside the model's output width (known when the task
    measures accuracy: outputs [batch, classes]), in one line naming the first bad
    sample: they used to be torch's "IndexError: Target 10 is out of bounds" from a
    worker, after a 38-line traceback."""
    for what, _, y in _datasets(task):
        if task.metric == "accuracy" and task._classes and not y.is_floating_point():
            out = (y < 0) | (y >= task._classes)
            if bool(out.any()):
                i = int(torch.nonzero(out)[0])
                raise ConfigError(
                    f"{what} data",
                    f"{what} target {i} is class {int(y[i])}, but the model has "
                    f"{task._classes} outputs (classes 0-{task._classes - 1}; "
                    f"{int(out.sum())} of {len(y)} {what} targets are outside): fix the "
                    "labels or widen the model's last layer",
                )


def _probe_one(task: Task, what: str, x: torch.Tensor, y: torch.Tensor) -> None:
    sizes: list[int] = []
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, o: sizes.append(o.numel() if isinstance(o, torch.Tensor) else 0)
        )
        for m in task.model.modules()
    ]
    try:
        out = task.model(x)
    except Exception as exc:
        raise ConfigError(
            "model",
            f"calling it on a batch of {len(x)} {what} inputs, shape {_shape(x)}, raised "
            f"{one_line(exc)}; give inputs the model accepts",
        ) from exc
    finally:
        for hook in hooks:
            hook.remove()
    if what == "training":  # every module's output, per sample (see stack_limit)
        task._activations = sum(sizes) // max(1, len(x))
    if not isinstance(out, torch.Tensor):
        raise ConfigError("model", f"must return one tensor of outputs (got {type(out).__name__})")
    try:
        value = task.loss_fn(out, y)
    except Exception as exc:
        raise ConfigError(
            "loss",
            f"loss(outputs {_shape(out)}, targets {_shape(y)} {y.dtype}) raised {one_line(exc)}",
        ) from exc
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        got = _shape(value) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ConfigError(
            "loss",
            f"must return one number, the mean over the minibatch (got {got}); "
            "use reduction='mean'",
        )
    task._classes = int(out.shape[1]) if out.ndim == 2 else 0
    if what == "training":  # before the loss meets a target it cannot take
        _check_classes(task)
    if task.metric == "accuracy" and (out.ndim != 2 or y.ndim != 1 or y.is_floating_point()):
        raise ConfigError(
            "metric",
            f"accuracy needs outputs [batch, classes] and integer class targets [batch] "
            f"(got outputs {_shape(out)}, {what} targets {_shape(y)} {y.dtype}); "
            "pass metric=None for a task without classes",
        )


def _shape(t: torch.Tensor) -> str:
    return f"[{', '.join(str(n) for n in t.shape)}]"


_PAIR = "an (inputs, targets) pair of tensors or numpy arrays, or a Dataset of such pairs"


def tensors(pair, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        x, y = pair
        x, y = torch.as_tensor(x), torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(what, f"expected {_PAIR} (got {type(pair).__name__})") from None
    if x.ndim == 0 or y.ndim == 0:
        raise ConfigError(what, f"inputs and targets need one row per sample; expected {_PAIR}")
    if len(x) == 0:
        raise ConfigError(what, "holds no samples; give at least one (input, target) pair")
    if len(x) != len(y):
        raise ConfigError(what, f"{len(x)} inputs but {len(y)} targets; give one target per input")
    # float64 inputs (numpy's default) meet float32 parameters: cast them once, here
    return (x.float() if x.is_floating_point() else x), (y.float() if y.is_floating_point() else y)


def as_pair(data: Any, what: str) -> tuple[Any, Any]:
    """``(inputs, targets)`` from a pair of tensors or arrays, or from a map-style Dataset of
    ``(input, target)`` pairs (stacked into memory once)."""
    if (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(d, torch.Tensor | np.ndarray) for d in data)
    ):
        return data[0], data[1]
    try:
        n = len(data)
        items = [data[i] for i in range(n)]
    except Exception:
        raise ConfigError(what, f"expected {_PAIR} (got {type(data).__name__})") from None
    if n == 0:
        raise ConfigError(what, "the Dataset is empty; give at least one (input, target) pair")
    for i, item in enumerate(items):
        if not (isinstance(item, tuple | list) and len(item) == 2):
            kind = (
                f"a dict with keys {', '.join(map(repr, item))}"
                if isinstance(item, dict)
                else f"a {type(item).__name__}"
            )
            raise ConfigError(
                what, f"a Dataset must give (input, target) pairs; item {i} is {kind}"
            )
    try:
        xs = torch.stack([torch.as_tensor(x) for x, _ in items])
        ys = torch.stack([torch.as_tensor(y) for _, y in items])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(
            what,
            f"its items do not stack into one batch ({one_line(exc)}); every input needs "
            "one shape and every target a number or a tensor of one shape",
        ) from None
    return xs, ys
