"""Delay compensation (DC-ASGD, Zheng et al., ICML 2017): a stale gradient corrected toward
the gradient at the current parameters by a diagonal approximation of the Hessian,

    g_c = g + lambda * g * g * (w_now - w_read)        (elementwise)

where ``w_read`` are the parameters the gradient was computed on and ``w_now`` those it is
applied to. ``lambda`` is a constant (DC-ASGD-c), or, adaptively (DC-ASGD-a),
``lambda0 / sqrt(MeanSquare)`` elementwise, with ``MeanSquare <- m * MeanSquare + (1 - m) *
g * g`` updated at every gradient (m = 0.95 in the paper). The square root of a zero mean
square is replaced by 1e-7 (the paper does not say; a parameter whose gradients have all
been 0 has no compensation anyway, since g * g = 0).

It is server state, like a gradient table: the mean square is kept by checkpoints
(:meth:`hybridsgd.core.server.ParameterServer.state_dict`). With lambda = 0 the gradient is
left exactly as it is, so the run is ``async`` bit for bit (tested).
"""

from __future__ import annotations

from typing import Any

import torch

EPS = 1e-7


class DelayCompensation:
    """``g + lam * g * g * (w_now - w_read)``, with a constant or adaptive ``lam``."""

    def __init__(self, lam: float, adaptive: bool = False, momentum: float = 0.95) -> None:
        if lam < 0:
            raise ValueError("lambda must be >= 0")
        if not 0 <= momentum < 1:
            raise ValueError("the mean square's momentum must be in [0, 1)")
        self.lam, self.adaptive, self.momentum = lam, adaptive, momentum
        self.mean_square: torch.Tensor | None = None  # adaptive only, once a gradient came

    def apply(self, g: torch.Tensor, read: torch.Tensor, now: torch.Tensor) -> torch.Tensor:
        """The compensated gradient (a new tensor) of flat gradient ``g`` computed on
        ``read`` and applied to ``now``."""
        if self.lam == 0.0:
            return g
        g2 = g * g
        if not self.adaptive:
            return g + self.lam * g2 * (now - read)
        if self.mean_square is None:
            self.mean_square = torch.zeros_like(g)
        self.mean_square.mul_(self.momentum).add_(g2, alpha=1.0 - self.momentum)
        lam = self.lam / self.mean_square.sqrt().clamp_min(EPS)
        return g + lam * g2 * (now - read)

    def state_dict(self) -> dict[str, Any]:
        ms = None if self.mean_square is None else self.mean_square.clone()
        return {"lam": self.lam, "adaptive": self.adaptive, "mean_square": ms}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ms = state["mean_square"]
        self.mean_square = None if ms is None else ms.clone()
