"""Local steps (issue 36: [worker], DiLoCo, Local SGD) in the simulator, against the
algorithms written out in float64 here, and the plain path they must leave unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hybridsgd as h
from hybridsgd.backends.build import build_cluster, samplers_for
from hybridsgd.errors import ConfigError
from hybridsgd.runner import RunResult
from hybridsgd.tasks import build_task
from tests.helpers import make_config

#: a small least-squares problem whose gradient is written out below; constant compute
#: times: in a sync round every worker's job reads the same version, round r is update r
BASE = {
    "task": {"name": "quadratic", "dim": 6, "samples": 64, "batch_size": 8, "noise": 0.1},
    "policy": {"name": "sync", "workers": 2},
    "timing": {"compute": "constant:value=1"},
    "run": {"updates": 4, "eval_every": 4, "threads": 1},
}


def _data(cfg: h.Config):
    """The problem in float64, each worker's minibatch stream, the initial point."""
    task = build_task(cfg.task, cfg.run.seed)
    a, b = (t.double().numpy() for t in (task.x_train, task.y_train))
    return a, b, samplers_for(cfg, task), task.initial_params().double().numpy()


def _grad(a, b, idx, x):
    """The gradient of 0.5 mean((a_i x - b_i)^2) over the minibatch ``idx``."""
    return a[idx].T @ (a[idx] @ x - b[idx]) / len(idx)


def _local_sgd(cfg: h.Config, steps: list[int], lr: float, send=lambda d: d) -> np.ndarray:
    """Local SGD in float64: each round, worker w takes steps[w] plain SGD steps from the
    global parameters on its own minibatches; the server's SGD at lr 1 then subtracts the
    mean of what the workers ``send`` of their pseudo-gradients."""
    a, b, feeds, theta = _data(cfg)
    for r in range(cfg.run.updates):
        sent = []
        for w, H in enumerate(steps):
            x = theta.copy()
            for i in range(H):
                x = x - lr * _grad(a, b, feeds[w].batch(r * H + i), x)
            sent.append(send(theta - x))
        theta = theta - np.mean(sent, axis=0)
    return theta


def test_diloco_equals_its_algorithm_written_out_in_float64():
    """DiLoCo (Douillard et al. 2023, Algorithm 1): each of 2 workers takes H = 3 AdamW
    steps from the global parameters (its AdamW state kept from round to round); the outer
    gradient is the mean of (global - local); the outer optimizer is SGD with Nesterov
    momentum. 4 rounds."""
    H, lr_in, wd, betas, eps = 3, 0.05, 0.01, (0.9, 0.95), 1e-8
    lr_out, mu = 0.7, 0.9
    cfg = make_config(
        BASE,
        worker={"steps": H, "optimizer": "adamw", "lr": lr_in, "weight_decay": wd,
                "options": {"betas": list(betas), "eps": eps}},
        optimizer={"name": "sgd", "lr": lr_out, "momentum": mu, "options": {"nesterov": True}},
    )  # fmt: skip
    a, b, feeds, theta = _data(cfg)
    W = cfg.policy.workers
    m, v, t = (
        [np.zeros_like(theta) for _ in range(W)],
        [np.zeros_like(theta) for _ in range(W)],
        [0] * W,
    )
    buf = None
    for r in range(cfg.run.updates):
        deltas = []
        for w in range(W):
            x = theta.copy()
            for i in range(H):
                g = _grad(a, b, feeds[w].batch(r * H + i), x)
                t[w] += 1
                x = x * (1 - lr_in * wd)  # AdamW: decoupled weight decay
                m[w] = betas[0] * m[w] + (1 - betas[0]) * g
                v[w] = betas[1] * v[w] + (1 - betas[1]) * g * g
                m_hat, v_hat = m[w] / (1 - betas[0] ** t[w]), v[w] / (1 - betas[1] ** t[w])
                x = x - lr_in * m_hat / (np.sqrt(v_hat) + eps)
            deltas.append(theta - x)
        outer = np.mean(deltas, axis=0)
        buf = outer if buf is None else mu * buf + outer
        theta = theta - lr_out * (outer + mu * buf)
    got = h.run(cfg, progress=False)
    np.testing.assert_allclose(got.params.double().numpy(), theta, rtol=2e-5, atol=2e-6)


