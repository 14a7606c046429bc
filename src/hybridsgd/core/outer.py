"""Outer optimizers of local-step runs that ``torch.optim`` does not have (docs/local-steps.md).

**Delayed Nesterov** (Liu et al. 2024, "Asynchronous Local-SGD Training for Language
Modeling", arXiv 2401.09135): in asynchronous local SGD every pseudo-gradient is one
update, and Nesterov momentum applied to each of them compounds stale directions. Delayed
Nesterov steps with momentum once every ``period`` (N) updates. Between those, an update
moves the parameters by ``- lr g / N`` and only adds ``g`` to a buffer; at every N-th update
the momentum takes the buffer's mean, ``m = momentum m + buffer / N``, the parameters move
by ``- lr (g / N + momentum m)``, and the buffer empties. N updates with gradients g_1..g_N
thus move the parameters exactly as one Nesterov step on their mean (``- lr (mean + momentum
m)``), and N = 1 is torch's SGD with Nesterov momentum (no dampening).

The rule is the one stated by forgather's ``DelayedNesterovOptimizer`` (a public DiLoCo
implementation citing the paper's Algorithm 3); the paper's own algorithm was not
readable in the stored copies. tests/core/test_outer.py writes it out in float64 and checks
both properties above.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch


class DelayedNesterov(torch.optim.Optimizer):
    """Nesterov momentum applied once every ``period`` updates (see the module doc)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.7,
        momentum: float = 0.9,
        period: int = 1,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0 (got {lr})")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1) (got {momentum})")
        if isinstance(period, bool) or not isinstance(period, int) or period < 1:
            raise ValueError(f"period must be a whole number >= 1 (got {period!r})")
        super().__init__(params, {"lr": lr, "momentum": momentum, "period": period})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update: each parameter's ``grad`` is the update's (pseudo-)gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, beta, n = group["lr"], group["momentum"], group["period"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["updates"] = 0
                    state["buffer"] = torch.zeros_like(p)
                    state["momentum_buffer"] = torch.zeros_like(p)
                state["updates"] += 1
                state["buffer"].add_(g)
                if state["updates"] % n == 0:
                    m = state["momentum_buffer"]
                    m.mul_(beta).add_(state["buffer"], alpha=1.0 / n)
                    p.add_(g, alpha=-lr / n).add_(m, alpha=-lr * beta)
                    state["buffer"].zero_()
                else:
                    p.add_(g, alpha=-lr / n)
        return loss


#: optimizers by the (lower-case) name a config gives, besides torch.optim's
EXTRA: dict[str, type[torch.optim.Optimizer]] = {"delayed_nesterov": DelayedNesterov}
