"""Timing models: parsing, sample means, and docs/design.md section 4's closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hybridsgd import (
    Cluster,
    ConfigError,
    asynchronous,
    backup,
    parse_model,
    simulate_schedule,
    sync,
)
from hybridsgd.timing import parse_speeds


def H(n: int) -> float:
    return sum(1.0 / i for i in range(1, n + 1))


@pytest.mark.parametrize(
    "spec",
    [
        "constant:value=2",
        "exp:mu=2",
        "shifted-exp:delta=1,mu=2",
        "pareto:alpha=3,scale=1",
        "lognormal:mu=0,sigma=0.5",
        "uniform:low=1,high=3",
        "gamma:shape=2,scale=0.5",
        "0.25",
    ],
)
def test_sample_mean_matches_model_mean(spec):
    model = parse_model(spec)
    x = model.sample(np.random.default_rng(0), 400_000)
    assert (x >= 0).all()
    assert x.mean() == pytest.approx(model.mean(), rel=0.01)


def test_empirical_trace_file(tmp_path):
    f = tmp_path / "times.csv"
    f.write_text("seconds\n0.5\n1.5  # a slow one\n\n1.0\n")
    model = parse_model(f"empirical:path={f}")
    assert model.mean() == 1.0
    assert set(model.sample(np.random.default_rng(0), 100)) == {0.5, 1.0, 1.5}
    f.write_text("0.5\nfast\n")
    with pytest.raises(ConfigError, match=r"times.csv:2"):
        parse_model(f"empirical:path={f}", field="timing.compute")


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("weibull:k=1", "unknown timing model"),
        ("exp:rate=1", "exp takes mu"),
        ("exp:mu=0", "mu must be > 0"),
        ("shifted-exp:delta=1", "needs mu"),
        ("pareto:alpha=x,scale=1", "alpha must be a number"),
        ("-1", "finite and >= 0"),
        ("empirical:path=/no/such/file", "not found"),
        ("link:latency=0.1,bandwidth=1e9", "unknown timing model"),
    ],
)
def test_bad_specs_name_the_problem(spec, fragment):
    with pytest.raises(ConfigError, match=fragment) as err:
        parse_model(spec, field="timing.compute")
    assert err.value.field == "timing.compute"


def test_link_is_latency_plus_bytes_over_bandwidth():
    link = parse_model("link:latency=0.01,bandwidth=1e6", allow_link=True)
    c = Cluster(parse_model("constant:value=1"), 2, comm=link, nbytes=500_000)
    assert c.delay(0, 0.0) == pytest.approx(1.0 + 2 * (0.01 + 0.5))  # pull and push


def test_speed_strings():
    assert parse_speeds("1x2,3x1", 3) == [1.0, 1.0, 3.0]
    with pytest.raises(ConfigError, match="2 speeds for 3 workers"):
        parse_speeds([1, 2], 3)


# -- Monte Carlo against closed forms (docs/design.md section 4), within 2%
@pytest.mark.parametrize("W, N", [(16, 16), (34, 32), (20, 10)])
def test_k_sync_time_per_update_shifted_exponential(W, N):
    delta, mu = 1.0, 2.0
    policy = sync(W) if N == W else backup(W, W - N)
    s = simulate_schedule(
        policy, Cluster(parse_model(f"shifted-exp:delta={delta},mu={mu}"), W, seed=4), 20_000
    )
    expected = delta + (H(W) - H(W - N)) / mu
    assert s.end_time / s.n_updates == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("W", [4, 16, 64])
def test_async_rate_and_mean_staleness_exponential(W):
    mu = 1.5
    s = simulate_schedule(asynchronous(W), Cluster(parse_model(f"exp:mu={mu}"), W, seed=9), 200_000)
    assert s.n_updates / s.end_time == pytest.approx(W * mu, rel=0.02)
    assert s.staleness.mean() == pytest.approx(W - 1, rel=0.02)


def test_async_with_heterogeneous_workers_uses_the_renewal_rate():
    # each worker contributes at rate 1/E[X_w]: the update rate is their sum
    speeds = [1.0] * 6 + [4.0] * 2
    s = simulate_schedule(
        asynchronous(8),
        Cluster(parse_model("gamma:shape=2,scale=0.5"), 8, seed=1, speeds=speeds),
        100_000,
    )
    rate = sum(1.0 / (1.0 * v) for v in speeds)
    assert s.n_updates / s.end_time == pytest.approx(rate, rel=0.02)
    assert math.isfinite(s.staleness.mean())