def test_local_sgd_with_outer_sgd_at_lr_1_averages_the_workers_parameters():
    """Local SGD: H = 4 plain SGD steps on each worker, then the server's SGD at lr 1 on the
    mean pseudo-gradient sets the parameters to the workers' mean."""
    H, lr = 4, 0.1
    cfg = make_config(
        BASE,
        policy={"name": "sync", "workers": 3},
        worker={"steps": H, "lr": lr},
        optimizer={"name": "sgd", "lr": 1.0},
    )
    a, b, feeds, theta = _data(cfg)
    for r in range(cfg.run.updates):
        ends = []
        for w in range(3):
            x = theta.copy()
            for i in range(H):
                x = x - lr * _grad(a, b, feeds[w].batch(r * H + i), x)
            ends.append(x)
        theta = np.mean(ends, axis=0)
    got = h.run(cfg, progress=False)
    np.testing.assert_allclose(got.params.double().numpy(), theta, rtol=1e-5, atol=1e-6)


POLICIES = {
    "sync": {"name": "sync", "workers": 4},
    "backup": {"name": "backup", "workers": 5, "backups": 1},
    "async": {"name": "async", "workers": 3},
    "k_async": {"name": "k_async", "workers": 4, "k": 2},
    "ssp": {"name": "ssp", "workers": 3, "staleness_bound": 2},
    "hybrid": {"name": "hybrid", "workers": 4, "threshold": "linear:start=0,end=10"},
}


@pytest.mark.parametrize("policy", POLICIES)
def test_one_sgd_step_at_lr_1_is_the_gradient_itself(policy):
    """The default [worker] (1 step of SGD at lr 1) is no local step at all: the config
    writes no [worker] and the run is the plain one. Taken through the local-step path
    (reset_state makes the section other than the default, and changes nothing for SGD
    without momentum), its pseudo-gradient read - (read - g) is g to rounding, whatever
    the policy: the same schedule, parameters equal to float tolerance."""
    base = {
        "task": {"name": "mlp-digits", "batch_size": 16},
        "optimizer": {"lr": 0.1, "momentum": 0.5},
        "timing": {"compute": "lognormal:mu=0,sigma=0.5"},
        "run": {"updates": 30, "eval_every": 10, "threads": 1},
    }
    plain_cfg = make_config(base, policy=POLICIES[policy], worker={"steps": 1, "lr": 1.0})
    assert plain_cfg.worker.plain and "worker" not in plain_cfg.to_dict()
    plain = h.run(plain_cfg, progress=False)
    assert torch.equal(plain.params, h.run(make_config(base, policy=POLICIES[policy])).params)
    local = h.run(plain_cfg.replace("worker.reset_state=true"), progress=False)
    pd_equal = plain.trace.gradients[["worker", "read_version", "update"]].equals(
        local.trace.gradients[["worker", "read_version", "update"]]
    )
    assert pd_equal
    torch.testing.assert_close(local.params, plain.params, rtol=1e-4, atol=1e-5)


