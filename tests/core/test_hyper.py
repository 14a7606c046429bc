"""Each update's lr and momentum: schedules against torch's own schedulers, scale_lr, and
the settings on both sides of a hybrid's switch (docs/tuning.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as S

import hybridsgd as h
from hybridsgd.core.hyper import Hyper, parse_schedule
from hybridsgd.core.server import ParameterServer
from hybridsgd.errors import ConfigError

LR = 0.2


def torch_lrs(make, steps: int) -> list[float]:
    """The lr torch's scheduler gives each of ``steps`` optimizer steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = make(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def warm(opt, steps, start):
    return S.LinearLR(opt, start_factor=start, end_factor=1.0, total_iters=steps)


SCHEDULES = {
    "constant:warmup=7,start=0.25": lambda o: S.SequentialLR(
        o, [warm(o, 7, 0.25), S.ConstantLR(o, factor=1.0, total_iters=0)], milestones=[7]
    ),
    "cosine:warmup=5,total=40,final=0.1": lambda o: S.SequentialLR(
        o, [warm(o, 5, 0.1), S.CosineAnnealingLR(o, T_max=35, eta_min=0.1 * LR)], milestones=[5]
    ),
    "cosine:total=40": lambda o: S.CosineAnnealingLR(o, T_max=40),
    "linear:warmup=4,total=30,final=0.2,start=0.5": lambda o: S.SequentialLR(
        o,
        [warm(o, 4, 0.5), S.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=26)],
        milestones=[4],
    ),
    "step:every=6,gamma=0.5": lambda o: S.StepLR(o, step_size=6, gamma=0.5),
    "step:warmup=3,every=5,gamma=0.3": lambda o: S.SequentialLR(
        o, [warm(o, 3, 0.1), S.StepLR(o, step_size=5, gamma=0.3)], milestones=[3]
    ),
}


@pytest.mark.parametrize("spec", list(SCHEDULES))
def test_schedules_equal_torch_schedulers_step_by_step(spec):
    """The factor at every update equals torch's scheduler, and so does the lr column a
    simulated run records (async: one gradient per update, so nothing scales it)."""
    steps = 40
    ref = torch_lrs(SCHEDULES[spec], steps)
    schedule = parse_schedule(spec, total=steps)
    ours = [LR * schedule.factor(t) for t in range(steps)]
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-15)
    cfg = h.Config.from_dict(
        {
            "task": {"name": "quadratic"},
            "policy": {"name": "async", "workers": 3},
            "optimizer": {"lr": LR, "schedule": spec},
            "run": {"updates": steps},
        }
    )
    used = h.run(cfg).trace.updates["lr"].to_numpy()
    np.testing.assert_allclose(used, ref, rtol=1e-9, atol=1e-15)


def test_cosine_total_defaults_to_the_runs_updates():
    cfg = h.Config.from_dict({"optimizer": {"schedule": "cosine"}, "run": {"updates": 50}})
    assert h.runner.hyper_of(cfg).schedule.total == 50
    with pytest.raises(ConfigError, match="optimizer.schedule.*total="):
        h.Config.from_dict(
            {"optimizer": {"schedule": "cosine", "schedule_unit": "samples"}, "run": {"updates": 5}}
        )


def test_progress_in_samples_and_time():
    """Progress in samples counts those applied before the update; in time, the update's
    own time."""
    hyper = Hyper(1.0, schedule=parse_schedule("linear:total=100,final=0"), unit="samples")
    hyper.batch_size = 10
    assert [hyper.at(v, n=3)[0] for v in range(3)] == pytest.approx([1.0, 0.7, 0.4])
    hyper = Hyper(1.0, schedule=parse_schedule("step:every=2,gamma=0.5"), unit="time")
    assert hyper.at(0, time=1.9)[0] == 1.0 and hyper.at(1, time=4.1)[0] == 0.25


@pytest.mark.parametrize(("scale", "factor"), [("linear", 5.0), ("sqrt", math.sqrt(5))])
def test_scale_lr_multiplies_by_the_gradients_of_each_update(scale, factor):
    base = {"policy": {"name": "backup", "workers": 6, "backups": 1}, "run": {"updates": 12}}
    cfg = h.Config.from_dict(base | {"optimizer": {"lr": 0.01, "scale_lr": scale}})
    u = h.run(cfg).trace.updates
    assert (u.n_gradients == 5).all()
    np.testing.assert_allclose(u.lr, 0.01 * factor, rtol=1e-12)


def test_linear_scaling_of_a_mean_is_the_sum_rule():
    """lr / W scaled by W gradients steps exactly as lr does (powers of two: no rounding)."""
    base = {"task": {"name": "quadratic"}, "policy": {"name": "sync", "workers": 4}}
    plain = h.run(h.Config.from_dict(base | {"optimizer": {"lr": 0.5}, "run": {"updates": 20}}))
    scaled = h.run(
        h.Config.from_dict(
            base | {"optimizer": {"lr": 0.125, "scale_lr": "linear"}, "run": {"updates": 20}}
        )
    )
    assert torch.equal(plain.params, scaled.params)


