"""The parameter server: versioned flat parameters and a torch optimizer.

Parameters live in one flat float32 vector so that a version can be read, shared (shared
memory, an object store) or snapshotted as a single tensor. The version counts the updates
applied; it only changes in :meth:`ParameterServer.apply`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from typing import Any, cast

import torch

from hybridsgd.core.compensation import DelayCompensation
from hybridsgd.core.hyper import Hyper
from hybridsgd.core.outer import EXTRA
from hybridsgd.core.tables import GradientTable
from hybridsgd.errors import ConfigError

#: torch.optim classes a parameter server cannot drive, and why
UNSUPPORTED = {
    "lbfgs": "LBFGS needs a closure that recomputes the loss, and a server only receives "
    "gradients; use sgd or adam",
    "sparseadam": "SparseAdam needs sparse gradients, and workers send dense ones; use adam",
}


def _optimizer_class(name: str, field: str = "optimizer.name") -> type[torch.optim.Optimizer]:
    by_lower = {
        n.lower(): getattr(torch.optim, n)
        for n in dir(torch.optim)
        if isinstance(getattr(torch.optim, n), type)
        and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
        and n != "Optimizer"
        and n.lower() not in UNSUPPORTED
    }
    by_lower.update(EXTRA)  # hybridsgd's own outer optimizers (delayed_nesterov)
    if name.lower() in UNSUPPORTED:
        raise ConfigError(field, UNSUPPORTED[name.lower()])
    try:
        return by_lower[name.lower()]
    except KeyError:
        allowed = ", ".join(sorted(by_lower))
        raise ConfigError(
            field, f"unknown optimizer {name!r}; use a torch.optim name: {allowed}"
        ) from None


def optimizer_parameters(name: str, field: str = "optimizer.name") -> set[str]:
    """The constructor arguments of ``torch.optim.<name>`` (``momentum``, ``fused``, ...)."""
    return set(inspect.signature(_optimizer_class(name, field)).parameters)


def build_optimizer(
    name: str, params: Sequence[torch.Tensor], lr: float, section: str = "optimizer",
    **options: Any,
) -> torch.optim.Optimizer:  # fmt: skip
    """Any optimizer in ``torch.optim`` by (case-insensitive) name, e.g. ``sgd``, ``adam``,
    or one of :data:`hybridsgd.core.outer.EXTRA` (``delayed_nesterov``).

    ``options`` go to its constructor (``momentum``, ``weight_decay``, ``betas``, ...); an
    option the optimizer does not take is reported as a config error on that field (of
    the config ``section`` that names the optimizer).
    """
    cls = _optimizer_class(name, f"{section}.name" if section == "optimizer" else section)
    try:
        return cast(Any, cls)(params, lr=lr, **options)
    except TypeError as exc:
        raise ConfigError(
            f"{section}.{name}", f"{cls.__name__} rejects these options: {exc}"
        ) from None
    except ValueError as exc:
        raise ConfigError(section, f"{cls.__name__}: {exc}") from None


class ParameterServer:
    """Holds the flat parameters at version ``version`` and applies aggregated gradients.

    With ``layout`` (the model's parameter shapes) the optimizer steps one view of the flat
    vector per model tensor, exactly as it would step the model's own parameters, and
    :meth:`apply` also takes the gradient as per-tensor parts. Without it the optimizer
    steps the flat vector as one tensor (identical for elementwise optimizers).

    >>> import torch
    >>> ps = ParameterServer(torch.zeros(3), "sgd", lr=0.5)
    >>> ps.apply(torch.ones(3)); ps.version, ps.params.tolist()
    (1, [-0.5, -0.5, -0.5])
    """

    def __init__(
        self,
        params: torch.Tensor,
        optimizer: str = "sgd",
        lr: float = 0.1,
        layout: Sequence[torch.Size] | None = None,
        hyper: Hyper | None = None,
        dtype: torch.dtype = torch.float32,
        **options: Any,
    ) -> None:
        if params.dim() != 1:
            raise ValueError("ParameterServer takes a flat (1-D) parameter vector")
        # float32, as every model here; float64 lets a test follow a reference to 1e-10
        self._theta = params.detach().clone().to(dtype).contiguous()
        shapes = [torch.Size(s) for s in layout] if layout else [self._theta.shape]
        if sum(s.numel() for s in shapes) != self._theta.numel():
            raise ValueError("layout does not add up to the number of parameters")
        self._sizes = [s.numel() for s in shapes]
        self._shapes = shapes
        # leaves share the flat vector's storage: stepping them updates it in place
        self._leaves = [torch.nn.Parameter(v) for v in self._split(self._theta)]
        self.optimizer = build_optimizer(optimizer, self._leaves, lr, **options)
        self.version = 0
        #: sets each update's lr and momentum (schedules, scale_lr, per-regime settings);
        #: ``None`` or a constant one leaves the optimizer's own
        self.hyper = hyper if hyper is not None and not hyper.constant else None
        #: the lr and momentum each update used, when ``hyper`` sets them (NaN: skipped)
        self.used: list[tuple[float, float]] = []
        #: the policy's gradient table (:mod:`hybridsgd.core.tables`), server state kept by
        #: checkpoints; None for the policies that have none
        self.table: GradientTable | None = None
        #: delay compensation (:mod:`hybridsgd.core.compensation`), server state too
        self.compensation: DelayCompensation | None = None

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [t.view(s) for t, s in zip(flat.split(self._sizes), self._shapes, strict=True)]

    @property
    def params(self) -> torch.Tensor:
        """The current parameters (the live flat vector: read it, do not write it)."""
        return self._theta

    @property
    def numel(self) -> int:
        return self._theta.numel()

    def apply(
        self,
        gradient: torch.Tensor | Sequence[torch.Tensor | None],
        *,
        n: int = 1,
        time: float = 0.0,
        level: float = 1.0,
    ) -> int:
        """Take one optimizer step with an aggregated gradient; returns the new version.

        ``gradient`` is a flat vector, or (with a layout) one tensor per model tensor; a
        part may be ``None``: that tensor is left alone (torch optimizers skip parameters
        without a gradient, momentum included). ``n`` (gradients aggregated), ``time`` (the
        backend's) and ``level`` (the update's synchrony) set the step's lr and momentum
        through :attr:`hyper`.
        """
        parts: list[torch.Tensor | None]
        if isinstance(gradient, torch.Tensor):
            if gradient.shape != self._theta.shape:
                shape, want = tuple(gradient.shape), tuple(self._theta.shape)
                raise ValueError(f"gradient has shape {shape}, expected {want}")
            parts = list(self._split(gradient.to(self._theta.dtype)))
        else:
            parts = list(gradient)
            if len(parts) != len(self._shapes) or any(
                p is not None and p.shape != s for p, s in zip(parts, self._shapes, strict=True)
            ):
                raise ValueError("gradient parts do not match the server's layout")
        for leaf, g in zip(self._leaves, parts, strict=True):
            leaf.grad = g
        if self.hyper is not None:
            self._set(*self.hyper.at(self.version, n, time, level))
        self.optimizer.step()
        for leaf in self._leaves:
            leaf.grad = None
        self.version += 1
        return self.version

    def skip(self) -> int:
        """An update with nothing to apply (every gradient rejected): the version moves on,
        the parameters and the optimizer's state do not."""
        if self.hyper is not None:
            self.used.append((math.nan, math.nan))
        self.version += 1
        return self.version

    def _set(self, lr: float, momentum: float | None) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if momentum is not None:
                group["momentum"] = momentum
        self.used.append((lr, self.optimizer.param_groups[0].get("momentum", math.nan)))

    def state_dict(self) -> dict[str, Any]:
        state = {
            "params": self.params.clone(),
            "version": self.version,
            "optimizer": self.optimizer.state_dict(),
        }
        if self.hyper is not None:
            state["hyper"] = {**self.hyper.state(), "used": list(self.used)}
        if self.table is not None:
            state["table"] = self.table.state_dict()
        if self.compensation is not None:
            state["compensation"] = self.compensation.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (parameters, version, optimizer state)."""
        with torch.no_grad():
            self._theta.copy_(state["params"])
        self.version = int(state["version"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.hyper is not None and "hyper" in state:
            self.hyper.load_state(state["hyper"])
            self.used = [tuple(u) for u in state["hyper"]["used"]]
        if self.table is not None:
            self.table.load_state_dict(state["table"])
        if self.compensation is not None:
            self.compensation.load_state_dict(state["compensation"])
