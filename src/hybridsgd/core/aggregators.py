"""Aggregators: many gradients in, one out.

An aggregator receives a stack of rows ``[m, d]``, the number of gradients each row stands
for (``counts``) and each row's staleness scale. A *linear* aggregator such as the mean may
be given group means (one row standing for several gradients that read the same version),
which is what lets the simulator compute same-version gradients in one batched call; a
robust aggregator sets ``linear = False`` and always receives one row per gradient.
"""

from __future__ import annotations

import torch

from hybridsgd.errors import ConfigError


class Aggregator:
    """Interface: ``__call__(rows, counts, scales) -> Tensor[d]``."""

    name: str = "?"
    #: True when group means may stand in for their members (the result is linear in them).
    linear: bool = True

    def tolerates(self, n: int) -> int:
        """How many arbitrary (faulty) inputs among ``n`` the rule tolerates."""
        return 0

    def __call__(
        self, rows: torch.Tensor, counts: torch.Tensor, scales: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError


class Mean(Aggregator):
    """Weighted mean: ``sum_i count_i * scale_i * row_i / sum_i count_i``.

    Normalising by the number of gradients, not by the scales, makes a staleness scale act
    exactly as a per-gradient learning-rate factor. Tolerates no faulty input.
    """

    name = "mean"
    linear = True

    def __call__(
        self, rows: torch.Tensor, counts: torch.Tensor, scales: torch.Tensor
    ) -> torch.Tensor:
        if rows.shape[0] == 1 and float(scales[0]) == 1.0:
            return rows[0]
        weights = (counts * scales).to(rows.dtype)
        return (weights @ rows) / counts.sum().to(rows.dtype)


AGGREGATORS: dict[str, type[Aggregator]] = {"mean": Mean}


def build_aggregator(name: str) -> Aggregator:
    """Build an aggregator by name (``policy.aggregator``)."""
    try:
        return AGGREGATORS[name]()
    except KeyError:
        allowed = ", ".join(sorted(AGGREGATORS))
        raise ConfigError(
            "policy.aggregator", f"unknown aggregator {name!r}; use one of: {allowed}"
        ) from None
