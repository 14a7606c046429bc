"""run.device and run.devices (docs/gpu.md).

The first part runs everywhere: the choice of devices, the refusals, and that the CPU path is
the one it always was. The tests marked ``gpu`` need CUDA and are skipped without it
(``make test-gpu`` runs them); they compare GPU runs with CPU runs of the same config.
"""

from __future__ import annotations

import pytest
import torch

import hybridsgd as h
from hybridsgd import devices
from hybridsgd.cli import main
from hybridsgd.devices import DeviceMirror, resolve, server_device, worker_devices
from hybridsgd.errors import ConfigError
from hybridsgd.tasks import build_task
from tests.helpers import async_from_trace, make_config

CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs CUDA (make test-gpu)")


BASE = {
    "task": {"name": "mlp-digits", "batch_size": 16},
    "policy": {"name": "async", "workers": 4},
    "run": {"updates": 30, "eval_every": 10},
}


def config(backend: str = "sim", **run) -> h.Config:
    return make_config(BASE, run={"backend": backend, **run})


# -- everywhere --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("run.device", '"gpu"', 'run.device: must be "cpu", "cuda", "cuda:N" or "auto"'),
        ("run.device", '"cuda:x"', 'run.device: must be "cpu", "cuda", "cuda:N" or "auto"'),
        ("run.local.devices", '["cpu"]', 'run.local.devices[0]: lists GPUs: "cuda:N"'),
        ("run.local.devices", '["cuda:0"]', "run.local.devices: spreads local workers over"),
        # the key's old name (it moved to [run.local], issue 35) is read; the message names
        # where it lives now
        ("run.devices", '["cpu"]', 'run.local.devices[0]: lists GPUs: "cuda:N"'),
    ],
)
def test_bad_device_names_are_refused_before_anything_runs(key, value, says):
    with pytest.raises(ConfigError) as err:
        config().replace(f"{key}={value}")
    assert str(err.value).startswith(says)


@pytest.mark.skipif(CUDA, reason="checks the refusal on a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_line_and_exit_2(device, capsys, tmp_path):
    args = ["run", "examples/digits-backup.toml", "--out", str(tmp_path / "r"), "--quiet"]
    assert main([*args, "--set", f"run.device={device}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"hybridsgd: error: run.device: '{device}' needs a GPU, but ")
    assert err.endswith('use "cpu" or "auto"') and "\n" not in err
    assert not (tmp_path / "r" / "summary.json").exists()


def test_workers_take_the_gpus_in_turn(monkeypatch):
    monkeypatch.setattr(devices, "gpus", lambda: 3)
    names = lambda ds: [str(d) for d in ds]  # noqa: E731
    assert names(worker_devices("cuda", [], 5)) == [
        "cuda:0",
        "cuda:1",
        "cuda:2",
        "cuda:0",
        "cuda:1",
    ]
    assert names(worker_devices("cuda:2", [], 3)) == ["cuda:2"] * 3
    assert names(worker_devices("cpu", ["cuda:2", "cuda:0"], 3)) == ["cuda:2", "cuda:0", "cuda:2"]
    assert names(worker_devices("auto", [], 2)) == ["cuda:0", "cuda:1"]
    with pytest.raises(
        ConfigError, match=r"run.local.devices\[1\]: 'cuda:3' is out of range: torch"
    ):
        worker_devices("cpu", ["cuda:0", "cuda:3"], 2)
    with pytest.raises(ConfigError, match="run.device: 'cuda:7' is out of range"):
        resolve("cuda:7")
    monkeypatch.setattr(devices, "gpus", lambda: 0)
    assert names(worker_devices("auto", [], 2)) == ["cpu", "cpu"]


def test_the_local_server_goes_to_the_gpu_only_when_every_worker_shares_it(monkeypatch):
    """run.local.server: "gpu" needs the workers on one GPU; "auto" falls back to the CPU
    where they are not; "cpu" is the CPU whatever the workers use."""
    monkeypatch.setattr(devices, "gpus", lambda: 2)
    assert str(server_device("gpu", "cuda:1", [], 4)) == "cuda:1"
    assert str(server_device("gpu", "cuda", [], 1)) == "cuda:0"  # one worker: GPU 0
    assert str(server_device("auto", "cpu", ["cuda:1", "cuda:1"], 3)) == "cuda:1"
    assert str(server_device("cpu", "cuda:1", [], 4)) == "cpu"
    assert str(server_device("auto", "cuda", [], 4)) == "cpu"  # spread over both GPUs
    assert str(server_device("auto", "cpu", [], 4)) == "cpu"
    with pytest.raises(ConfigError) as err:
        server_device("gpu", "cuda", [], 4)
    assert str(err.value) == (
        'run.local.server: "gpu" keeps the server on the one GPU every worker computes on,'
        ' but the workers are on cuda:0, cuda:1: put them on one GPU (run.device = "cuda:N")'
        ' or set it to "cpu"'
    )
    monkeypatch.setattr(devices, "gpus", lambda: 0)  # auto without a GPU: the CPU
    with pytest.raises(ConfigError, match=r'workers are on cpu: .*\(run.device = "cuda" or'):
        server_device("gpu", "auto", [], 2)


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["run.local.server=disk"], "run.local.server: "),
        (["run.local.server=gpu"], 'run.local.server: "gpu" keeps the server on the workers\''),
        (["run.backend=sim", "run.local.server=auto"], "run.local.server: places the local"),
    ],
)
def test_a_server_placement_that_cannot_hold_is_refused_with_the_config(sets, says):
    with pytest.raises(ConfigError) as err:
        config("local").replace(*sets)
    assert str(err.value).startswith(says)


