"""The Ray backend on one local Ray instance for the whole module (marked ``ray``; select
with ``-m ray``; every wait is bounded)."""

from __future__ import annotations

import os
import time

import pytest
import torch

from hybridsgd import Config
from hybridsgd.runner import run
from tests.helpers import assert_consistent, make_config

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module", autouse=True)
def ray_instance():
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


BASE = {
    "task": {"name": "mlp-digits", "batch_size": 16},
    "run": {"backend": "ray", "eval_every": 20, "time_unit": 0.002},
}


def config(name: str = "sync", workers: int = 3, updates: int = 40, **policy) -> Config:
    return make_config(
        BASE, policy={"name": name, "workers": workers, **policy}, run={"updates": updates}
    )


FAMILIES = [
    ("sync", {}),
    ("backup", {"backups": 1}),
    ("async", {}),
    ("k_async", {"k": 2}),
    ("hybrid", {"threshold": "linear:start=0,end=30"}),
    ("rennala", {"batch": 5, "late": "drop"}),  # more gradients than workers; late dropped
    ("ringmaster", {"delay_threshold": 2, "stops": True}),  # work stopped at delay R
    ("mindflayer", {"batch": 3, "budgets": 1.5}),  # jobs past their budget abandoned
]


@pytest.mark.parametrize(("name", "extra"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_policy_family_runs_on_actors_with_a_consistent_trace(name, extra):
    r = run(config(name, **extra))
    s = r.summary
    assert s["backend"] == "ray" and s["updates"] == 40 and s["worker_restarts"] == [0, 0, 0]
    assert_consistent(r.trace)
    if name == "mindflayer":  # under exp(1) times, 22% of draws exceed 1.5: some are
        assert (r.trace.gradients.reason == "over its time budget").any()
    assert ray.is_initialized()  # a run on an instance it did not start leaves it running


def test_sync_on_ray_equals_the_simulator_by_every_transport():
    cfg = config("sync", workers=4, updates=25)
    sim = run(cfg.replace("run.backend=sim"))
    for sets in (
        [],  # shared memory: every actor is on the driver's node
        ["run.ray_transport=object-store"],
        ["run.ps_shards=3"],
    ):
        actors = run(cfg.replace(*sets))
        shared = actors.summary["shared_memory_workers"]
        assert shared == ([0, 1, 2, 3] if not sets else []), sets
        assert torch.allclose(actors.params, sim.params, atol=1e-5), sets


@pytest.mark.parametrize(
    ("transport", "steps"),
    [("auto", "3"), ("object-store", "3"), ("auto", '"time:2.5"'), ("object-store", '"time:2.5"')],
)
def test_local_steps_on_actors_equal_the_simulator(transport, steps):
    """DiLoCo-shaped jobs (3 AdamW steps kept from job to job, or as many as fit in 2.5
    units of the worker's clock, outer Nesterov SGD) in actors, on sockets and shared
    memory or through the object store (issue 36)."""
    cfg = config("sync", workers=3, updates=8).replace(
        f"worker.steps={steps}", "worker.optimizer=adamw", "worker.lr=0.01", "optimizer.lr=0.7",
        "optimizer.momentum=0.9", "optimizer.options={nesterov=true}",
        f"run.ray.transport={transport}",
    )  # fmt: skip
    actors = run(cfg)
    sim = run(cfg.replace("run.backend=sim"))
    assert actors.summary["local_steps"] == cfg.worker.steps
    if cfg.worker.step_time is not None:  # each job's steps, as simulated
        by_job = [
            r.trace.gradients.sort_values(["worker", "minibatch"]).steps.tolist()
            for r in (actors, sim)
        ]
        assert by_job[0] == by_job[1] and len(set(by_job[0])) > 1
    torch.testing.assert_close(actors.params, sim.params, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "task", [{"name": "teacher"}, {"name": "cnn-digits", "norm": "batch"}], ids=["stream", "bn"]
)
def test_a_stream_task_and_a_batchnorm_cnn_on_actors_equal_the_simulator(task):
    """The teacher stream draws the same samples in every actor; BatchNorm normalises each
    actor's own minibatch (docs/tasks.md)."""
    cfg = config("sync", workers=3, updates=10).replace(*(f"task.{k}={v}" for k, v in task.items()))
    actors = run(cfg.replace("run.ray_transport=object-store"))
    sim = run(cfg.replace("run.backend=sim"))
    assert torch.allclose(actors.params, sim.params, atol=2e-5)


def test_a_run_mixing_sockets_and_the_object_store_equals_the_simulator(monkeypatch):
    """Workers 1 and 3 are treated as if on another node (one actor call per job through the
    object store) while 0 and 2 run job loops on sockets: the driver waits on both kinds.
    Under backup (b = 1) worker 3 is 20x slower than the rest, far beyond any transport's
    overhead, so it is the straggler cancelled every round, as in the simulator."""
    from hybridsgd.backends.ray import RayDriver

    attach = RayDriver._attach

    def half(self, workers):
        return [ok and w % 2 == 0 for w, ok in zip(workers, attach(self, workers), strict=True)]

    monkeypatch.setattr(RayDriver, "_attach", half)
    for name, extra in (("sync", {}), ("backup", {"backups": 1})):
        cfg = config(name, workers=4, updates=25, **extra).replace(
            "timing.compute=constant:value=1", "timing.speed=[1, 1, 1, 20]", "run.time_unit=0.01"
        )
        sim = run(cfg.replace("run.backend=sim"))
        mixed = run(cfg)
        assert mixed.summary["shared_memory_workers"] == [0, 2]
        assert_consistent(mixed.trace)
        assert torch.allclose(mixed.params, sim.params, atol=1e-5), name
        g = mixed.trace.gradients
        cancelled = g[g.fate == "cancelled"].worker.unique().tolist()
        assert cancelled == ([3] if name == "backup" else []), name


def test_a_worker_that_cannot_call_in_fails_the_run_at_once(monkeypatch):
    """If a worker on the driver's node cannot reach the driver's socket (here the address
    it is given does not exist), its job loop raises and the run stops with one line,
    without waiting out the start-up timeout."""
    from hybridsgd.backends.ray import Dock
    from hybridsgd.errors import WorkerLost

    init = Dock.__init__

    def elsewhere(self, nonce):
        init(self, nonce)
        self.address += "-missing"

    monkeypatch.setattr(Dock, "__init__", elsewhere)
    with pytest.raises(WorkerLost, match=r"could not call in: .*(FileNotFound|ConnectionRefused)"):
        run(config("sync", workers=2, updates=5))


def test_buffered_gradients_survive_their_slot_being_reused():
    """k_batch_async with K = 2 where worker 1 is 1000x slower than worker 0: every update
    is two gradients of worker 0, the first waiting in the buffer while the next job
    rewrites the shared-memory slot it came through. The schedule is deterministic, and
    the result equals the simulator's only if each was copied out in time."""
    cfg = config("k_batch_async", workers=2, updates=12, k=2).replace(
        "timing.compute=constant:value=1", "timing.speed=[1, 1000]", "run.time_unit=0.01"
    )
    sim = run(cfg.replace("run.backend=sim"))
    shared = run(cfg)
    assert shared.summary["shared_memory_workers"] == [0, 1]
    assert (shared.trace.gradients.worker.to_numpy()[:24] == 0).all()
    assert torch.allclose(shared.params, sim.params, atol=1e-5)


def kill_actor_at(version: int, settle: float = 0.0):
    """A progress callback that ray.kill-s one worker actor when ``version`` is reached
    (then holds the driver ``settle`` s more, so the others' answers are in when it looks)."""
    done: list[str] = []

    def progress(phase: str, v: int, total: int) -> None:
        if phase == "train" and v >= version and not done:
            names = sorted(n for n in ray.util.list_named_actors() if "-worker-1-0" in n)
            actor = ray.get_actor(names[-1])
            pid = ray.get(actor.pid.remote(), timeout=30)
            ray.kill(actor)
            done.append(names[-1])
            done.append(pid)
            # ray.kill returns before the process is gone; the driver (blocked here) must not
            # run on and finish an asynchronous run before the death can be seen at all
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.01)
            time.sleep(settle)

    return progress, done


@pytest.mark.parametrize(
    ("name", "extra"), [("sync", {}), ("backup", {"backups": 1}), ("async", {})]
)
@pytest.mark.parametrize("restarts", [0, 1])
def test_a_killed_worker_actor_is_restarted_or_lost_and_the_run_finishes(name, extra, restarts):
    """sync with a restart used to end in "no worker is running and none may start" with no
    trace: the replacement was told to wait for the round that needed its own gradient."""
    progress, killed = kill_actor_at(10)
    cfg = config(name, workers=4, updates=60, **extra).replace(
        f"run.max_worker_restarts={restarts}"
    )
    r = run(cfg, progress=progress)
    s = r.summary
    assert killed and s["updates"] == 60
    assert sum(s["worker_restarts"]) == restarts
    assert len(s["lost_workers"]) == 1 - restarts
    assert_consistent(r.trace)
    if restarts:  # the restarted worker's pid replaces the dead actor's
        assert killed[1] not in s["worker_pids"] and len(s["worker_pids"]) == 4


@pytest.mark.parametrize("name", ["sync", "async"])
def test_a_restarted_worker_slow_to_start_is_not_declared_lost(monkeypatch, name):
    """A restart blocks the driver; with run.worker_timeout = 2 s and a replacement that
    takes 3 s more to start, no worker is lost. The jobs the driver starts after the
    restart (the restarted worker's, and async's next jobs for the answers it reads in the
    same look) used to be timed from before it, and were declared lost at the next look."""
    from hybridsgd.backends.ray import RayDriver

    new_actor = RayDriver._new_actor

    def slow_to_restart(self, w: int):
        if self.restarts[w]:  # the replacement: the driver waits 3 s more for it
            time.sleep(3.0)
        return new_actor(self, w)

    monkeypatch.setattr(RayDriver, "_new_actor", slow_to_restart)
    progress, killed = kill_actor_at(10, settle=0.3)
    cfg = config(name, workers=4, updates=60).replace(
        "run.max_worker_restarts=1", "run.worker_timeout=2"
    )
    s = run(cfg, progress=progress).summary
    assert killed and s["updates"] == 60
    assert s["worker_restarts"] == [0, 1, 0, 0] and s["lost_workers"] == []


def test_a_sweep_on_ray_gives_the_bits_of_each_config_run_alone():
    """Issue 32's case (tests/test_sweep.py): each run of a sweep sent as a Ray task ends
    with the final parameters of a plain run of its config on one thread, bit for bit."""
    from hybridsgd.app.sweep import run_many
    from tests.test_sweep import cnn_grid

    outcomes = run_many(cnn_grid(), ray_address="auto")
    for cfg, o in zip(cnn_grid(), outcomes, strict=True):
        alone = run(cfg.replace("run.threads=1"), progress=False)
        assert o.error == "" and torch.equal(o.params, alone.params)


def test_a_model_file_named_in_the_config_trains_on_actors(tmp_path):
    """Issue 34: task.name = "FILE.py:build" on Ray: each actor unpickles the task, whose
    model class lives in the user's file (imported again there by hybridsgd.userfiles), and
    sync ends where the simulator ends for the same seed."""
    from tests.tasks.test_user_specs import MODEL

    (tmp_path / "mymodel.py").write_text(MODEL.replace("nn.Dropout(0.2)", "nn.Dropout(0.0)"))
    cfg = config("sync", updates=6).replace(
        f"task.name={tmp_path / 'mymodel.py'}:build", "task.width=3", "run.eval_every=3"
    )
    real = run(cfg)
    assert real.summary["updates"] == 6 and not real.summary["lost_workers"]
    sim = run(cfg.replace("run.backend=sim"))
    assert torch.allclose(real.params, sim.params, atol=1e-5)


def test_a_worker_load_makes_that_actor_slower_by_real_work():
    """run.worker_load on Ray actors, as on the local backend (tests/backends/test_local.py):
    worker 1 computes its gradient five times a job (at batch 512, where the gradient is
    most of a job)."""
    cfg = config("async", workers=2, updates=120).replace(
        "run.time_unit=0", "run.worker_load=[1,5]", "task.batch_size=512"
    )
    g = run(cfg, progress=False).trace.gradients
    fast = (g.end_time - g.start_time).groupby(g.worker).quantile(0.1)
    assert fast[1] / fast[0] > 1.8, fast.tolist()
