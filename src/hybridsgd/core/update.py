"""One update's gradient from the gradients it aggregates: the one helper the coordinator
(real backends) and the simulator's replay both build their updates with.

An update is made of *parts*. A part is one gradient (a real backend), or the mean of
several gradients that read the same version (the replay computes them in one batched
pass), or rows of single gradients. Each part carries its count and its staleness scale.
Gradients the server's check refuses were left out before this point, one by one, in
both backends: the rule is :meth:`hybridsgd.core.faults.GradientCheck.row`.

* A **linear** aggregator (mean, sum) weighs the parts with
  :meth:`~hybridsgd.core.aggregators.Aggregator.weights` and sums them in order into one
  reused buffer. There is no stacking copy and no fresh pages.
* A **robust** aggregator, or an omniscient attack, needs one row per gradient. The rows
  are stacked, the attack rewrites its Byzantine rows from the honest ones
  (:meth:`hybridsgd.core.faults.Faults.attack_update`, the one place it is applied), and
  the aggregator combines the rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import torch

from hybridsgd.core.aggregators import Aggregator
from hybridsgd.core.compensation import DelayCompensation
from hybridsgd.core.tables import GradientTable

Attack = Callable[[torch.Tensor, list[int]], None]


@dataclass(slots=True)
class Part:
    """Gradients of one update: ``grad`` is a flat vector (one gradient, or the mean of
    ``count``), per-tensor parts (the replay's single group), or ``[n, d]`` rows (``rows``
    is True) sent by ``workers``."""

    grad: torch.Tensor | list[torch.Tensor | None]
    count: int
    scale: float
    workers: list[int] = field(default_factory=list)
    rows: bool = False
    # the flat parameters the gradients were computed on, kept for delay compensation
    read: torch.Tensor | None = None


class UpdateBuilder:
    """Builds each update's gradient from its parts (see the module doc). ``owned``: the
    parts' tensors belong to the caller's scratch and may be scaled in place; otherwise
    they are a worker's buffers and are only read."""

    def __init__(
        self,
        aggregator: Aggregator,
        attack: Attack | None = None,
        *,
        owned: bool,
        table: GradientTable | None = None,
    ) -> None:
        self.aggregator, self.attack, self.owned = aggregator, attack, owned
        self.table = table
        self._sum: torch.Tensor | None = None

    @property
    def per_row(self) -> bool:
        """Whether every gradient must arrive as its own row (with its sender, for a
        gradient table)."""
        return not self.aggregator.linear or self.attack is not None or self.table is not None

    def build(
        self, parts: Sequence[Part], *, reset: bool = False
    ) -> torch.Tensor | list[torch.Tensor | None]:
        """The update's gradient: the aggregate of ``parts`` (at least one); with a gradient
        table, the table's mean once the parts are folded in (after emptying it if
        ``reset``: :mod:`hybridsgd.core.tables`)."""
        if self.per_row:
            flat = [cast(torch.Tensor, p.grad) for p in parts]  # rows or flat vectors here
            pairs = zip(flat, parts, strict=True)
            rows = torch.cat([g if p.rows else g.unsqueeze(0) for g, p in pairs])
            if self.attack is not None:  # the attack sees the update's accepted honest rows
                self.attack(rows, [w for p in parts for w in p.workers])
            if self.table is not None:
                return self.table.fold(rows, [w for p in parts for w in p.workers], reset=reset)
            counts = torch.ones(rows.shape[0])
            scales = torch.cat([torch.full((_n(p),), p.scale) for p in parts])
            return self.aggregator(rows, counts, scales)
        weights = self.aggregator.weights([float(p.count) for p in parts], [p.scale for p in parts])
        first = parts[0].grad
        if len(parts) == 1:
            w = weights[0]
            if w == 1.0:
                return first
            if self.owned:
                for t in first if isinstance(first, list) else [first]:
                    if t is not None:
                        t.mul_(w)
                return first
        assert isinstance(first, torch.Tensor)  # several parts: flat vectors
        if self._sum is None or self._sum.shape != first.shape or self._sum.device != first.device:
            self._sum = torch.empty_like(first)
        torch.mul(first, weights[0], out=self._sum)
        for p, w in zip(parts[1:], weights[1:], strict=True):
            self._sum.add_(p.grad, alpha=w)  # type: ignore[arg-type]
        return self._sum


def compensated(
    parts: Sequence[Part], compensation: DelayCompensation, now: torch.Tensor
) -> list[Part]:
    """``parts`` with each gradient corrected for its delay (DC-ASGD:
    :mod:`hybridsgd.core.compensation`), in order, one flat part per gradient; each part
    must carry the parameters it was computed on."""
    out = []
    for p in parts:
        if p.read is None or p.count != 1:
            raise ValueError("delay compensation needs each gradient and the parameters it read")
        g = cast(torch.Tensor, p.grad)
        rows = g if p.rows else g.unsqueeze(0)
        senders = p.workers if len(p.workers) == len(rows) else [-1] * len(rows)
        for r, w in zip(rows, senders, strict=True):  # one flat part per gradient
            out.append(Part(compensation.apply(r, p.read, now), 1, p.scale, [w]))
    return out


def scaled(
    grad: torch.Tensor | list[torch.Tensor | None], factor: float
) -> torch.Tensor | list[torch.Tensor | None]:
    """An update's gradient times ``factor`` (a new tensor: the gradient may be a worker's
    buffer); as it is when the factor is 1."""
    if factor == 1.0:
        return grad
    if isinstance(grad, list):
        return [None if t is None else t * factor for t in grad]
    return grad * factor


def _n(p: Part) -> int:
    return int(p.grad.shape[0]) if p.rows else 1  # type: ignore[union-attr]