def test_a_job_lasts_its_steps_compute_times_and_its_two_messages():
    cfg = make_config(BASE, worker={"steps": 3}, timing={"comm": "constant:value=0.5"})
    s = h.run(cfg, progress=False).trace.updates
    np.testing.assert_allclose(s.time.to_numpy(), [4.0, 8.0, 12.0, 16.0])  # 3 x 1 + 2 x 0.5
    # the bulk draws of the fast paths are the event loop's, job by job
    rnd = cfg.replace("timing.compute=lognormal:mu=0,sigma=0.5", "timing.comm=exp:mu=4")
    one, bulk = build_cluster(rnd), build_cluster(rnd)
    assert one.steps == [3, 3]
    seq = [one.delay(1, 0.0) for _ in range(5)]
    np.testing.assert_array_equal(bulk.delays(1, 5), seq)


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["worker.steps=0"], "worker.steps: must be a whole number >= 1"),
        (["worker.optimizer=adamz"], "worker.optimizer: unknown optimizer 'adamz'"),
        (["worker.lr=0"], "worker.lr: must be a positive number"),
        (
            ["worker.steps=2", "run.backend=local", "run.device=cuda"],
            "run.device: local steps on the local backend compute on the CPU",
        ),
        (
            ["worker.steps=2", "policy.name=hybrid", "policy.threshold=step:at=3",
             "policy.reading=partition"],
            "policy.reading: local steps send whole pseudo-gradients",
        ),
    ],
)  # fmt: skip
def test_settings_local_steps_cannot_take_are_one_line(sets, says):
    with pytest.raises(ConfigError) as err:
        h.Config.from_dict(BASE, sets)
    assert str(err.value).startswith(says) and "\n" not in str(err.value)


def test_pseudo_gradients_go_through_the_check_the_faults_and_a_robust_rule():
    """A NaN worker's pseudo-gradients are rejected, each one; a sign-flipping worker's
    are corrupted, and the median outvotes them better than the mean does."""

    def run(aggregator: str):
        return h.run(
            make_config(
                BASE,
                task={"name": "mlp-digits", "batch_size": 16},
                policy={"name": "sync", "workers": 5, "aggregator": aggregator},
                worker={"steps": 3, "lr": 0.3},
                faults={"nan_workers": [1], "byzantine_workers": [0]},
                optimizer={"lr": 1.0},
                run={"updates": 15, "eval_every": 15},
            ),
            progress=False,
        )

    median, mean = run("median"), run("mean")
    g = median.trace.gradients
    rejected = g[g.fate == "rejected"]
    assert set(rejected.worker) == {1} and len(rejected) == 15
    assert median.summary["local_steps"] == 3
    start = median.trace.evals.loss.iloc[0]
    assert median.summary["final_loss"] < min(0.25 * start, mean.summary["final_loss"])


def test_a_cancelled_job_leaves_the_inner_state_as_it_was():
    """A real worker's job cancelled between two of its steps (or after them, before its
    result is sent) is undone: the next job starts from the state the last finished job
    left, as in the simulator, whatever the timing of the cancel."""
    from hybridsgd.backends.inner import LocalSteps

    cfg = make_config(BASE, worker={"steps": 3, "optimizer": "adam", "lr": 0.05})
    task = build_task(cfg.task, 0)
    feed = samplers_for(cfg, task)[0]

    def batches(k):
        return task.batch(feed.batch(k))

    read = task.initial_params()
    clean, cut = LocalSteps(cfg.worker, task), LocalSteps(cfg.worker, task)
    first = clean.job(read, batches, 0)
    assert torch.equal(cut.job(read, batches, 0, between=lambda: False), first)
    calls = iter([False, True])  # cancelled before its third step
    assert cut.job(read - first, batches, 1, between=lambda: next(calls)) is None
    cut.job(read - first, batches, 2, between=lambda: False)
    cut.undo()  # finished, but cancelled while it waited out its delay
    again = cut.job(read - first, batches, 1, between=lambda: False)
    assert torch.equal(again, clean.job(read - first, batches, 1))