def test_a_gpu_server_without_a_gpu_is_one_line_and_exit_2(capsys, tmp_path):
    args = ["run", "examples/digits-backup.toml", "--out", str(tmp_path / "r"), "--quiet"]
    sets = ["run.backend=local", "run.local.server=gpu"]
    assert main([*args, *(x for s in sets for x in ("--set", s))]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith('hybridsgd: error: run.local.server: "gpu" keeps the server')
    assert "\n" not in err and not (tmp_path / "r" / "summary.json").exists()


@pytest.mark.skipif(CUDA, reason="auto is the CPU only where there is no GPU")
def test_a_local_server_on_auto_without_a_gpu_stays_in_shared_cpu_memory():
    cfg = config("local", time_unit=0.0).replace(
        "policy.name=sync", "policy.workers=2", "run.updates=6", "run.local.server=auto"
    )
    run = h.run(cfg)
    assert run.trace.summary["server_device"] == "cpu"
    assert run.trace.summary["worker_devices"] == ["cpu", "cpu"]
    assert run.params.device.type == "cpu" and run.trace.summary["updates"] == 6


@pytest.mark.skipif(CUDA, reason="auto is the CPU only where there is no GPU")
def test_auto_without_a_gpu_is_the_cpu_bit_for_bit():
    cpu = h.run(config())
    auto = h.run(config().replace("run.device=auto"))
    assert torch.equal(cpu.params, auto.params)
    assert cpu.trace.evals.loss.tolist() == auto.trace.evals.loss.tolist()
    assert auto.trace.summary["device"] == "cpu"


@pytest.mark.parametrize(
    ("device", "cluster_gpus", "workers", "per_worker"),
    [("cpu", 8, 4, 0.0), ("cuda", 8, 4, 1.0), ("cuda", 2, 4, 0.5), ("cuda", 1, 3, 0.3333),
     ("auto", 0, 4, 0.0), ("auto", 4, 4, 1.0)],
)  # fmt: skip
def test_ray_workers_ask_for_a_share_of_the_gpus(device, cluster_gpus, workers, per_worker):
    from hybridsgd.backends.ray import RayDriver

    class FakeRay:
        def cluster_resources(self):
            return {"CPU": 16.0, "GPU": float(cluster_gpus)}

    backend = RayDriver.__new__(RayDriver)  # only what _gpus_per_worker reads
    backend.ray, backend.device, backend.W = FakeRay(), device, workers
    assert backend._gpus_per_worker() == per_worker


def test_ray_refuses_cuda_on_a_cluster_without_gpus():
    from hybridsgd.backends.ray import RayDriver

    backend = RayDriver.__new__(RayDriver)
    backend.ray = type("FakeRay", (), {"cluster_resources": lambda self: {"CPU": 4.0}})()
    backend.device, backend.W = "cuda", 2
    with pytest.raises(ConfigError, match="run.device: 'cuda' needs GPUs, but the Ray cluster"):
        backend._gpus_per_worker()


def test_the_cpu_mirror_is_the_plain_gradient():
    task = build_task(config().task, 0)
    params = task.initial_params()
    x, y = task.batch(list(range(16)))
    want, want_loss = task.grad(params, x, y)
    out = torch.empty(task.numel)
    loss = DeviceMirror(task, "cpu").grad(params, x, y, out)
    assert torch.equal(out, want) and loss == want_loss


def test_a_worker_load_repeats_the_gradients_work_and_changes_nothing_else():
    """run.worker_load = 3.5: the job's gradient computed again twice on the whole minibatch
    and once on half of it (the same work, which speeds up alone as the gradient does),
    into a buffer of its own: the job's gradient, the parameters and the worker's random
    stream are as without the load."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.Dropout(0.5), torch.nn.Linear(16, 3)
    )  # dropout draws from the worker's random stream
    data = (torch.randn(64, 8), torch.randint(0, 3, (64,)))
    task = h.Task.from_module(model, data, torch.nn.functional.cross_entropy)
    params = task.initial_params()
    x, y = task.batch(list(range(16)))
    state = torch.get_rng_state()
    want, _ = task.grad(params, x, y)
    torch.set_rng_state(state)  # the mirror's gradient draws the same dropout masks
    sizes = []
    grad = task.grad

    def counted(p, xs, ys, **kwargs):
        sizes.append(len(xs))
        return grad(p, xs, ys, **kwargs)

    task.grad = counted
    mirror, out = DeviceMirror(task, "cpu", load=3.5), torch.empty(task.numel)
    kept = params.clone()
    mirror.grad(params, x, y, out)
    moved = torch.get_rng_state()  # the gradient's dropout moved the stream; repeat must not
    mirror.repeat(params, x, y)
    assert sizes == [16, 16, 16, 8]
    assert torch.equal(out, want) and torch.equal(params, kept)
    assert torch.equal(torch.get_rng_state(), moved) and not torch.equal(moved, state)
    sizes.clear()
    DeviceMirror(task, "cpu").repeat(params, x, y)  # no load: nothing
    assert sizes == []


# -- with CUDA ---------------------------------------------------------------------------------
@gpu
@needs_cuda
@pytest.mark.parametrize(
    "policy",
    [
        "sync",
        "async",
        "backup:backups=1",
        "k_async:k=2,aggregator=median",
        "hybrid:threshold=step:at=15",
        "malenia",  # the policies with a gradient table (hybridsgd.core.tables), which
        "ia2sgd",  # now lives on the server's device
        "ringleader",
    ],
)
def test_the_simulator_on_a_gpu_replays_the_cpu_run(policy):
    """Same schedule (the clock is virtual), same data order; only float rounding differs."""
    name, _, rest = policy.partition(":")
    sets = [f"policy.name={name}"] + [f"policy.{kv}" for kv in rest.split(",") if kv]
    cfg = config().replace(*sets)
    cpu = h.run(cfg)
    gpu_run = h.run(cfg.replace("run.device=cuda"))
    assert gpu_run.trace.summary["device"] == "cuda:0"
    assert gpu_run.params.device.type == "cpu"  # results come back to the CPU
    cols = ["worker", "minibatch", "read_version", "fate", "update"]
    assert gpu_run.trace.gradients[cols].equals(cpu.trace.gradients[cols])
    assert torch.allclose(gpu_run.params, cpu.params, atol=1e-4, rtol=1e-4)
    assert gpu_run.trace.evals.loss.tolist() == pytest.approx(
        cpu.trace.evals.loss.tolist(), rel=1e-3
    )


@gpu
@needs_cuda
@pytest.mark.parametrize(("task", "updates"), [("mlp-digits", 300), ("cnn-digits", 120)])
def test_gradients_batched_across_versions_on_a_gpu_match_the_cpu(monkeypatch, task, updates):
    """async with 64 workers forms batches of gradients read at different versions
    (backends/sim/versions.py): a plain MLP by its closed form, a CNN by vmap; on a GPU
    their versions are held on the GPU. cuDNN convolutions round to TF32 by default, and
    300 updates of the CNN so computed ended 0.05 away from the CPU's parameters on an H200
    (2026-11-30): here they run in float32, and for fewer updates (not yet rerun on a GPU)."""
    from hybridsgd.tasks.base import Task

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)

    sizes = []
    original = Task.grads_at

    def spy(self, rows, x, y, flat=True):
        sizes.append(len(rows))
        assert rows.device == x.device
        return original(self, rows, x, y, flat)

    monkeypatch.setattr(Task, "grads_at", spy)
    cfg = config().replace(
        "policy.workers=64", f"run.updates={updates}", "run.eval_every=40", f"task.name={task}"
    )
    cpu = h.run(cfg)
    n = len(sizes)
    gpu_run = h.run(cfg.replace("run.device=cuda"))
    assert n and len(sizes) == 2 * n
    cols = ["worker", "minibatch", "read_version", "fate", "update"]
    assert gpu_run.trace.gradients[cols].equals(cpu.trace.gradients[cols])
    assert torch.allclose(gpu_run.params, cpu.params, atol=1e-4, rtol=1e-4)


@gpu
@needs_cuda
def test_a_batchnorm_model_on_a_gpu_matches_the_cpu():
    from torch import nn

    base = build_task(config().task, 0)

    def make() -> tuple[h.Task, nn.Module]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
        train, test = (base.x_train, base.y_train), (base.x_test, base.y_test)
        return h.Task(model, train, nn.functional.cross_entropy, test), model

    cfg = config().replace("policy.name=sync")
    cpu = h.run(cfg, task=make()[0])
    task, model = make()
    gpu_run = h.run(cfg.replace("run.device=cuda"), task=task)
    assert torch.allclose(gpu_run.params, cpu.params, atol=1e-4, rtol=1e-4)
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])


@gpu
@needs_cuda
def test_local_workers_on_gpus_train_as_the_simulator_does():
    """Synchronous updates do not depend on timing, so a local run on GPUs ends where the
    CPU simulation of the same config ends, up to float rounding."""
    cfg = config("local", time_unit=0.0).replace("policy.name=sync")
    local = h.run(cfg.replace("run.device=cuda"))
    sim = h.run(cfg.replace("run.backend=sim"))
    n = torch.cuda.device_count()
    assert local.trace.summary["worker_devices"] == [f"cuda:{w % n}" for w in range(4)]
    assert torch.allclose(local.params, sim.params, atol=1e-4, rtol=1e-4)


@gpu
@needs_cuda
@pytest.mark.parametrize("policy", ["sync", "async"])
def test_a_local_server_on_the_gpu_computes_what_its_trace_says(policy):
    """run.local.server = "gpu": the versions, the gradient slots and the server's step on
    the workers' GPU, shared through CUDA IPC. sync ends where the CPU simulation ends;
    async where its own trace, rebuilt on the CPU in float64, says. A worker that read a
    version before the driver's copy of it finished, or a driver that read a gradient
    before the worker's kernels wrote it, ends elsewhere."""
    sets = ["policy.workers=3", "run.updates=45", "optimizer.momentum=0", "run.device=cuda:0"]
    cfg = config("local", time_unit=0.0).replace(
        f"policy.name={policy}", *sets, "run.local.server=gpu"
    )
    run = h.run(cfg)
    s = run.trace.summary
    assert s["server_device"] == "cuda:0" and s["worker_devices"] == ["cuda:0"] * 3
    assert run.params.device.type == "cpu" and s["updates"] == 45
    if policy == "sync":
        sim = h.run(cfg.replace("run.backend=sim", "run.device=cpu", "run.local.server=cpu"))
        assert torch.allclose(run.params, sim.params, atol=1e-4, rtol=1e-4)
    else:
        rebuilt = async_from_trace(cfg, run.trace)
        assert torch.allclose(run.params, rebuilt, atol=1e-4, rtol=1e-4)


@gpu
@needs_cuda
def test_a_gpu_index_out_of_range_is_refused(capsys, tmp_path):
    bad = torch.cuda.device_count()
    args = ["run", "examples/digits-backup.toml", "--out", str(tmp_path / "r"), "--quiet"]
    assert main([*args, "--set", f"run.device=cuda:{bad}"]) == 2
    err = capsys.readouterr().err
    assert f"run.device: 'cuda:{bad}' is out of range: torch sees {bad} GPU(s)" in err
