"""A task: a model, its data and its loss, seen through one flat parameter vector.

Tasks know nothing of backends. A backend asks a task for the gradient of the loss at given
flat parameters on given minibatches; the simulator asks for several minibatches at once.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.modules.batchnorm import _BatchNorm

from hybridsgd.errors import ConfigError
from hybridsgd.tasks import inputs
from hybridsgd.tasks.mlp import BatchedMLP

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
            raise ConfigError("metric", f"must be 'accuracy' or None (got {metric!r})")
        if not isinstance(model, nn.Module):
            raise ConfigError("model", f"expected a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss):
            raise ConfigError(
                "loss",
                f"expected a function loss(outputs, targets) -> mean loss, e.g. "
                f"torch.nn.functional.cross_entropy (got {type(loss).__name__})",
            )
        self.name = name
        self.model = model
        self.x_train, self.y_train = inputs.tensors(train, "train")
        self.x_test, self.y_test = (
            inputs.tensors(test, "test") if test is not None else (self.x_train, self.y_train)
        )
        self.loss_fn = loss
        self.metric = metric
        self.info = info or {}
        #: quantities a summary reports from the final test loss, by name (e.g. a language
        #: model's perplexity, exp(loss)); picklable functions of one float
        self.from_loss: dict[str, Callable[[float], float]] = {}
        #: which samples :meth:`evaluate` measures: "test", or a "validation" split
        self.evaluated_on = "test"
        self.held_out: np.ndarray | None = None  # training indices of a validation split
        # frozen parameters (requires_grad False) stay in the module, like buffers: only the
        # trainable ones are the server's parameters
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError(
                "model",
                "has no trainable parameters (none, or all have requires_grad=False); "
                "give a model with at least one parameter to train",
            )
        wrong = sorted({str(p.dtype) for _, p in trainable if p.dtype != torch.float32})
        if wrong:
            raise ConfigError(
                "model",
                f"its parameters are {', '.join(wrong)}; hybridsgd trains float32 "
                "parameters: pass model.float()",
            )
        self._names = [n for n, _ in trainable]
        self._shapes = [p.shape for _, p in trainable]
        self._sizes = [p.numel() for _, p in trainable]
        self._buffers = {n: b for n, b in model.named_buffers()}
        self.numel = sum(self._sizes)
        self._vgrad: Callable[..., torch.Tensor] | None = None
        self._vgrad_at: Callable[..., tuple[torch.Tensor, ...]] | None = None
        self._vgrad_shared: Callable[..., tuple[torch.Tensor, ...]] | None = None
        self._mlp: BatchedMLP | Literal[False] | None = None  # None: not looked at yet
        #: batch normalisation layers: a gradient depends on its whole minibatch at once, so
        #: no backend may stack several workers' minibatches into one forward pass
        self._norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
        # The module's parameters (and their .grad) become views into flat buffers: loading a
        # version is one copy, or none when the module is bound to the server's own storage,
        # and backward accumulates straight into a flat gradient (no concatenation). This
        # costs no more than the plain module call, unlike autograd through slices of a flat
        # vector, which costs as much again as the whole step.
        self._params = [p for _, p in trainable]
        self._own = torch.cat([p.detach().reshape(-1) for p in self._params]).float()
        self._initial = self._own.clone()
        self._bound = self._own
        self._bind(self._own)
        self._activations = 0  # every module's output per sample (inputs.probe measures it)
        self._classes = 0  # the model's output width when it classifies (inputs.probe)
        self._check_finite()
        self._probe()

    def _probe(self) -> None:
        inputs.probe(self)

    def _check_finite(self) -> None:
        inputs.check_finite(self)

    def _bind(self, flat: torch.Tensor) -> None:
        with torch.no_grad():
            for p, view in zip(self._params, self.unflatten(flat).values(), strict=True):
                p.data = view
        self._bound = flat

    @contextlib.contextmanager
    def bound_to(self, flat: torch.Tensor) -> Iterator[None]:
        """Let the module read ``flat``'s storage directly (no copies) inside the block.

        The simulator binds the task to the server's parameters: a gradient is computed
        while the server holds exactly the version its worker read.
        """
        if flat.dtype != torch.float32 or not flat.is_contiguous() or flat.numel() != self.numel:
            raise ValueError("bound_to needs a contiguous float32 vector of the task's size")
        if flat.device != self._own.device:
            raise ValueError(f"bound_to needs a vector on the task's device ({self.device})")
        previous = self._bound
        self._bind(flat)
        try:
            yield
        finally:
            self._bind(previous)

    @property
    def device(self) -> torch.device:
        """Where the task's module and data are (see :meth:`to`)."""
        return self._own.device

    def to(self, device: torch.device | str) -> Task:
        """Move the module and the data to ``device`` (in place; returns the task). The
        initial parameters stay on the CPU; gradients and evaluations then run there."""
        device = torch.device(device)
        if device == self.device:
            return self
        self.model.to(device)  # buffers and frozen parameters
        self._buffers = {n: b for n, b in self.model.named_buffers()}
        same = self.x_test is self.x_train  # no test set: the training set is evaluated
        self.x_train, self.y_train = self.x_train.to(device), self.y_train.to(device)
        if same:
            self.x_test, self.y_test = self.x_train, self.y_train
        else:
            self.x_test, self.y_test = self.x_test.to(device), self.y_test.to(device)
        self._own = self._own.to(device)
        self._bind(self._own)
        return self

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
            model,
            inputs.as_pair(train, "train"),
            loss,
            inputs.as_pair(test, "test") if test is not None else None,
            metric,
            name,
        )

    # -- parameters ---------------------------------------------------------------------------
    def initial_params(self) -> torch.Tensor:
        """The module's parameters when the task was made, as one flat float32 vector.

        The task uses the module's parameter storage as scratch space afterwards, so this
        copy, not ``model.parameters()``, is the starting point of every run.
        """
        return self._initial.clone()

    def load(self, flat: torch.Tensor) -> nn.Module:
        """Put ``flat`` into the module (one copy, none if bound to it) and return it."""
        if flat.data_ptr() != self._bound.data_ptr():
            with torch.no_grad():
                self._bound.copy_(flat)
        return self.model

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` shaped like the module's parameters, by name."""
        out, offset = {}, 0
        for name, shape, size in zip(self._names, self._shapes, self._sizes, strict=True):
            out[name] = flat[offset : offset + size].view(shape)
            offset += size
        return out

    def _loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        params = self.unflatten(flat)
        return self.loss_fn(functional_call(self.model, (params, self._buffers), (x,)), y)

    # -- data -----------------------------------------------------------------------------------
    def holdout(self, fraction: float, seed: int = 0) -> Task:
        """This task training on all but ``fraction`` of its training samples and evaluating
        on those: a validation split, for tuning, that never touches the test set.

        The held-out samples are a seeded random subset of the training set; the others
        keep their order. ``fraction`` 0 is the task itself, so a run that does not tune
        trains on exactly the data it always did. The result shares the module.

        >>> import torch
        >>> t = Task(torch.nn.Linear(2, 2), (torch.randn(10, 2), torch.arange(10) % 2),
        ...          torch.nn.functional.cross_entropy)
        >>> v = t.holdout(0.2); v.n_train, len(v.x_test), v.evaluated_on
        (8, 2, 'validation')
        """
        if fraction == 0:
            return self
        n = self.n_train
        k = int(round(n * fraction))
        if not 0 < fraction < 1 or k < 1 or k >= n:
            raise ValueError(
                f"a validation fraction of {fraction} leaves no samples on one side of {n}"
            )
        order = np.random.default_rng(seed).permutation(n)
        held, kept = np.sort(order[:k]), np.sort(order[k:])
        out = copy.copy(self)
        out.x_train, out.y_train = self.x_train[kept], self.y_train[kept]
        out.x_test, out.y_test = self.x_train[held], self.y_train[held]
        out.held_out = held
        out.evaluated_on = "validation"
        return out

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    def batch(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """Training samples by index (a numpy array or a sequence of ints)."""
        idx = torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))
        if self.x_train.device.type != "cpu":
            idx = idx.to(self.x_train.device)
        return self.x_train.index_select(0, idx), self.y_train.index_select(0, idx)

    # -- batch normalisation ----------------------------------------------------------------
    @property
    def batch_coupled(self) -> bool:
        """True when the model normalises over its minibatch (BatchNorm): a worker's gradient
        is then a function of its own minibatch as a whole, and several workers' minibatches
        are never stacked into one forward pass (the simulator computes them side by side)."""
        return bool(self._norms)

    @contextlib.contextmanager
    def _training(self) -> Iterator[None]:
        """Gradients in training mode; BatchNorm normalises by the minibatch's own statistics
        and leaves its running statistics alone (they are not trained by the workers; see
        :meth:`evaluate`), which also lets ``vmap`` compute one gradient per minibatch."""
        was = self.model.training
        if was and not self._norms:  # the common case costs nothing on the hot path
            yield
            return
        self.model.train()
        tracked = [m.track_running_stats for m in self._norms]
        for m in self._norms:
            m.track_running_stats = False
        try:
            yield
        finally:
            for m, t in zip(self._norms, tracked, strict=True):
                m.track_running_stats = t
            self.model.train(was)

    #: training samples (the first ones, in order) that set BatchNorm's running statistics
    #: before an evaluation
    CALIBRATION_SAMPLES = 1024

    @torch.no_grad()
    def _calibrate(self) -> None:
        """BatchNorm's running statistics at the current parameters: the statistics of the
        first :attr:`CALIBRATION_SAMPLES` training samples, in one pass (the idea of
        ``torch.optim.swa_utils.update_bn``). Deterministic, and the same on every backend,
        since only the server's parameters decide them."""
        momenta = [m.momentum for m in self._norms]
        self.model.train()
        for m in self._norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
        # a dropout layer is active in this pass: its own random state, so that the
        # statistics depend on the parameters alone (and the run's random state is untouched)
        with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
            torch.manual_seed(0)
            self.model(self.x_train[: self.CALIBRATION_SAMPLES])
        for m, mom in zip(self._norms, momenta, strict=True):
            m.momentum = mom

    # -- gradients ------------------------------------------------------------------------------
    def grad(
        self,
        flat: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        out: torch.Tensor | None = None,
        minibatch: int = 0,
    ) -> tuple[torch.Tensor, float]:
        """Gradient of the mean loss over ``(x, y)`` at ``flat`` (written into ``out`` if
        given), and that loss.

        Given several equal-size minibatches of ``minibatch`` samples stacked along the
        first axis, this is their mean gradient in as few forward/backward passes as
        :attr:`stack_limit` allows (whole minibatches each): the simulator's batching lever.
        ``minibatch`` 0 is one pass.
        """
        model = self.load(flat)
        out = torch.empty(self.numel, device=self.device) if out is None else out
        with torch.no_grad():
            for p, view in zip(self._params, self.unflatten(out).values(), strict=True):
                p.grad = view
            out.zero_()
        loss = self._backward(model, x, y, minibatch)
        for p in self._params:
            p.grad = None
        return out, loss

    #: activations (floats, all layers' outputs) one stacked forward pass may hold: past
    #: that, the simulator's stacked minibatches are cut into passes of whole minibatches. A
    #: LeNet on MNIST computed 15,000 samples/s in passes of 256 and 9,000 in one of 2,048
    #: (2-core CPU): activations beyond the caches cost more than the passes they save.
    STACK_FLOATS = 8_000_000

    @property
    def stack_limit(self) -> int:
        """The most samples one forward pass takes (see :attr:`STACK_FLOATS`; every sample
        of a BatchNorm model's minibatch is always in one pass)."""
        return max(1, self.STACK_FLOATS // max(1, self._activations))

    def _backward(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, minibatch: int
    ) -> float:
        """Backward of the mean loss over ``(x, y)`` into the parameters' .grad, in passes of
        whole minibatches, at most :attr:`stack_limit` samples unless one minibatch is more
        (the gradient of the mean loss is the sum of each pass's mean weighted by its share
        of the samples, since the minibatches are equal); returns the mean loss."""
        n = len(x)
        step = max(minibatch, self.stack_limit // minibatch * minibatch) if minibatch else n
        with self._training():
            if n <= step or self._norms:
                loss = self.loss_fn(model(x), y)
                loss.backward()
                return float(loss.detach())
            total = 0.0
            for start in range(0, n, step):
                xs, ys = x[start : start + step], y[start : start + step]
                part = self.loss_fn(model(xs), ys) * (len(xs) / n)
                part.backward()
                total += float(part.detach())
            return total

    def grad_parts(
        self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, minibatch: int = 0
    ) -> tuple[list[torch.Tensor | None], float]:
        """Like :meth:`grad`, as one fresh tensor per model parameter (no flat copy): the
        cheapest form when the gradient goes straight to a server with the task's layout."""
        model = self.load(flat)
        for p in self._params:
            p.grad = None
        loss = self._backward(model, x, y, minibatch)
        parts = [p.grad for p in self._params]
        for p in self._params:
            p.grad = None
        return parts, loss

    @property
    def shapes(self) -> list[torch.Size]:
        """Shapes of the model's parameters, in flat order (a server's ``layout``)."""
        return list(self._shapes)

    def grads(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One gradient per minibatch: ``x`` is ``[m, batch, ...]``, the result ``[m, numel]``.

        Uses ``torch.func.vmap`` so that m gradients still cost one vectorised call; for the
        aggregators that need gradients kept apart (median, Krum, ...).
        """
        if self._vgrad is None:
            # each minibatch draws its own randomness (dropout masks), as separate workers do
            self._vgrad = vmap(grad(self._loss), in_dims=(None, 0, 0), randomness="different")
        with self._training():
            return self._vgrad(flat.detach(), x, y)

    @property
    def closed_form(self) -> bool:
        """Whether :meth:`grads_at` takes a plain MLP's closed-form backward pass on this
        task's inputs (:mod:`hybridsgd.tasks.mlp`), rather than ``vmap``."""
        if self._mlp is None:
            self._mlp = BatchedMLP.detect(self.model, self.loss_fn, self._names) or False
        return bool(self._mlp) and self.x_train.dim() == 2

    def grads_at(
        self,
        versions: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        flat: bool = True,
        shared: bool = False,
    ) -> Any:
        """One gradient per row of ``versions`` ``[m, numel]`` (m parameter vectors), each on
        its own minibatch: ``x`` is ``[m, batch, ...]``; the result ``[m, numel]``, or with
        ``flat=False`` one ``[m, *shape]`` tensor per model tensor (no concatenating copy).
        With ``shared``, every row's gradient is on the same samples ``x`` ``[batch, ...]``
        (several runs' parameters on one schedule's minibatch).

        The simulator's lever for gradients read at different versions (the asynchronous
        family): one ``vmap``-ed call, so m small forward/backward passes become batched
        matrix products. A plain MLP (:mod:`hybridsgd.tasks.mlp`) takes its closed-form
        backward pass instead, which spends less time outside the products. Otherwise the
        gradient is taken with respect to each model tensor, as views of the rows: through
        slices of a flat vector, autograd would build and sum a
        zero-filled ``[m, numel]`` tensor per model tensor, which costs more than the
        passes themselves. A BatchNorm model normalises each row by its own minibatch, as
        its worker does.
        """
        m = len(versions)
        views, offset = [], 0
        for shape, size in zip(self._shapes, self._sizes, strict=True):
            views.append(versions[:, offset : offset + size].view(m, *shape))
            offset += size
        if self.closed_form and self._mlp and self._mlp.fits(x, y, shared):  # a plain MLP
            closed = self._mlp.grads([v.detach() for v in views], x, y, shared)
            return torch.cat([p.reshape(m, -1) for p in closed], dim=1) if flat else closed
        if self._vgrad_at is None:
            names, buffers, model, loss_fn = self._names, self._buffers, self.model, self.loss_fn

            def loss(params: tuple[torch.Tensor, ...], xb: torch.Tensor, yb: torch.Tensor):
                out = functional_call(
                    model, (dict(zip(names, params, strict=True)), buffers), (xb,)
                )
                return loss_fn(out, yb)

            self._vgrad_at = vmap(grad(loss), in_dims=(0, 0, 0), randomness="different")
            self._vgrad_shared = vmap(grad(loss), in_dims=(0, None, None), randomness="same")
        call = self._vgrad_shared if shared else self._vgrad_at
        assert call is not None
        with self._training():
            parts = call(tuple(v.detach() for v in views), x, y)
        return torch.cat([p.reshape(m, -1) for p in parts], dim=1) if flat else list(parts)

    def __getstate__(self) -> dict[str, Any]:
        # the vmapped functions are caches, rebuilt on first use (they do not pickle)
        return {**self.__dict__, "_vgrad": None, "_vgrad_at": None, "_vgrad_shared": None}

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, flat: torch.Tensor) -> tuple[float, float]:
        """Test loss and test accuracy (NaN when the task has no accuracy), in eval mode.
        A BatchNorm model's running statistics are first recomputed at ``flat`` (see
        :meth:`_calibrate`)."""
        model = self.load(flat)
        was = model.training
        try:
            if self._norms:
                self._calibrate()
            model.eval()
            out = model(self.x_test)
        finally:
            model.train(was)
        loss = float(self.loss_fn(out, self.y_test))
        if self.metric == "accuracy":
            return loss, float((out.argmax(dim=1) == self.y_test).float().mean())
        return loss, math.nan