def test_a_dropped_job_moves_its_workers_inner_state_as_on_a_real_worker():
    """backup with late = "drop": a worker late in a round finishes its job and it is
    dropped, but its steps moved the worker's momentum, as they do in a real worker. Written out
    in float64 from the run's own trace (who read which version, with which minibatch, and
    what became of it): each version's jobs in the order they ran, then its update."""
    H, lr, mu = 2, 0.05, 0.5
    cfg = make_config(
        BASE,
        policy={"name": "backup", "workers": 3, "backups": 1, "late": "drop"},
        timing={"compute": "lognormal:mu=0,sigma=0.5"},  # who is late changes
        worker={"steps": H, "lr": lr, "momentum": mu},
        optimizer={"name": "sgd", "lr": 1.0},
        run={"updates": 6, "eval_every": 6},
    )
    got = h.run(cfg, progress=False)
    g = got.trace.gradients
    fates = g.groupby("worker").fate.agg(set)
    assert any(f >= {"dropped", "applied"} for f in fates)  # a worker with both
    a, b, feeds, theta = _data(cfg)
    buf: dict[int, np.ndarray] = {}
    deltas: dict[int, list[np.ndarray]] = {}  # by the version the update made
    done = g[g.fate.isin(["applied", "dropped"])].sort_values(["read_version", "gid"])
    for v in range(cfg.run.updates):
        for job in done[done.read_version == v].itertuples():
            x = theta.copy()
            for i in range(H):
                grad = _grad(a, b, feeds[job.worker].batch(job.minibatch * H + i), x)
                buf[job.worker] = grad if job.worker not in buf else mu * buf[job.worker] + grad
                x = x - lr * buf[job.worker]
            if job.fate == "applied":
                deltas.setdefault(int(job.update), []).append(theta - x)
        theta = theta - np.mean(deltas.pop(v + 1), axis=0)
    np.testing.assert_allclose(got.params.double().numpy(), theta, rtol=1e-5, atol=1e-6)


def assert_resumes_bit_for_bit(cfg: h.Config, tmp_path) -> RunResult:
    """A run of ``cfg`` (checkpoints every 10 updates, 30 updates) cut by Ctrl-C at update
    25 and resumed from its checkpoint at 20 ends as the uninterrupted one, bit for bit;
    the uninterrupted run's result."""

    def stop_at_25(phase: str, v: int, total: int) -> None:
        if phase == "train" and v == 25:
            raise KeyboardInterrupt

    whole = h.run(cfg, out=tmp_path / "whole", progress=False)
    with pytest.raises(KeyboardInterrupt):
        h.run(cfg, out=tmp_path / "cut", progress=stop_at_25)
    resumed = h.resume(tmp_path / "cut", progress=False)
    assert resumed.summary["resumed_from"] == 20
    assert torch.equal(resumed.params, whole.params)
    return whole


@pytest.mark.parametrize(
    "policy",
    [
        {"name": "sync", "workers": 3},  # the workers side by side: the stack's state
        {"name": "async", "workers": 3},  # each worker's own state
        {"name": "backup", "workers": 4, "backups": 1, "late": "drop"},
    ],
    ids=["sync", "async", "backup-drop"],
)
def test_a_resumed_local_step_run_ends_bit_for_bit_like_the_uninterrupted_one(tmp_path, policy):
    """The checkpoint keeps the workers' inner optimizers (Adam's moments) with the rest."""
    cfg = make_config(
        BASE,
        task={"name": "mlp-digits", "batch_size": 16},
        policy=policy,
        timing={"compute": "lognormal:mu=0,sigma=0.5"},
        worker={"steps": 2, "optimizer": "adam", "lr": 0.01},
        run={"updates": 30, "eval_every": 10, "checkpoint_every": 10},
    )
    assert_resumes_bit_for_bit(cfg, tmp_path)


def test_each_worker_may_take_its_own_number_of_steps():
    """worker.steps = [H_0, ..., H_{W-1}] (torchft's per-machine sync_every): worker w's
    j-th job is H_w steps on minibatches j H_w .. j H_w + H_w - 1, and lasts H_w draws.
    Local SGD (outer SGD at lr 1) then averages workers that took 1, 2 and 4 steps."""
    steps, lr = [1, 2, 4], 0.1
    cfg = make_config(
        BASE,
        policy={"name": "sync", "workers": 3},
        worker={"steps": steps, "lr": lr},
        optimizer={"name": "sgd", "lr": 1.0},
    )
    theta = _local_sgd(cfg, steps, lr)
    got = h.run(cfg, progress=False)
    np.testing.assert_allclose(got.params.double().numpy(), theta, rtol=1e-5, atol=1e-6)
    assert got.summary["local_steps"] == steps
    np.testing.assert_allclose(got.trace.updates.time.to_numpy(), [4.0, 8.0, 12.0, 16.0])
    asy = h.run(cfg.replace("policy.name=async", "run.updates=12"), progress=False).trace
    g = asy.gradients
    for w, H in enumerate(steps):  # constant draws of 1: a job of worker w lasts H_w
        mine = g[g.worker == w]
        np.testing.assert_allclose((mine.end_time - mine.start_time).to_numpy(), H)
    with pytest.raises(ConfigError, match=r"^worker.steps: gives 2 values for 3 workers"):
        cfg.replace("worker.steps=[1, 2]")
    with pytest.raises(ConfigError, match=r"^worker.steps: must be a whole number >= 1, or one"):
        cfg.replace("worker.steps=[1, 0, 2]")