def test_scale_follows_a_count_that_changes_from_update_to_update():
    """A hybrid from one gradient per update to W: the lr follows n in each update."""
    cfg = h.Config.from_dict(
        {
            "policy": {"name": "hybrid", "workers": 4, "threshold": "linear:start=0,end=30"},
            "optimizer": {"lr": 0.01, "scale_lr": "linear"},
            "run": {"updates": 40},
        }
    )
    u = h.run(cfg).trace.updates
    assert u.n_gradients.nunique() > 2
    np.testing.assert_allclose(u.lr, 0.01 * u.n_gradients, rtol=1e-12)


def test_both_sides_of_a_hybrid_switch():
    """async_lr / async_momentum in force while asynchronous, lr / momentum once
    synchronous, switching at the threshold's step."""
    cfg = h.Config.from_dict(
        {
            "policy": {"name": "hybrid", "workers": 4, "threshold": "step:at=15"},
            "optimizer": {"lr": 0.1, "momentum": 0.9, "async_lr": 0.01, "async_momentum": 0.5},
            "run": {"updates": 30},
        }
    )
    u = h.run(cfg).trace.updates
    before, after = u[u.regime == 0.0], u[u.regime == 1.0]
    assert len(before) == 15 and len(after) == 15
    assert (before.lr == 0.01).all() and (before.momentum == 0.5).all()
    assert (after.lr == 0.1).all() and (after.momentum == 0.9).all()
    assert (before.version < after.version.min()).all()


def test_interpolation_along_the_level():
    hyper = Hyper(0.1, momentum=0.9, async_lr=0.001, async_momentum=0.0)
    lr, mom = hyper.at(0, level=0.5)
    assert lr == pytest.approx(0.01) and mom == pytest.approx(0.45)


def test_momentum_buffer_is_kept_across_a_switch():
    """SGD's buffer carries on through the switch: only the coefficients change. The
    reference is torch's SGD rule written out in float64: b = mu b + g; x -= lr b."""
    hyper = Hyper(0.1, momentum=0.9, async_lr=0.02, async_momentum=0.3)
    server = ParameterServer(torch.zeros(3), "sgd", lr=0.1, momentum=0.9, hyper=hyper)
    grads = [torch.tensor([1.0, -2.0, 0.5]) * (k + 1) for k in range(6)]
    levels = [0, 0, 0, 1, 1, 1]
    x, b = np.zeros(3), None
    for g, level in zip(grads, levels, strict=True):
        server.apply(g, level=level)
        lr, mu = (0.02, 0.3) if level == 0 else (0.1, 0.9)
        gd = g.double().numpy()
        b = gd.copy() if b is None else mu * b + gd
        x = x - lr * b
    np.testing.assert_allclose(server.params.double().numpy(), x, rtol=1e-6)
    assert [u[0] for u in server.used] == [0.02] * 3 + [0.1] * 3


def test_local_backend_records_the_same_lrs():
    """The coordinator sets each update's lr as the replay does."""
    cfg = h.Config.from_dict(
        {
            "policy": {"name": "backup", "workers": 3, "backups": 1},
            "optimizer": {"lr": 0.05, "scale_lr": "linear", "schedule": "step:every=4"},
            "run": {"backend": "local", "updates": 10},
        }
    )
    u = h.run(cfg).trace.updates
    expected = [0.05 * 2 * 0.1 ** (v // 4) for v in range(10)]
    np.testing.assert_allclose(u.lr, np.where(u.n_gradients > 0, expected, np.nan), rtol=1e-12)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("optimizer.schedule=warp", "optimizer.schedule"),
        ("optimizer.schedule=cosine:warmup=300", "optimizer.schedule"),
        ("optimizer.schedule=step:gamma=0.5", "optimizer.schedule"),
        ("optimizer.schedule_unit=epochs", "optimizer.schedule_unit"),
        ("optimizer.scale_lr=square", "optimizer.scale_lr"),
        ("optimizer.async_lr=-1", "optimizer.async_lr"),
        ("optimizer.async_momentum=1", "optimizer.async_momentum"),
    ],
)
def test_bad_settings_name_their_field(override, field):
    with pytest.raises(ConfigError) as info:
        h.Config.from_dict({"run": {"updates": 200}}, [override])
    assert info.value.field == field


def test_async_momentum_needs_an_optimizer_with_momentum():
    with pytest.raises(ConfigError, match="optimizer.async_momentum"):
        h.Config.from_dict({"optimizer": {"name": "adam", "async_momentum": 0.5}})


def test_a_resumed_run_keeps_the_schedule(tmp_path):
    """A checkpoint carries the lrs so far and the sample count: the resumed run records
    the same lr column and ends with the same parameters."""
    spec = {
        "policy": {"name": "async", "workers": 3},
        "optimizer": {"lr": 0.05, "schedule": "linear:total=40", "schedule_unit": "samples"},
        "run": {"updates": 30},
    }
    whole = h.run(h.Config.from_dict(spec))
    cfg = h.Config.from_dict(spec, ["run.checkpoint_every=10"])

    def stop(phase, done, total):
        if phase == "train" and done == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        h.run(cfg, out=tmp_path, progress=stop)
    resumed = h.resume(tmp_path)
    assert resumed.summary["resumed_from"] == 20
    assert torch.equal(resumed.params, whole.params)
    np.testing.assert_array_equal(resumed.trace.updates.lr, whole.trace.updates.lr)
