"""The one update builder the coordinator and the replay share, against the definitions
computed in float64 here."""

from __future__ import annotations

import numpy as np
import torch

from hybridsgd.core.aggregators import build_aggregator
from hybridsgd.core.update import Part, UpdateBuilder


def rows(n: int, d: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32))


def test_mean_of_parts_is_the_count_weighted_mean_with_scales():
    g = rows(4)
    # two means standing for 3 and 1 gradients, with staleness scales 0.5 and 1
    parts = [Part(g[0].clone(), 3, 0.5), Part(g[1].clone(), 1, 1.0)]
    out = UpdateBuilder(build_aggregator("mean"), owned=True).build(parts)
    ref = (3 * 0.5 * g[0].double() + 1 * 1.0 * g[1].double()) / 4
    np.testing.assert_allclose(out.double().numpy(), ref.numpy(), rtol=1e-6)


def test_a_workers_buffer_is_never_scaled_in_place():
    g = rows(1)[0]
    keep = g.clone()
    out = UpdateBuilder(build_aggregator("mean"), owned=False).build([Part(g, 1, 0.25)])
    assert torch.equal(g, keep) and torch.allclose(out, keep * 0.25)


def test_robust_rule_gets_one_row_per_gradient():
    g = rows(5)
    parts = [Part(g[:3].clone(), 1, 1.0, [0, 1, 2], rows=True), Part(g[3].clone(), 1, 1.0, [3])]
    parts.append(Part(g[4].clone(), 1, 1.0, [4]))
    out = UpdateBuilder(build_aggregator("median"), owned=True).build(parts)
    np.testing.assert_allclose(out.numpy(), np.median(g.double().numpy(), axis=0), rtol=1e-6)


def test_the_attack_sees_every_row_with_its_sender_once():
    g = rows(3)
    seen = []

    def attack(r: torch.Tensor, workers: list[int]) -> None:
        seen.append((r.clone(), list(workers)))
        r[workers.index(2)] = 100.0

    b = UpdateBuilder(build_aggregator("mean"), attack, owned=False)
    out = b.build([Part(g[i], 1, 1.0, [i]) for i in range(3)])
    assert len(seen) == 1 and seen[0][1] == [0, 1, 2] and torch.equal(seen[0][0], g)
    ref = (g[0].double() + g[1].double() + 100.0) / 3
    np.testing.assert_allclose(out.double().numpy(), ref.numpy(), rtol=1e-6)