def local_sgd_from_trace(cfg: h.Config, gradients, lr: float) -> np.ndarray:
    """Local SGD in float64 for jobs sized by time, read off a sync run's trace: round r's
    job of worker w took the ``steps`` the trace says, on the minibatches that follow those
    of the worker's earlier jobs (cancelled ones took none); the server's SGD at lr 1
    subtracts the mean pseudo-gradient."""
    a, b, feeds, theta = _data(cfg)
    g = gradients[gradients.fate == "applied"]
    begin = [0] * cfg.policy.workers
    for _, rnd in g.sort_values(["update", "worker"]).groupby("update"):
        sent = []
        for w, n in zip(rnd.worker, rnd.steps, strict=True):
            x = theta.copy()
            for i in range(n):
                x = x - lr * _grad(a, b, feeds[w].batch(begin[w] + i), x)
            begin[w] += n
            sent.append(theta - x)
        theta = theta - np.mean(sent, axis=0)
    return theta


def test_steps_sized_by_time_are_as_many_as_fit_and_read_the_stream_in_order():
    """worker.steps = "time:T" (asynchronous local SGD's dynamic local updates): a job
    takes minibatches until T units of its worker's clock have passed. With exponential
    times of mean m, their count is 1 + Poisson(T / m) and the job's compute time T plus
    an exponential overshoot of mean m (memorylessness), both closed forms; a worker 3x
    slower takes fewer. Local SGD then averages each round's jobs, written out in float64
    from the counts the trace records."""
    T, m = 2.5, 1.0
    cluster = build_cluster(
        make_config(BASE, worker={"steps": f"time:{T}"}, timing={"compute": f"exp:mu={m}"})
    )
    n, jobs = 20_000, [cluster.job(0, 0.0) for _ in range(20_000)]
    count = np.array([c for _, c in jobs], dtype=float)
    took = np.array([d for d, _ in jobs])
    assert abs(count.mean() - (1 + T / m)) < 4 * np.sqrt(T / m / n)  # Poisson's variance
    assert abs(took.mean() - (T + m)) < 4 * m / np.sqrt(n)
    assert abs(count.var() - T / m) < 0.1 * T / m

    lr = 0.1
    cfg = make_config(
        BASE,
        policy={"name": "sync", "workers": 3},
        worker={"steps": f"time:{T}", "lr": lr},
        timing={"compute": "exp:mu=1", "speed": [1, 1, 3]},
        optimizer={"name": "sgd", "lr": 1.0},
        run={"updates": 6},
    )
    got = h.run(cfg, progress=False)
    g = got.trace.gradients
    assert got.summary["local_steps"] == f"time:{T}" and (g.steps >= 1).all()
    np.testing.assert_allclose(
        got.params.double().numpy(), local_sgd_from_trace(cfg, g, lr), rtol=1e-5, atol=1e-6
    )
    mean = g.groupby("worker").steps.mean()
    assert mean[2] < min(mean[0], mean[1])  # the slow worker fits fewer
    # backup: the round's last job is cancelled; it sent nothing and read no minibatch
    bk = h.run(cfg.replace("policy.name=backup", "policy.backups=1"), progress=False)
    g = bk.trace.gradients
    assert (g[g.fate == "cancelled"].steps == 0).all() and (g.fate == "cancelled").any()
    np.testing.assert_allclose(
        bk.params.double().numpy(), local_sgd_from_trace(cfg, g, lr), rtol=1e-5, atol=1e-6
    )
    for bad, says in (
        ("time:0", "worker.steps: time:T needs a time budget T > 0 (got 0)"),
        ("time:x", 'worker.steps: must be a whole number >= 1, or one per worker, or "time:T"'),
        ("speed:3", 'worker.steps: must be a whole number >= 1, or one per worker, or "time:T"'),
    ):
        with pytest.raises(ConfigError) as err:
            cfg.replace(f'worker.steps="{bad}"')
        assert str(err.value).startswith(says) and "\n" not in str(err.value)


