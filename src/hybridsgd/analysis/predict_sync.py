"""The synchronous family's time per update beyond the closed forms of order statistics
(``k_batch_sync``: docs/analysis.md)."""

from __future__ import annotations

import numpy as np

from hybridsgd.timing.models import Exponential


def k_batch_sync_time(compute, W, k, speeds, shift) -> tuple[float, str]:
    if (
        isinstance(compute, Exponential)
        and shift == 0
        and (speeds is None or np.allclose(speeds, 1))
    ):
        return k / (W * compute.mu), "closed form: k / (W mu) (memoryless)"
    # the k-th arrival of W renewal streams started together, by Monte Carlo
    rng = np.random.default_rng(0)
    s = np.ones(W) if speeds is None else np.asarray(speeds, dtype=float)
    n = 20_000
    draws = compute.sample(rng, n * W * k).reshape(n, W, k) * s[None, :, None] + shift
    arrivals = np.cumsum(draws, axis=2).reshape(n, W * k)
    return float(
        np.partition(arrivals, k - 1, axis=1)[:, k - 1].mean()
    ), "Monte Carlo (20,000 rounds)"
