"""Simulator speed against its baselines, measured in the same run (docs/design.md section 7).

1. Gradients simulated per second, `sync` and `async` at W = 16 and 256 on `mlp-mnist`
   (784-256-10, batch 32), against a plain single-process torch loop on the same model and
   batch. Bars: >= 1.0x for `async`, >= 3x for `sync` at W >= 16.
2. Schedule events per second with no numerics, against an equivalent simpy model.
   Bar: >= 10x simpy.

    python benchmarks/sim_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import hybridsgd as h


def plain_loop(task: h.Task, batch: int, steps: int) -> float:
    """Gradients per second of the loop everyone writes: forward, backward, step."""
    model = task.model
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    rng = np.random.default_rng(0)
    idx = [torch.from_numpy(rng.integers(0, task.n_train, batch)) for _ in range(steps)]
    for i in range(10):  # warm-up
        x, y = task.x_train[idx[i]], task.y_train[idx[i]]
        opt.zero_grad()
        task.loss_fn(model(x), y).backward()
        opt.step()
    t0 = time.perf_counter()
    for i in range(steps):
        x, y = task.x_train[idx[i]], task.y_train[idx[i]]
        opt.zero_grad()
        task.loss_fn(model(x), y).backward()
        opt.step()
    return steps / (time.perf_counter() - t0)


def best_of(repeats: int, measure, *args) -> float:
    """The best of several measurements: this machine's noise only ever slows a run down."""
    return max(measure(*args) for _ in range(repeats))


def simulated(policy: str, workers: int, gradients: int) -> float:
    updates = max(20, gradients // workers) if policy == "sync" else gradients
    cfg = h.Config.from_dict(
        {
            "task": {"name": "mlp-mnist", "batch_size": 32},
            "policy": {"name": policy, "workers": workers},
            "optimizer": {"lr": 0.05},
            "run": {"updates": updates, "eval_every": updates},
        }
    )
    task = h.build_task(cfg.task, seed=0)
    h.run(cfg.replace("run.updates=5", "run.eval_every=5"), task=task)  # warm-up
    t0 = time.perf_counter()
    result = h.run(cfg, task=task)
    wall = time.perf_counter() - t0
    return result.summary["gradients"]["applied"] / wall


def simpy_async(workers: int, events: int) -> float:
    import simpy

    env = simpy.Environment()
    draws = iter(np.random.default_rng(0).exponential(1.0, events + workers + 1).tolist())
    state = {"version": 0, "staleness": 0}
    done = env.event()

    def worker():
        while True:
            read = state["version"]
            yield env.timeout(next(draws))
            state["staleness"] += state["version"] - read
            state["version"] += 1
            if state["version"] == events and not done.triggered:
                done.succeed()

    for _ in range(workers):
        env.process(worker())
    t0 = time.perf_counter()
    env.run(until=done)
    return events / (time.perf_counter() - t0)


def simpy_sync(workers: int, rounds: int) -> float:
    import simpy

    env = simpy.Environment()
    draws = np.random.default_rng(0).exponential(1.0, (rounds, workers)).tolist()

    def coordinator():
        for r in range(rounds):
            yield env.all_of([env.timeout(d) for d in draws[r]])

    proc = env.process(coordinator())
    t0 = time.perf_counter()
    env.run(until=proc)
    return rounds * workers / (time.perf_counter() - t0)


def ours(policy, workers: int, events: int, fast: bool) -> float:
    cluster = h.Cluster(h.parse_model("exp:mu=1"), workers, seed=0)
    updates = events if policy is h.asynchronous else events // workers
    t0 = time.perf_counter()
    s = h.simulate_schedule(policy(workers), cluster, updates, fast=fast)
    return s.n_gradients / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer gradients (noisier)")
    args = ap.parse_args()
    n = 1500 if args.quick else 4000
    console = Console()
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    task = h.build_task(h.Config.from_dict({"task": {"name": "mlp-mnist"}}).task, seed=0)
    reps = 2 if args.quick else 3
    t = Table(title="gradients per second, mlp-mnist 784-256-10, batch 32 (best of repeats)")
    for col in ("run", "grad/s", "plain loop grad/s", "ratio", "bar"):
        t.add_column(col)
    for policy, bar in (("async", 1.0), ("sync", 3.0)):
        for workers in (16, 256):
            # the baseline is measured next to each run, so both see the same machine state
            base = best_of(reps, plain_loop, task, 32, n)
            g = best_of(reps, simulated, policy, workers, n if policy == "async" else 8 * n)
            ok = "ok" if g / base >= bar else "MISSED"
            t.add_row(
                f"sim {policy} W={workers}",
                f"{g:,.0f}",
                f"{base:,.0f}",
                f"{g / base:.2f}",
                f">= {bar} {ok}",
            )
    console.print(t)

    e = Table(title="schedule events per second (no numerics), exponential times")
    for col in ("model", "ours", "simpy", "ratio", "bar >= 10x"):
        e.add_column(col)
    events = 200_000 if args.quick else 1_000_000
    for workers in (16, 256):
        models = (
            ("async", h.asynchronous, simpy_async, events // 5),
            ("sync", h.sync, simpy_sync, events // 5 // workers),
        )
        for name, policy, simpy_model, simpy_size in models:
            sp = best_of(reps, simpy_model, workers, simpy_size)
            for fast, label in ((True, "fast path"), (False, "event loop")):
                o = best_of(reps, ours, policy, workers, events if fast else events // 5, fast)
                ok = "ok" if o / sp >= 10 else "MISSED"
                e.add_row(
                    f"{name} W={workers}, {label}", f"{o:,.0f}", f"{sp:,.0f}", f"{o / sp:.1f}", ok
                )
    console.print(e)


if __name__ == "__main__":
    main()
