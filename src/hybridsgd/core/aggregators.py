"""Aggregators: many gradients in, one out.

An aggregator receives a stack of rows ``[m, d]``, the number of gradients each row stands
for (``counts``) and each row's staleness scale. A *linear* aggregator such as the mean may
be given group means (one row standing for several gradients that read the same version),
which is what lets the simulator compute same-version gradients in one batched call; a
robust aggregator sets ``linear = False`` and always receives one row per gradient.
"""

from __future__ import annotations

import torch

from hybridsgd.errors import lookup


class Aggregator:
    """Interface: ``__call__(rows, counts, scales) -> Tensor[d]``.

    A *linear* aggregator is fully described by :meth:`weights`: its result is
    ``sum_i weights[i] * rows[i]``. That lets a backend hand a single gradient to the server
    without stacking it, and lets group means stand in for their members.
    """

    name: str = "?"
    linear: bool = False

    def tolerates(self, n: int) -> int:
        """How many arbitrary (faulty) inputs among ``n`` the rule tolerates."""
        return 0

    def weights(self, counts: list[float], scales: list[float]) -> list[float]:
        """Per-row weights of a linear aggregator."""
        raise NotImplementedError(f"{self.name} is not linear")

    def __call__(
        self, rows: torch.Tensor, counts: torch.Tensor, scales: torch.Tensor
    ) -> torch.Tensor:
        w = self.weights(counts.tolist(), scales.tolist())
        if len(w) == 1:
            return rows[0] * w[0] if w[0] != 1.0 else rows[0]
        return torch.tensor(w, dtype=rows.dtype) @ rows


class Mean(Aggregator):
    """Weighted mean: ``sum_i count_i * scale_i * row_i / sum_i count_i``.

    Normalising by the number of gradients, not by the scales, makes a staleness scale act
    exactly as a per-gradient learning-rate factor. Tolerates no faulty input.
    """

    name = "mean"
    linear = True

    def weights(self, counts: list[float], scales: list[float]) -> list[float]:
        total = float(sum(counts))
        return [c * s / total for c, s in zip(counts, scales, strict=True)]


AGGREGATORS: dict[str, type[Aggregator]] = {"mean": Mean}


def build_aggregator(name: str) -> Aggregator:
    """Build an aggregator by name (``policy.aggregator``)."""
    return lookup(AGGREGATORS, name, "policy.aggregator", "aggregator")()
