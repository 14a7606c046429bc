"""run.threads = 0: the simulator's thread count chosen by measurement (hybridsgd.threads)."""

from __future__ import annotations

import time

import pytest
import torch

import hybridsgd as h
from hybridsgd import threads


def op_time(task, x, y, batch: int, n: int) -> float:
    flat, out = task.initial_params(), torch.empty(task.numel)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        task.grad(flat, x, y, out=out, minibatch=batch)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            task.grad(flat, x, y, out=out, minibatch=batch)
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, workers",
    [
        (["task.name=mlp-digits", "task.batch_size=16"], 4),  # a small gradient
        (["task.name=mlp-digits", "task.hidden=[1024, 1024]", "task.batch_size=64"], 16),
    ],
    ids=["small", "large"],
)
def test_the_probe_chooses_a_setting_no_worse_than_half_the_speed_of_the_other(overrides, workers):
    """Timings are noisy on a shared machine: this fails only if the chosen setting is more
    than 2x slower than the one not chosen, timed here again."""
    cores = max(2, torch.get_num_threads())
    cfg = h.Config.from_dict({"policy": {"workers": workers}}, overrides)
    task = h.build_task(cfg.task, 0)
    threads._CACHE.clear()
    chosen, why = threads.choose(task, workers, cfg.task.batch_size, cores)
    assert chosen in (1, cores) and why.startswith("measured: a gradient of")
    m = max(1, min(workers, task.stack_limit // cfg.task.batch_size))
    x, y = task.batch(list(range(m * cfg.task.batch_size)))
    other = cores if chosen == 1 else 1
    mine = op_time(task, x, y, cfg.task.batch_size, chosen)
    theirs = op_time(task, x, y, cfg.task.batch_size, other)
    assert mine <= 2 * theirs, (chosen, mine, other, theirs)


def test_the_choice_is_made_once_per_model_and_shape(monkeypatch):
    cfg = h.Config.from_dict({"policy": {"workers": 4}})
    task = h.build_task(cfg.task, 0)
    threads._CACHE.clear()
    first = threads.choose(task, 4, 32, 2)

    def no_more(*_):
        raise AssertionError("timed again")

    monkeypatch.setattr(threads, "_medians", no_more)
    assert threads.choose(h.build_task(cfg.task, 1), 4, 32, 2) == first
    assert threads.choose(task, 4, 32, 1) == (1, "one core")


def test_a_run_records_the_choice_and_its_config_repeats_it(tmp_path):
    cfg = h.Config.from_dict({"policy": {"workers": 4}, "run": {"updates": 10}})
    r = h.run(cfg, out=tmp_path / "a")
    assert r.summary["threads_choice"].startswith(("measured:", "one core"))
    n = r.config.run.threads
    assert n >= 1 and r.summary["torch_threads"] == n
    again = h.run(h.Config.load(tmp_path / "a" / "config.toml"))
    assert "threads_choice" not in again.summary  # a fixed count is not probed
    assert torch.equal(again.params, r.params)


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(threads._running_others() is None, reason="needs /proc (Linux)")
def test_a_core_kept_busy_by_another_process_is_left_to_it():
    """Another process spinning on one core while the run starts: the run takes the cores
    left free (on 2 cores, one thread), and says so."""
    import multiprocessing

    cfg = h.Config.from_dict({"policy": {"workers": 4}})
    task = h.build_task(cfg.task, 0)
    cores = 2
    other = multiprocessing.get_context("spawn").Process(target=spin, args=(3.0,))
    other.start()
    try:
        time.sleep(1.0)  # the interpreter has started and spins
        load = threads.Load()
        spin(0.3)  # this process's own work while the task is built
        threads._CACHE.clear()  # as in a fresh process
        chosen, why = threads.choose(task, 4, 32, cores, load)
    finally:
        other.terminate()
        other.join()
    assert chosen == 1, why
    assert why.startswith("measured: other processes had") and "so 1 thread" in why
    assert threads.choose(task, 4, 32, cores, threads.Load()) == (chosen, why)  # kept
