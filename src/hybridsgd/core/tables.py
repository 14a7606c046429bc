"""Gradient tables: server state that remembers gradients across updates, per worker.

The methods built for data that differs from worker to worker (IA²SGD, Ringleader ASGD,
Malenia SGD) do not apply the gradients an update aggregates as they are. They fold them
into a table with one row per worker and step with the mean of the table's rows, so that
every worker's data weighs the same however often its gradients arrive.

A policy that needs one says so with its ``table`` attribute (the table's ``kind``) and
marks the updates that start the table afresh (:attr:`hybridsgd.policies.Update.reset`).
The policy decides *which* gradients go into which update, as for every policy; the table,
like an aggregator, decides *how* they combine. It is the one place both the simulator's
replay and the real backends' coordinator fold gradients
(:class:`hybridsgd.core.update.UpdateBuilder`), and it is server state: a checkpoint keeps
it (:meth:`hybridsgd.core.server.ParameterServer.state_dict`) and a resumed run goes on
from it bit for bit.

Two kinds:

* ``"latest"`` (IA²SGD): a row is the latest gradient its worker delivered; a newer one
  replaces it.
* ``"mean"`` (Malenia, Ringleader): a row is the mean of the gradients its worker delivered
  since the table was last reset.

Either way an update's gradient is the mean of the rows that hold something, and an update
marked ``reset`` empties every row before folding its gradients in (in arrival order).

>>> t = GradientTable("mean", workers=2, numel=1)
>>> t.fold(torch.tensor([[1.0], [3.0], [10.0]]), [0, 0, 1], reset=True).tolist()
[6.0]
>>> t.fold(torch.tensor([[4.0]]), [1], reset=False).tolist()  # worker 1: (10 + 4) / 2
[4.5]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

KINDS = ("latest", "mean")


class GradientTable:
    """One row per worker (see the module doc): ``kind`` is ``"latest"`` or ``"mean"``."""

    def __init__(
        self, kind: str, workers: int, numel: int, device: torch.device | str = "cpu"
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"a gradient table's kind is one of {KINDS}, not {kind!r}")
        self.kind, self.workers, self.numel = kind, workers, numel
        # the sum of the gradients in each row, and how many (0: the row holds nothing)
        # (on the server's device: rows arriving on a GPU are added where they are)
        self.sums = torch.zeros(workers, numel, dtype=torch.float64, device=device)
        self.counts = torch.zeros(workers, dtype=torch.int64, device=device)

    def fold(self, rows: torch.Tensor, workers: Sequence[int], *, reset: bool) -> torch.Tensor:
        """Fold ``rows`` (``[m, numel]``, in arrival order, sent by ``workers``) into the
        table, after emptying it if ``reset``; returns the update's gradient: the mean of
        the rows that hold something (in the rows' dtype)."""
        if len(workers) != rows.shape[0]:
            raise ValueError("one worker per row")
        if reset:
            self.sums.zero_()
            self.counts.zero_()
        for row, w in zip(rows.to(torch.float64), workers, strict=True):
            if self.kind == "latest":
                self.sums[w].copy_(row)
                self.counts[w] = 1
            else:
                self.sums[w].add_(row)
                self.counts[w] += 1
        return self.value(rows.dtype)

    def value(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The mean over workers of each worker's row (rows that hold nothing left out),
        computed in float64."""
        held = self.counts > 0
        if not bool(held.any()):
            raise ValueError("the gradient table is empty")
        means = self.sums[held] / self.counts[held].unsqueeze(1).to(torch.float64)
        return means.mean(dim=0).to(dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "sums": self.sums.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["kind"] != self.kind or tuple(state["sums"].shape) != tuple(self.sums.shape):
            raise ValueError("the checkpoint's gradient table does not fit this run")
        self.sums.copy_(state["sums"])
        self.counts.copy_(state["counts"])
