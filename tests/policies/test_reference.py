"""hybridsgd against a public reference (issue 37): the authors' simulator of Rennala, Malenia,
Ringmaster, IA²SGD and Ringleader (github.com/vectozavr/ringmaster-lmo), recorded by
examples/reference_ringmaster_lmo.py into tests/data/ringmaster-lmo.json with the commit it
came from.

Both sides get the same compute times: the reference's transport hands out, per worker,
the times hybridsgd's Cluster draws. Gradients are exact on a quadratic whose data differs
from worker to worker, so the iterates depend only on the schedule and the update rule.
hybridsgd's side is its own event loop (the schedule), then the schedule's updates built
by its own UpdateBuilder, gradient table and ParameterServer in float64.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import hybridsgd as h
from hybridsgd.core.aggregators import Mean
from hybridsgd.core.server import ParameterServer
from hybridsgd.core.tables import GradientTable
from hybridsgd.core.update import Part, UpdateBuilder
from hybridsgd.policies import build_policy
from hybridsgd.record import APPLIED
from hybridsgd.timing import Cluster, parse_model

FIXTURE = json.loads((Path(__file__).parents[1] / "data" / "ringmaster-lmo.json").read_text())


def iterates(spec: str, updates: int) -> tuple[list[np.ndarray], np.ndarray]:
    """hybridsgd's iterates after each update of ``spec`` on the fixture's setup, and the
    updates' times."""
    f = FIXTURE
    W, lr = f["workers"], f["lr"]
    a, c = np.asarray(f["a"]), np.asarray(f["c"])
    setup = f["setups"][f["methods"][spec]["setup"]]
    policy = build_policy(f"{spec},workers={W}" if ":" in spec else f"{spec}:workers={W}")
    cluster = Cluster(parse_model(setup["compute"]), W, seed=setup["seed"], speeds=setup["speeds"])
    s = h.simulate_schedule(policy, cluster, max_updates=updates, fast=False)
    assert s.n_updates == updates
    server = ParameterServer(
        torch.tensor(f["x0"], dtype=torch.float64), "sgd", lr=lr, dtype=torch.float64
    )
    table = GradientTable(policy.table, W, len(f["x0"])) if policy.table else None
    builder = UpdateBuilder(Mean(), owned=False, table=table)
    xs = [server.params.numpy().copy()]  # the parameters at each version
    for u in range(updates):
        members = np.flatnonzero((s.update == u) & (s.fate == APPLIED))  # in arrival order
        parts = []
        for g in members:
            w, x = int(s.worker[g]), xs[int(s.read_version[g])]
            parts.append(Part(torch.from_numpy(a[w] * (x - c[w])), 1, 1.0, [w]))
        reset = s.update_reset is not None and bool(s.update_reset[u])
        server.apply(builder.build(parts, reset=reset))
        xs.append(server.params.numpy().copy())
    return xs[1:], s.update_time


@pytest.mark.parametrize("spec", list(FIXTURE["methods"]))
def test_iterates_agree_with_the_reference_to_1e_10(spec):
    ref = FIXTURE["methods"][spec]
    every = ref["updates_per_step"]  # Ringleader: the reference's step is a cycle of W
    want = np.asarray(ref["iterates"])
    ours, times = iterates(spec, len(want) * every)
    got = np.asarray(ours[every - 1 :: every])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(times[every - 1 :: every], ref["times"], rtol=1e-12, atol=0)


def test_the_fixture_names_its_source():
    assert FIXTURE["reference"] == "github.com/vectozavr/ringmaster-lmo"
    assert len(FIXTURE["commit"]) == 40
