"""The workloads of docs/tasks.md: each trains, the local backend computes what the simulator
computes on each, and each one's own semantics (BatchNorm per worker, a fresh deterministic
stream, a causal language model, sparse factorization gradients) hold exactly."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats
from torch.nn import functional as F

import hybridsgd as h
from hybridsgd.errors import ConfigError
from hybridsgd.runner import samplers_for
from hybridsgd.tasks import StreamTask, build_task
from hybridsgd.tasks.stream import TEST_BASE, VALIDATION_BASE, normal, uniform
from tests.helpers import make_config

#: name, task settings, optimizer, updates, the factor the test loss must fall by under sync
TRAINS = [
    ("cnn-digits", {"norm": "batch"}, {"lr": 0.1}, 60, 0.2),
    ("cnn-digits", {"norm": "group"}, {"lr": 0.1}, 60, 0.5),
    # (80: at 60 its loss has a spike whose height moves with the thread count, 0.98 on
    # one thread and 1.45 on two; at 70 and 80 it is 0.40-0.41 on both)
    ("cnn-mnist", {}, {"lr": 0.1}, 80, 0.5),
    ("teacher", {"batch_size": 32}, {"lr": 0.3, "momentum": 0.9}, 150, 0.75),
    ("mf", {"batch_size": 32}, {"lr": 10.0}, 600, 0.1),
    ("lm", {"layers": 1, "context": 64}, {"name": "adamw", "lr": 3e-3}, 40, 0.6),
]


def config(name: str, task: dict, opt: dict, updates: int, workers: int = 4) -> h.Config:
    return make_config(
        {"task": {"batch_size": 16}, "policy": {"name": "sync"}},
        task={"name": name, **task},
        policy={"workers": workers},
        optimizer=opt,
        run={"updates": updates, "eval_every": updates},
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "task", "opt", "updates", "factor"),
    TRAINS,
    ids=[f"{n}{'-' + t['norm'] if 'norm' in t else ''}" for n, t, *_ in TRAINS],
)
def test_every_workload_trains_under_sync(name, task, opt, updates, factor):
    ev = h.run(config(name, task, opt, updates), progress=False).trace.evals
    assert np.isfinite(ev.loss).all()
    assert ev.loss.iloc[-1] < factor * ev.loss.iloc[0]


#: every task, including BatchNorm, on the local backend: what the simulator computes
LOCAL = [
    ("cnn-digits", {"norm": "batch"}, {"lr": 0.1}),
    ("cnn-digits", {"norm": "group"}, {"lr": 0.1}),
    ("cnn-mnist", {}, {"lr": 0.1}),
    ("teacher", {"norm": "batch"}, {"lr": 0.3}),
    ("mf", {"batch_size": 32}, {"lr": 10.0}),
    ("lm", {"layers": 1, "context": 32}, {"name": "adamw", "lr": 3e-3}),
]


@pytest.mark.parametrize(
    ("name", "task", "opt"), LOCAL, ids=[f"{n}-{t.get('norm', '')}" for n, t, _ in LOCAL]
)
def test_the_local_backend_matches_the_simulator(name, task, opt):
    cfg = config(name, task, opt, 8, workers=3)
    sim = h.run(cfg, progress=False)
    local = h.run(cfg.replace("run.backend=local"), progress=False)
    assert torch.allclose(sim.params, local.params, atol=2e-5), (
        (sim.params - local.params).abs().max()
    )
    assert (local.trace.gradients.fate == "applied").all()


def test_cnn_batchnorm_normalises_each_worker_over_its_own_minibatch():
    """Sync on cnn-digits with BatchNorm equals sync written out by hand: each worker's
    gradient from the module in training mode on its own minibatch alone, then the mean."""
    cfg = config("cnn-digits", {"norm": "batch"}, {"lr": 0.1}, 6, workers=4)
    sim = h.run(cfg, progress=False)
    task = build_task(cfg.task, cfg.run.seed)
    feeds = samplers_for(cfg, task)
    model = copy.deepcopy(task.model)
    with torch.no_grad():  # the task's module is scratch space: start from its initial point
        initial = task.unflatten(task.initial_params()).values()
        for p, v in zip(model.parameters(), initial, strict=True):
            p.copy_(v)
    params = list(model.parameters())
    for k in range(6):
        grads = []
        for w in range(4):
            x, y = task.batch(feeds[w].batch(k))
            model.train()
            model.zero_grad()
            F.cross_entropy(model(x), y).backward()
            grads.append([p.grad.clone() for p in params])
        with torch.no_grad():
            for i, p in enumerate(params):
                p -= 0.1 * sum(g[i] for g in grads) / 4
    want = torch.cat([p.detach().reshape(-1) for p in params])
    assert torch.allclose(sim.params, want, atol=1e-5)


# -- the teacher-student stream ---------------------------------------------------------------
def teacher_cfg(**task) -> h.Config:
    return config("teacher", task, {"lr": 0.3}, 10)


def test_the_stream_is_deterministic_and_fresh_for_every_minibatch():
    cfg = teacher_cfg()
    a, b = build_task(cfg.task, 0), build_task(cfg.task, 5)  # run seeds set only the student
    assert isinstance(a, StreamTask)
    feeds = samplers_for(cfg, a)
    seen = set()
    for w, feed in enumerate(feeds):
        for k in range(50):
            x, y = a.batch(feed.batch(k))
            x2, y2 = b.batch(samplers_for(cfg, b)[w].batch(k))
            assert torch.equal(x, x2) and torch.equal(y, y2)  # same samples, any process
            seen.update(map(tuple, x[:, :3].tolist()))
    assert len(seen) == 4 * 50 * 16  # no input drawn twice across workers and minibatches
    # another run seed: other samples; the test stream stays the same
    other = samplers_for(cfg.replace("run.seed=1"), a)
    assert not torch.equal(a.batch(other[0].batch(0))[0], a.batch(feeds[0].batch(0))[0])
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_test, b.y_test)
    assert len(a.x_test) == cfg.task.test_samples
    # a validation stream for tuning, disjoint from the test stream
    v = a.holdout(0.2)
    assert v.evaluated_on == "validation" and not torch.equal(v.x_test, a.x_test)
    assert torch.equal(v.x_test, a.batch(VALIDATION_BASE + np.arange(len(a.x_test)))[0])
    assert torch.equal(a.x_test, a.batch(TEST_BASE + np.arange(len(a.x_test)))[0])


def test_the_stream_generator_gives_uniform_and_normal_numbers():
    """Kolmogorov-Smirnov against scipy's distributions, and no correlation between
    neighbouring counters (the property a counter-based generator must have)."""
    ctr = np.arange(200_000, dtype=np.uint64)
    u, z = uniform(12345, ctr), normal(12345, ctr)
    assert u.min() > 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert stats.kstest(z, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(z[:-1], z[1:])[0, 1]) < 0.01
    assert not np.array_equal(uniform(1, ctr[:100]), uniform(2, ctr[:100]))


def test_teacher_labels_are_balanced_and_as_noisy_as_asked():
    clean = build_task(teacher_cfg(noise=0.0, test_samples=20000).task, 0)
    noisy = build_task(teacher_cfg(noise=0.3, test_samples=20000).task, 0)
    assert torch.equal(clean.x_test, noisy.x_test)  # noise changes labels, never inputs
    share = torch.bincount(clean.y_test, minlength=10).float() / len(clean.y_test)
    assert share.min() > 0.5 / 10 and share.max() < 2.0 / 10
    # a label is replaced with probability 0.3 by a uniform class: it changes w.p. 0.3 x 0.9
    changed = float((clean.y_test != noisy.y_test).float().mean())
    assert changed == pytest.approx(0.3 * 0.9, abs=0.01)


# -- the language model -----------------------------------------------------------------------
def test_lm_reads_pythons_own_docs_and_is_causal():
    cfg = config("lm", {"context": 32, "layers": 2}, {"name": "adamw", "lr": 1e-3}, 1)
    task = build_task(cfg.task, 0)
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics)).encode()
    x, y = task.batch([0, 1])
    assert bytes(x[0].tolist()) == text[:32] and bytes(y[0].tolist()) == text[1:33]
    assert bytes(x[1].tolist()) == text[16:48]  # windows overlap by half a context
    # an untrained model predicts about uniformly over 256 bytes
    loss, acc = task.evaluate(task.initial_params())
    assert loss == pytest.approx(math.log(256), rel=0.05) and math.isnan(acc)
    # position t's output depends on bytes 0..t only
    model = task.load(task.initial_params()).eval()
    changed = x[:1].clone()
    changed[0, 20:] ^= 1
    with torch.no_grad():
        a, b = model(x[:1]), model(changed)
    assert torch.equal(a[0, :20], b[0, :20]) and not torch.allclose(a[0, 20:], b[0, 20:])


# -- matrix factorization -------------------------------------------------------------------------
def test_mf_gradients_touch_only_their_own_rows_and_rmse_reaches_the_noise_floor():
    cfg = config("mf", {"batch_size": 32}, {"lr": 10.0}, 1000)
    task = build_task(cfg.task, 0)
    x, y = task.batch(np.arange(16))
    g, _ = task.grad(task.initial_params(), x, y)
    parts = task.unflatten(g)
    users = torch.unique(x[:, 0])
    items = torch.unique(x[:, 1])
    nonzero_users = torch.nonzero(parts["users"].abs().sum(1)).flatten()
    nonzero_items = torch.nonzero(parts["items"].abs().sum(1)).flatten()
    assert set(nonzero_users.tolist()) <= set(users.tolist())
    assert set(nonzero_items.tolist()) <= set(items.tolist())
    assert (g != 0).float().mean() < 0.05
    # the test RMSE of the trained factorization, against the noise floor (std 0.1)
    r = h.run(cfg, progress=False)
    rmse = r.summary["final_from_loss"]["test RMSE"]
    assert rmse == pytest.approx(math.sqrt(r.summary["final_loss"]))
    assert rmse < 0.2  # the ratings themselves have RMSE about 1


@pytest.mark.slow
# -- bad settings ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("task.norm=layer", "task.norm"),
        ("task.channels=[6,0]", "task.channels"),
        ("task.rank=0", "task.rank"),
        ("task.observed=2", "task.observed"),
        ("task.corpus=/nowhere/text.txt", "task.corpus"),
        ("task.heads=3", "task.heads"),
        ("task.noise=1.5", "task.noise"),
        ("task.split=dirichlet", "task.split"),
        ("task.classes=1", "task.classes"),
    ],
)
def test_bad_task_settings_are_one_line_and_exit_2(setting, field, tmp_path):
    name = {
        "task.rank=0": "mf",
        "task.observed=2": "mf",
        "task.corpus=/nowhere/text.txt": "lm",
        "task.heads=3": "lm",
        "task.noise=1.5": "teacher",
        "task.split=dirichlet": "teacher",
        "task.classes=1": "teacher",
    }.get(setting, "cnn-digits")
    path = tmp_path / "c.toml"
    path.write_text(f'[task]\nname = "{name}"\n[run]\nupdates = 2\n')
    cmd = [sys.executable, "-m", "hybridsgd", "run", str(path), "--set", setting, "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0], proc.stderr


def test_a_cnn_too_deep_for_its_image_is_refused():
    cfg = config("cnn-digits", {"channels": [4, 4, 4, 4]}, {"lr": 0.1}, 1)
    with pytest.raises(ConfigError, match="task.channels"):
        build_task(cfg.task, 0)


def test_a_large_stack_of_minibatches_is_cut_into_passes_of_whole_minibatches():
    """The simulator's stacked minibatches of a large model go through in passes of at most
    Task.stack_limit samples, whole minibatches each: the same mean gradient and loss."""
    task = build_task(h.Config.from_dict({"task": {"name": "cnn-mnist"}}).task, 0)
    assert 32 <= task.stack_limit < 1024  # LeNet on 28x28: about 19,000 activations a sample
    x, y = task.batch(np.arange(1024))
    params = task.initial_params()
    calls: list[int] = []
    hook = task.model.register_forward_hook(lambda _m, inp, _o: calls.append(len(inp[0])))
    try:
        whole, loss = task.grad(params, x, y)
        cut, cut_loss = task.grad(params, x, y, minibatch=32)
        parts, parts_loss = task.grad_parts(params, x, y, 32)
    finally:
        hook.remove()
    step = task.stack_limit // 32 * 32
    assert calls[0] == 1024 and calls[1] == step and all(c % 32 == 0 for c in calls[1:])
    assert torch.allclose(cut, whole, atol=1e-6) and cut_loss == pytest.approx(loss, rel=1e-6)
    assert torch.allclose(torch.cat([p.reshape(-1) for p in parts]), whole, atol=1e-6)
    assert parts_loss == pytest.approx(loss, rel=1e-6)
