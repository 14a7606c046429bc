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


def test_a_link_carries_the_models_bytes_in_predictions_as_in_runs():
    """On a link, a message costs latency + bytes / bandwidth, the bytes those of the model
    sent: a round of sync with 4 constant steps and int8 pseudo-gradients lasts 4 + (0.5 +
    4n / bw) + (0.5 + (n + 4 k) / bw) for n parameters in k tensors, written out here; the
    prediction, the simulator's run and --validate's schedule all say so, and the bytes
    per sample are the two messages over the 4 x 32 samples of a job."""
    import hybridsgd as h
    from hybridsgd.tasks import build_task

    cfg = Config.from_dict(
        {
            "task": {"name": "mlp-digits", "batch_size": 32},
            "policy": {"name": "sync", "workers": 2},
            "timing": {"compute": "constant:value=1", "comm": "link:latency=0.5,bandwidth=4000"},
            "worker": {"steps": 4, "quantize": "int8"},
            "run": {"updates": 3, "eval_every": 3},
        }
    )
    task = build_task(cfg.task, 0)
    n, k = task.numel, len(task.shapes)
    pull, push = 4 * n, n + 4 * k
    round_time = 4 + (0.5 + pull / 4000) + (0.5 + push / 4000)
    pred = predict_config(cfg)
    assert pred.mean_update_time == pytest.approx(round_time, rel=1e-12)
    assert pred.bytes_per_sample == pytest.approx((pull + push) / (4 * 32), rel=1e-12)
    assert simulated(cfg, 5)["mean_update_time"] == pytest.approx(round_time, rel=1e-12)
    times = h.run(cfg, progress=False).trace.updates.time.to_numpy()
    assert times == pytest.approx([round_time, 2 * round_time, 3 * round_time], rel=1e-12)
    # a parameter count in place of the task: one tensor
    one = predict_config(cfg, params=n)
    assert one.bytes_per_sample == pytest.approx((pull + n + 4) / (4 * 32), rel=1e-12)
    assert predict_config(cfg.replace("timing.comm=constant:value=0")).bytes_per_sample is None


def test_predict_on_a_link_asks_for_the_message_size():
    from hybridsgd.cli import main

    args = ["predict", "--policy", "sync", "--workers", "4", "--compute", "exp:mu=1",
            "--comm", "link:latency=0.1,bandwidth=1e6"]  # fmt: skip
    assert main(args) == 2
    assert main([*args, "--params", "mlp-digits", "--json"]) == 0
