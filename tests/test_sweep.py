"""Sweeps in parallel: the same traces as one run after another, and one-line refusals."""

from __future__ import annotations

import pytest
import torch

import hybridsgd as h
from hybridsgd.app.sweep import check_jobs, run_many
from hybridsgd.errors import ConfigError


def configs() -> list[h.Config]:
    base = h.Config.from_dict(
        {"task": {"name": "mlp-digits"}, "policy": {"workers": 4}, "run": {"updates": 25}}
    )
    return [
        base.replace(*h.policies.parse_spec(name)[1], f"run.seed={seed}", "optimizer.momentum=0.9")
        for name in ("sync", "async", "k_async:k=2")
        for seed in (0, 1)
    ]


@pytest.mark.slow
def test_parallel_runs_equal_sequential_runs_bit_for_bit():
    seq = run_many(configs(), jobs=1)
    par = run_many(configs(), jobs=2)
    assert len(seq) == len(par) == 6
    for a, b in zip(seq, par, strict=True):
        assert a.error == b.error == ""
        assert torch.equal(a.params, b.params)
        for table in ("gradients", "updates", "evals"):
            assert getattr(a.trace, table).equals(getattr(b.trace, table)), table
    # and the order is the order given
    assert [o.config.run.seed for o in par] == [c.run.seed for c in configs()]


def cnn_grid() -> list[h.Config]:
    """Issue 32's case: cnn-digits, sync, W = 16, 174 updates, lr 0.3 (and the point above
    it in its grid). Replayed as one grid, lr 0.3 ended 0.0929 against 0.0982 alone."""
    base = h.Config.from_dict(
        {
            "task": {"name": "cnn-digits", "batch_size": 16},
            "policy": {"name": "sync", "workers": 16},
            "run": {"updates": 174, "eval_every": 58},
        }
    )
    return [base.replace(f"optimizer.lr={lr}") for lr in (0.3, 1.0)]


@pytest.mark.slow
def test_a_sweep_gives_each_config_the_bits_of_its_own_run_whatever_the_jobs():
    """Sequential, parallel (the Ray sweep: tests/backends/test_ray.py) and a plain run of
    each config on the sweep's thread count: the same final parameters, bit for bit."""
    seq = run_many(cnn_grid(), jobs=1)
    par = run_many(cnn_grid(), jobs=2)
    for cfg, a, b in zip(cnn_grid(), seq, par, strict=True):
        alone = h.run(cfg.replace("run.threads=1"), progress=False)
        assert a.error == b.error == "" and "replayed_with" not in a.trace.summary
        assert torch.equal(a.params, b.params) and torch.equal(a.params, alone.params)


def test_a_plain_run_records_its_thread_count_in_its_config(tmp_path):
    """run.threads = 0 (chosen by measurement, hybridsgd.threads) is resolved and written
    into the run's config.toml, which then repeats the run bit for bit on any machine."""
    cfg = configs()[0]
    assert cfg.run.threads == 0
    r = h.run(cfg, out=tmp_path / "a", progress=False)
    assert r.config.run.threads == r.summary["torch_threads"] in (1, torch.get_num_threads())
    again = h.run(h.Config.load(tmp_path / "a" / "config.toml"), progress=False)
    assert torch.equal(r.params, again.params)


def test_a_sweep_run_takes_one_thread_unless_told():
    (o,) = run_many(configs()[:1], jobs=1)
    assert o.trace.summary["torch_threads"] == 1 and o.config.run.threads == 1


@pytest.mark.slow
def test_progress_counts_every_run():
    seen = []
    run_many(configs()[:3], jobs=2, progress=lambda d, t: seen.append((d, t)))
    assert seen[0] == (0, 3) and seen[-1] == (3, 3) and len(seen) == 4


@pytest.mark.parametrize("jobs", [0, -2, True, 1.5])
def test_bad_jobs(jobs):
    with pytest.raises(ConfigError, match="--jobs"):
        check_jobs(jobs, configs())


def test_real_backends_run_one_at_a_time():
    local = [c.replace("run.backend=local") for c in configs()[:2]]
    assert check_jobs(None, local) == 1
    with pytest.raises(ConfigError, match="real time"):
        check_jobs(2, local)


def test_real_backends_are_not_sent_to_ray():
    local = [c.replace("run.backend=local") for c in configs()[:1]]
    with pytest.raises(ConfigError, match="--ray-address"):
        run_many(local, ray_address="auto")
