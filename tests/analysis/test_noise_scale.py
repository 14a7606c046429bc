"""The gradient noise scale against its definition, tr(Sigma) / |G|^2, computed in float64
from every training sample's own gradient (McCandlish et al. 2018, eq. 2.9)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

import hybridsgd as h
from hybridsgd.analysis.noise_scale import estimate, updates_factor
from hybridsgd.tasks import build_task


def exact_b_simple(task, params: torch.Tensor) -> float:
    """tr(Sigma) / |G|^2 over the whole training set, from per-sample gradients in float64."""
    model = task.model.double()
    try:
        weights = {k: v.double() for k, v in task.unflatten(params).items()}

        def loss(w, x, y):
            return task.loss_fn(functional_call(model, w, (x[None],)), y[None])

        per = vmap(grad(loss), in_dims=(None, 0, 0))(weights, task.x_train.double(), task.y_train)
        g = torch.cat([per[k].reshape(len(task.x_train), -1) for k in weights], dim=1)
    finally:
        model.float()
    mean = g.mean(0)
    return float(((g - mean) ** 2).sum(1).mean() / (mean @ mean))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["quadratic", "mlp-digits"])
def test_the_estimate_and_its_interval_match_the_definition(name):
    task = build_task(h.Config.from_dict({"task": {"name": name}}).task, 0)
    params = task.initial_params()
    true = exact_b_simple(task, params)
    runs = [estimate(task, params, 32, minibatches=64, seed=s) for s in range(20)]
    values = np.array([r.b_simple for r in runs])
    assert np.median(values) == pytest.approx(true, rel=0.1)
    covered = sum(r.low <= true <= r.high for r in runs)
    assert covered >= 16  # a 95% interval: 19 of 20 expected, 16 is far in the tail
    # the two halves are unbiased estimates: their means over the seeds are close to the truth
    assert np.mean([r.trace for r in runs]) / np.mean([r.grad_norm2 for r in runs]) == (
        pytest.approx(true, rel=0.05)
    )


@pytest.mark.slow
def test_b_noise_matches_the_definition_on_the_quadratic():
    """B_noise = tr(H Sigma) / G'HG with the quadratic's exact Hessian A'A / n, in float64."""
    task = build_task(h.Config.from_dict({"task": {"name": "quadratic"}}).task, 0)
    a, b = task.x_train.double(), task.y_train.double()
    x = task.initial_params().double()
    hessian = a.T @ a / len(a)
    per = a * (a @ x - b)[:, None]  # every sample's gradient of (a.x - b)^2 / 2
    grad_, centred = per.mean(0), per - per.mean(0)
    sigma = centred.T @ centred / len(a)
    true = float(torch.trace(hessian @ sigma) / (grad_ @ hessian @ grad_))
    runs = [estimate(task, task.initial_params(), 32, 64, seed=s, hessian=True) for s in range(20)]
    assert np.median([r.b_noise for r in runs]) == pytest.approx(true, rel=0.1)
    assert sum(r.noise_low <= true <= r.noise_high for r in runs) >= 16
    assert all(math.isnan(r.b_noise) for r in [estimate(task, task.initial_params(), 32, 8)])


def test_an_unresolved_noise_scale_says_so():
    """At a saddle (a zero gradient) there is only noise: the interval reaches infinity."""
    task = build_task(h.Config.from_dict({"task": {"name": "quadratic"}}).task, 0)
    a, b = task.x_train.double(), task.y_train.double()
    x_star = torch.linalg.lstsq(a, b[:, None]).solution[:, 0]
    r = estimate(task, x_star.float(), 32, minibatches=32, seed=0)
    assert math.isinf(r.high)


def test_updates_factor_is_mccandlish_eq_2_11():
    # S / S_min = 1 + B_noise / B: a batch at the noise scale needs twice the updates
    assert updates_factor(100.0, 100) == 2.0
    assert updates_factor(0.0, 8) == 1.0


@pytest.mark.slow
def test_the_command_prints_the_critical_batch_size_and_writes_json(tmp_path):
    cfg = tmp_path / "q.toml"
    cfg.write_text('[task]\nname = "quadratic"\n[optimizer]\nlr = 0.5\n[policy]\nname = "sync"\n')
    cmd = [sys.executable, "-m", "hybridsgd", "noise-scale", str(cfg), "--updates", "20"]
    out = subprocess.run(cmd + ["--points", "3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "critical batch size" in out.stdout
    js = subprocess.run(cmd + ["--points", "2", "--json"], capture_output=True, text=True,
                        timeout=120)  # fmt: skip
    data = json.loads(js.stdout)
    assert [p["update"] for p in data["points"]] == [0, 20]
    assert 0 < data["points"][0]["low"] < data["points"][0]["high"]
    bad = subprocess.run(cmd + ["--points", "0"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--points" in bad.stderr


@pytest.mark.slow
def test_recommend_weighs_the_noise_scale():
    """No noise: the ranking without a noise scale. A noise scale far above a worker's
    minibatch: a policy applying many samples per update wins, and async, whose updates of 32
    samples make no progress at this lr, ranks last with the reason said."""
    from hybridsgd.analysis.recommend import recommend
    from hybridsgd.timing import parse_model

    def ranking(noise):
        ranked = recommend(16, parse_model("exp:mu=1"), 0.05, 1.0, noise_scale=noise)
        return [(c.spec, c.time_to_1000x) for c in ranked], ranked

    plain, _ = ranking(None)
    assert ranking(0.0)[0] == plain
    noisy, ranked = ranking(10_000.0)
    entry = {c.spec: c for c in ranked}
    assert noisy[0][0].split(":")[0] in ("backup", "k_sync", "sync")
    assert math.isinf(entry["async"].time_to_1000x)
    assert entry["async"].reason.startswith("noise-dominated")
    # sync's time is the noiseless one times the second-order factor, exactly
    sync_plain = dict(plain)["sync"]
    factor = updates_factor(10_000.0, 16 * 32, 0.05)
    assert dict(noisy)["sync"] == pytest.approx(sync_plain * factor)
