"""Aggregators: exact values on hand-made inputs, declared tolerance, refusals."""

from __future__ import annotations

import pytest
import torch

from hybridsgd.core.aggregators import AGGREGATORS, build_aggregator
from hybridsgd.errors import ConfigError

ROWS = torch.tensor(
    [
        [1.0, 10.0],
        [2.0, 20.0],
        [3.0, 30.0],
        [4.0, 40.0],
        [100.0, -500.0],  # the outlier
    ]
)
ONES = torch.ones(5)


def agg(spec: str, rows: torch.Tensor = ROWS, scales: torch.Tensor | None = None):
    scales = torch.ones(len(rows)) if scales is None else scales
    return build_aggregator(spec)(rows, torch.ones(len(rows)), scales).tolist()


def test_exact_values_on_hand_made_inputs():
    assert agg("mean") == pytest.approx([22.0, -80.0])
    assert agg("sum") == pytest.approx([110.0, -400.0])
    assert agg("median") == [3.0, 20.0]
    assert agg("median", ROWS[:4]) == [2.5, 25.0]  # even n: mean of the middle two
    # beta = 0.2 of 5 drops one value at each end, per coordinate
    assert agg("trimmed-mean:beta=0.2") == pytest.approx([3.0, 20.0])
    # the 4 values nearest the median (3, 20): {1,2,3,4} and {10,20,30,40}
    assert agg("mean-around-median:f=1") == pytest.approx([2.5, 25.0])
    # Krum f=1 (n=5 >= 2f+3) sums each row's 2 smallest squared distances: rows 1 and 2
    # score 101 + 101, rows 0 and 3 score 101 + 404, the outlier far more; ties go to the
    # lower index
    assert agg("krum:f=1") == [2.0, 20.0]
    assert agg("multi-krum:f=1") == pytest.approx([2.5, 25.0])  # the m = n - f = 4 best
    assert agg("multi-krum:f=1,m=3") == pytest.approx([2.0, 20.0])  # rows 1, 2, then 0
    gm = torch.tensor(agg("geometric-median:tol=1e-9,iters=1000"))
    distance = lambda z: torch.linalg.vector_norm(ROWS - z, dim=1).sum()  # noqa: E731
    for step in ([0.01, 0], [0, 0.01], [-0.01, 0], [0, -0.01]):
        assert distance(gm) <= distance(gm + torch.tensor(step)) + 1e-4


def test_sum_and_mean_weight_staleness_as_a_learning_rate_factor():
    scales = torch.tensor([1.0, 0.5])
    rows = torch.tensor([[2.0], [4.0]])
    assert agg("mean", rows, scales) == [2.0]  # (2 + 0.5 * 4) / 2
    assert agg("sum", rows, scales) == [4.0]
    assert agg("median", rows, scales) == [2.0]  # the robust rule sees rows 2 and 2


def test_centered_clip_moves_at_most_tau_per_iteration():
    rows = torch.tensor([[0.0], [0.0], [0.0], [1000.0]])
    out = agg("centered-clip:tau=1,iters=3", rows)
    assert 0.0 <= out[0] <= 3 * 0.25 + 1e-6  # the median is 0; the outlier pulls 1/4 per step


@pytest.mark.parametrize(
    "spec",
    [
        "median",
        "trimmed-mean:beta=0.25",
        "mean-around-median:f=3",
        "geometric-median",
        "krum:f=3",
        "multi-krum:f=3",
        "centered-clip:tau=0.5,iters=10",
    ],
)
def test_declared_tolerance_keeps_the_result_near_the_honest_gradients(spec):
    """f arbitrary outliers among n: the result stays within twice the honest spread of the
    honest mean, however large the outliers."""
    torch.manual_seed(0)
    a = build_aggregator(spec)
    n, d = 12 if "centered" not in spec else 30, 50
    f = a.tolerates(n)
    assert f >= 1
    honest = 1.0 + torch.randn(n - f, d)
    mean = honest.mean(dim=0)
    spread = torch.linalg.vector_norm(honest - mean, dim=1).max()
    for scale in (1e2, 1e6):
        outliers = scale * torch.randn(f, d)
        rows = torch.cat([outliers, honest])[torch.randperm(n)]
        out = a(rows, torch.ones(n), torch.ones(n))
        assert torch.linalg.vector_norm(out - mean) <= 2 * spread, (spec, scale)
    plain = build_aggregator("mean")(rows, torch.ones(n), torch.ones(n))
    assert torch.linalg.vector_norm(plain - mean) > 100 * spread  # the mean does break


def test_impossible_settings_are_refused_with_one_clear_line():
    with pytest.raises(ConfigError, match=r"krum\(f=2\) needs at least 7 gradients"):
        build_aggregator("krum:f=2").check(6)
    with pytest.raises(ConfigError, match="beta must be in"):
        build_aggregator("trimmed-mean:beta=0.5")
    with pytest.raises(ConfigError, match="median takes no parameters"):
        build_aggregator("median:f=1")
    with pytest.raises(ConfigError, match="unknown aggregator"):
        build_aggregator("average")
    with pytest.raises(ConfigError, match="f must be a whole number"):
        build_aggregator("krum:f=-1")
    assert set(AGGREGATORS) >= {"mean", "sum", "median", "trimmed-mean", "krum", "multi-krum"}