def test_int8_pseudo_gradients_are_what_the_workers_send_and_cost_a_quarter_of_the_bytes():
    """worker.quantize = "int8": each pseudo-gradient scaled by its largest magnitude onto
    -127..127, rounded, and back (written out in float64 here), and the push is a byte an
    entry and a float32 scale: on a link, a job's two messages cost 4n + n + 4 bytes
    instead of 8n."""
    H, lr = 2, 0.1
    cfg = make_config(
        BASE,
        worker={"steps": H, "lr": lr, "quantize": "int8"},
        optimizer={"name": "sgd", "lr": 1.0},
        timing={"comm": "link:latency=0,bandwidth=100"},
    )

    def int8(delta: np.ndarray) -> np.ndarray:
        scale = np.abs(delta).max() / 127
        return np.clip(np.round(delta / scale), -127, 127) * scale

    theta = _local_sgd(cfg, [H, H], lr, send=int8)
    got = h.run(cfg, progress=False)
    np.testing.assert_allclose(got.params.double().numpy(), theta, rtol=1e-5, atol=1e-6)
    n = 6  # the quadratic's parameters: one tensor
    per_round = H * 1.0 + (4 * n + n + 4) / 100
    np.testing.assert_allclose(got.trace.updates.time.to_numpy(), per_round * np.arange(1, 5))
    plain = h.run(cfg.replace("worker.quantize=none"), progress=False).trace.updates.time
    np.testing.assert_allclose(plain.to_numpy(), (H + 8 * n / 100) * np.arange(1, 5))


def test_fp8_pseudo_gradients_keep_e4m3s_precision():
    from hybridsgd.backends.inner import quantized

    delta = torch.tensor([[0.001, -0.5, 3.0, 1e-6], [0.0, 0.0, 0.0, 0.0]])
    sent = quantized(delta.clone(), [torch.Size([4])], "fp8")
    assert torch.equal(sent[1], delta[1])  # an all-zero pseudo-gradient stays zero
    torch.testing.assert_close(sent[0], delta[0], rtol=0.07, atol=1e-6)  # 3 mantissa bits
    assert sent[0, 2] == 3.0  # the largest magnitude is exact (it sets the scale)


def test_a_model_that_stops_batching_keeps_the_workers_state(monkeypatch):
    """If the vmapped gradient fails in a later round, the stack is split into each
    worker's parameters and Adam state and the run goes on one job at a time: the same
    parameters as a run that never batched."""
    from hybridsgd.tasks.base import Task

    cfg = make_config(
        BASE,
        task={"name": "mlp-digits", "batch_size": 16},
        policy={"name": "sync", "workers": 3},
        worker={"steps": 2, "optimizer": "adam", "lr": 0.01},
        run={"updates": 6, "eval_every": 6},
    )
    grads_at = Task.grads_at
    calls = {"n": 0}

    def fails_after(limit: int):
        def grads(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] > limit:
                raise RuntimeError("no vmap here")
            return grads_at(self, *args, **kwargs)

        return grads

    monkeypatch.setattr(Task, "grads_at", fails_after(0))
    never = h.run(cfg, progress=False).params
    calls["n"] = 0
    monkeypatch.setattr(Task, "grads_at", fails_after(4))  # two rounds of 2 steps batch
    later = h.run(cfg, progress=False).params
    torch.testing.assert_close(later, never, rtol=1e-4, atol=1e-5)
