"""A tuning sweep in parallel against the same runs one after another, measured in the same
run (issue 17; docs/tuning.md). The sweep: an 8-point lr grid x 3 policies (sync, async,
backup:backups=2) x 2 seeds on mlp-mnist, W = 16, scored on a validation split, exactly the
first phase of `hybridsgd tune`: 48 simulated runs.

* sequential: the 48 runs one after another in this process (one torch thread each, as a
  sweep runs them), and again with torch's default threads (one per core), the faster of
  the two being the baseline;
* --jobs 2: the process pool;
* Ray (``--ray``): a cluster started with ``ray start --head`` on this machine, one task
  per run.

Bars: --jobs 2 at most 1/1.7 of the sequential time; Ray at most 1.25x the --jobs 2 time.
Best of ``--repeats`` for each. The traces are checked to be identical across all modes.

    RAY_AUTH_MODE=disabled python benchmarks/sweep.py [--repeats 2] [--ray] [--quick]
        [--budget 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import hybridsgd as h
from hybridsgd.app.sweep import run_many
from hybridsgd.app.tuning import plan

POLICIES = ["sync", "async", "backup:backups=2"]
LRS = [float(x) for x in np.geomspace(0.001, 1.0, 8)]


def configs(budget: float) -> list[h.Config]:
    base = h.Config.from_dict(
        {
            "task": {"name": "mlp-mnist", "batch_size": 32},
            "policy": {"workers": 16},
            "timing": {"compute": "shifted-exp:delta=1,mu=2"},
            "run": {"time": budget, "eval_every": 10},
        }
    )
    p = plan(base, POLICIES, {"optimizer.lr": LRS}, seeds=2, validation=0.2)
    return [c for _, _, c in p.trials]


def timed(runs: list[h.Config], **kw) -> tuple[float, list]:
    t0 = time.perf_counter()
    out = run_many(runs, **kw)
    return time.perf_counter() - t0, out


def same(a: list, b: list) -> bool:
    """Whether two sweeps' traces are identical; names the runs that are not."""
    differ = [
        f"{x.config.policy.name} lr={x.config.optimizer.lr:.3g} seed={x.config.run.seed}"
        for x, y in zip(a, b, strict=True)
        if not (x.trace.gradients.equals(y.trace.gradients) and x.trace.evals.equals(y.trace.evals))
    ]
    if differ:
        print("traces differ:", "; ".join(differ))
    return not differ


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs each")
    ap.add_argument("--ray", action="store_true", help="also on a `ray start --head` cluster")
    ap.add_argument("--quick", action="store_true", help="shorter runs, one repeat")
    ap.add_argument(
        "--budget", type=float, default=200.0, help="run.time of each run (virtual units)"
    )
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    runs = configs(30.0 if args.quick else args.budget)
    cores = len(os.sched_getaffinity(0))
    console = Console()
    console.print(f"{len(runs)} runs of run.time = {runs[0].run.time:g}, {cores} cores")
    threaded = [c.replace(f"run.threads={cores}") for c in runs]
    # rounds of every mode, one after another: the machine's speed drifts between minutes,
    # and each mode's best round is compared
    times: dict[str, list[float]] = {"seq1": [], "seqn": [], "par": []}
    ref = out = None
    for _ in range(repeats):
        t, ref = timed(runs, jobs=1)
        times["seq1"].append(t)
        times["seqn"].append(timed(threaded, jobs=1)[0])
        t, out = timed(runs, jobs=2)
        times["par"].append(t)
        assert same(ref, out), "parallel traces differ from sequential"
    seq1, seq_n, par = min(times["seq1"]), min(times["seqn"]), min(times["par"])
    base = min(seq1, seq_n)
    t = Table(title="tuning sweep: 8 lrs x 3 policies x 2 seeds, mlp-mnist, W = 16")
    for col in ("mode", "seconds", "--jobs 1 / this", "best sequential / this"):
        t.add_column(col, justify="right")
    t.add_row(
        "sequential (--jobs 1), 1 thread per run", f"{seq1:.1f}", "1.00x", f"{base / seq1:.2f}x"
    )
    t.add_row(
        f"sequential, {cores} threads per run", f"{seq_n:.1f}", f"{seq1 / seq_n:.2f}x",
        f"{base / seq_n:.2f}x",
    )  # fmt: skip
    t.add_row("--jobs 2", f"{par:.1f}", f"{seq1 / par:.2f}x (bar: >= 1.7x)", f"{base / par:.2f}x")
    if args.ray:
        ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
        os.environ["RAY_AUTH_MODE"] = "disabled"
        port = _free_port()
        start = [ray, "start", "--head", f"--port={port}", f"--num-cpus={cores}"]
        subprocess.run(
            [*start, "--include-dashboard=false"], env=env, check=True, capture_output=True
        )
        try:
            address = f"127.0.0.1:{port}"
            on_ray, rout = min(
                (timed(runs, ray_address=address) for _ in range(repeats)), key=lambda r: r[0]
            )
        finally:
            subprocess.run([ray, "stop", "--force"], env=env, capture_output=True)
        assert same(ref, rout), "Ray traces differ from sequential"
        t.add_row(
            "Ray tasks (ray start --head)",
            f"{on_ray:.1f}",
            f"{seq1 / on_ray:.2f}x",
            f"{base / on_ray:.2f}x; {on_ray / par:.2f}x the --jobs 2 time (bar: <= 1.25x)",
        )
    console.print(t)
    console.print("traces: identical in every mode")


if __name__ == "__main__":
    main()
