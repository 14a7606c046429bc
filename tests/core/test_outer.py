"""Delayed Nesterov (issue 36, Liu et al. 2024): the outer optimizer of asynchronous local
SGD, against its rule written out in float64 and two closed-form properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hybridsgd as h
from hybridsgd.core.outer import DelayedNesterov
from hybridsgd.errors import ConfigError
from tests.helpers import make_config


def _run(opt_cls, grads, **kw) -> np.ndarray:
    x = torch.zeros(grads.shape[1], dtype=torch.float64, requires_grad=True)
    opt = opt_cls([x], **kw)
    for g in grads:
        x.grad = torch.from_numpy(g.copy())
        opt.step()
    return x.detach().numpy()


def test_delayed_nesterov_is_its_rule_written_out_in_float64():
    """Between every N-th update the parameters move by -lr g / N and g joins a buffer; at
    the N-th, m = beta m + buffer / N and the parameters move by -lr (g / N + beta m)."""
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((11, 5))
    lr, beta, N = 0.7, 0.9, 3
    x, m, buf = np.zeros(5), np.zeros(5), np.zeros(5)
    for t, g in enumerate(grads, 1):
        buf += g
        if t % N == 0:
            m = beta * m + buf / N
            x = x - lr * (g / N + beta * m)
            buf = np.zeros(5)
        else:
            x = x - lr * g / N
    got = _run(DelayedNesterov, grads, lr=lr, momentum=beta, period=N)
    np.testing.assert_allclose(got, x, rtol=1e-14, atol=1e-14)


def test_one_update_a_period_is_torchs_nesterov_sgd():
    grads = np.random.default_rng(1).standard_normal((9, 4))
    ours = _run(DelayedNesterov, grads, lr=0.3, momentum=0.9, period=1)
    torchs = _run(torch.optim.SGD, grads, lr=0.3, momentum=0.9, nesterov=True)
    np.testing.assert_allclose(ours, torchs, rtol=1e-14, atol=1e-14)


def test_a_period_moves_the_parameters_as_one_nesterov_step_on_its_mean():
    """From rest, N updates g_1..g_N end at -lr (1 + beta) mean(g): Nesterov's first step
    on their mean; a second period adds Nesterov's second step on the second mean."""
    rng = np.random.default_rng(2)
    lr, beta, N = 0.5, 0.8, 4
    first, second = rng.standard_normal((N, 3)), rng.standard_normal((N, 3))
    one = _run(DelayedNesterov, first, lr=lr, momentum=beta, period=N)
    np.testing.assert_allclose(one, -lr * (1 + beta) * first.mean(0), rtol=1e-13)
    both = _run(DelayedNesterov, np.concatenate([first, second]), lr=lr, momentum=beta, period=N)
    m2 = beta * first.mean(0) + second.mean(0)
    np.testing.assert_allclose(both, one - lr * (second.mean(0) + beta * m2), rtol=1e-13)


#: asynchronous local SGD on mlp-digits: 2 AdamW steps a job, delayed Nesterov outside
ASYNC = {
    "task": {"name": "mlp-digits", "batch_size": 16},
    "policy": {"name": "async", "workers": 3},
    "timing": {"compute": "lognormal:mu=0,sigma=0.5"},
    "worker": {"steps": 2, "optimizer": "adamw", "lr": 0.01},
    "optimizer": {"name": "delayed_nesterov", "lr": 0.7, "momentum": 0.9,
                  "options": {"period": 3}},
    "run": {"updates": 30, "eval_every": 10, "checkpoint_every": 10, "threads": 1},
}  # fmt: skip


def test_asynchronous_local_sgd_with_delayed_nesterov_runs_and_resumes_bit_for_bit(tmp_path):
    """Its buffer, momentum and update count are server state: a run cut at 25 updates
    and resumed from its checkpoint at 20 ends as the uninterrupted one, bit for bit."""
    from tests.backends.test_local_steps import assert_resumes_bit_for_bit

    cfg = make_config(ASYNC)
    whole = assert_resumes_bit_for_bit(cfg, tmp_path)
    plain = cfg.replace("run.checkpoint_every=0")
    nesterov = h.run(
        plain.replace("optimizer.name=sgd", "optimizer.options={nesterov=true}"), progress=False
    )
    assert not torch.allclose(nesterov.params, whole.params)  # the period changed the run
    one = h.run(plain.replace("optimizer.options={period=1}"), progress=False)
    torch.testing.assert_close(one.params, nesterov.params, rtol=1e-5, atol=1e-6)


def test_a_bad_period_is_one_line():
    with pytest.raises(ConfigError) as err:
        h.run(
            make_config(ASYNC, optimizer={"options": {"period": 0}}, run={"checkpoint_every": 0}),
            progress=False,
        )
    assert "period must be a whole number >= 1" in str(err.value)
    assert "\n" not in str(err.value)
