"""predict with local steps (issue 36): a job's compute time is the sum of its H draws."""

from __future__ import annotations

import math

import pytest
from scipy import integrate, stats

from hybridsgd import Config, ConfigError
from hybridsgd.forecast import predict_config, simulated


def config(compute: str, workers: int = 16, steps: int = 8, policy: str = "sync") -> Config:
    return Config.from_dict(
        {
            "policy": {"name": policy, "workers": workers},
            "timing": {"compute": compute},
            "worker": {"steps": steps},
        }
    )


def test_sync_rounds_of_exponential_steps_are_the_maximum_of_erlang_variables():
    """E[max of W Erlang(H, mu)] = int_0^inf 1 - F(t)^W dt, F the Erlang CDF (scipy's
    gamma with shape H), integrated here."""
    W, H, mu = 8, 4, 2.0
    F = stats.gamma(H, scale=1 / mu).cdf
    exact, _ = integrate.quad(lambda t: 1 - F(t) ** W, 0, math.inf)
    pred = predict_config(config(f"exp:mu={mu}", W, H))
    assert pred.mean_update_time == pytest.approx(exact, rel=1e-6)
    assert pred.throughput == pytest.approx(W * H * 32 / exact, rel=1e-6)  # samples per time
    assert "Erlang(4): exact" in pred.assumptions[-1]


@pytest.mark.parametrize("compute", ["lognormal:mu=0,sigma=0.5", "pareto:alpha=2.5,scale=1"])
def test_sync_rounds_of_heavier_tails_match_the_simulator_within_2_percent(compute):
    cfg = config(compute)
    pred = predict_config(cfg)
    measured = simulated(cfg, 20_000)
    assert pred.mean_update_time == pytest.approx(measured["mean_update_time"], rel=0.02)
    assert pred.throughput == pytest.approx(measured["throughput"], rel=0.02)
    assert "Monte Carlo" in pred.assumptions[-1]


def test_the_stability_of_local_steps_is_not_predicted():
    with pytest.raises(ConfigError, match="^--lr: the stability of local steps is not modelled"):
        predict_config(config("exp:mu=1"), lr=0.1, curvature=1.0)
