"""The workloads of docs/tasks.md: time per gradient, and the simulator against a plain torch
loop on the CNN, measured side by side in the same run (best of repeats).

1. Time per gradient of every built-in task at batch 32 (the language model at 16 x 128
   bytes: bar < 50 ms), one process, this machine's torch threads.
2. Gradients per second of the simulator running ``sync`` on ``cnn-mnist`` at W = 16 and 64,
   against the loop everyone writes (forward, backward, step) on the same CNN and batch.
   Bar: >= 2x. With BatchNorm (``task.norm = batch``) every worker's minibatch is normalised
   on its own, so nothing is stacked: shown, without a bar.

    python benchmarks/workloads.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import hybridsgd as h
from sim_speed import best_of, plain_loop

TASKS = [
    ("quadratic", {}),
    ("logistic", {}),
    ("mlp-digits", {}),
    ("mlp-mnist", {}),
    ("cnn-digits", {}),
    ("cnn-mnist", {}),
    ("cnn-mnist", {"norm": "batch"}),
    ("teacher", {}),
    ("mf", {}),
    ("lm", {"batch_size": 16}),
]


def label(name: str, extra: dict) -> str:
    keys = {k: v for k, v in extra.items() if k != "batch_size"}
    return name + "".join(f" {k}={v}" for k, v in keys.items())


def per_gradient_ms(name: str, extra: dict, reps: int) -> tuple[float, int]:
    """Milliseconds per minibatch gradient (the task's own grad call), best of ``reps``."""
    cfg = h.Config.from_dict({"task": {"name": name, "batch_size": 32, **extra}})
    task = h.build_task(cfg.task, seed=0)
    params = task.initial_params()
    rng = np.random.default_rng(0)
    b = cfg.task.batch_size
    batches = [task.batch(rng.integers(0, task.n_train, b)) for _ in range(20)]
    for x, y in batches[:3]:
        task.grad(params, x, y)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for x, y in batches:
            task.grad(params, x, y)
        best = min(best, (time.perf_counter() - t0) / len(batches))
    return best * 1e3, task.numel


def simulated(workers: int, updates: int, norm: str) -> float:
    cfg = h.Config.from_dict(
        {
            "task": {"name": "cnn-mnist", "batch_size": 32, "norm": norm},
            "policy": {"name": "sync", "workers": workers},
            "optimizer": {"lr": 0.05},
            "run": {"updates": updates, "eval_every": updates},
        }
    )
    task = h.build_task(cfg.task, seed=0)
    h.run(cfg.replace("run.updates=3", "run.eval_every=3"), task=task, progress=False)
    t0 = time.perf_counter()
    result = h.run(cfg, task=task, progress=False)
    return result.summary["gradients"]["applied"] / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer gradients (noisier)")
    args = ap.parse_args()
    reps = 2 if args.quick else 3
    console = Console()
    console.print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    t = Table(title="time per gradient, batch 32 (lm: 16 x 128 bytes), best of repeats")
    for col in ("task", "parameters", "ms per gradient", "bar"):
        t.add_column(col)
    for name, extra in TASKS:
        ms, numel = per_gradient_ms(name, extra, reps)
        bar = ("< 50 ms " + ("ok" if ms < 50 else "MISSED")) if name == "lm" else ""
        t.add_row(label(name, extra), f"{numel:,}", f"{ms:.2f}", bar)
    console.print(t)

    s = Table(title="sim sync on cnn-mnist, gradients per second (best of repeats)")
    for col in ("run", "grad/s", "plain loop grad/s", "ratio", "bar"):
        s.add_column(col)
    updates = 10 if args.quick else 25
    for norm in ("none", "batch"):
        task = h.build_task(
            h.Config.from_dict({"task": {"name": "cnn-mnist", "norm": norm}}).task, seed=0
        )
        for workers in (16, 64):
            base = best_of(reps, plain_loop, task, 32, 200 if args.quick else 500)
            g = best_of(reps, simulated, workers, updates, norm)
            bar = f">= 2 {'ok' if g / base >= 2 else 'MISSED'}" if norm == "none" else "-"
            s.add_row(
                f"W={workers} norm={norm}", f"{g:,.0f}", f"{base:,.0f}", f"{g / base:.2f}", bar
            )
    console.print(s)


if __name__ == "__main__":
    main()
