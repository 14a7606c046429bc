"""How close the simulator's answer is to a real run whose timing was not injected (issue 31;
docs/fidelity.md).

For each worker count: the local backend's workers are profiled (`hybridsgd profile`: each
computes back to back, no injected delay), a timing model is fitted to the profile
(`hybridsgd.timing.fit`), and then every policy runs on seeds 0..S-1 both for real
(`run.time_unit = 0`: real compute times) and in the simulator with the fitted timing
(its time unit is the second). Printed per policy: throughput (updates per second) and
time to the target accuracy, predicted (simulator) against measured (real), means over
the seeds, with the error; and whether the two rankings by time to target agree.

    python benchmarks/fidelity.py [--workers 2 4] [--seeds 3] [--out runs/fidelity]

Real runs measure wall-clock time: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import math
import tomllib
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

import hybridsgd as h
from hybridsgd.profiling import describe, measure
from hybridsgd.timing.fit import fit_timing

POLICIES = ["sync", "backup:backups=1", "async", "ssp:staleness_bound=2", "k_async:k=2"]


def base(W: int, updates: int, target: float) -> h.Config:
    return h.Config.from_dict(
        {
            "task": {"name": "mlp-digits", "batch_size": 16},
            "policy": {"name": "async", "workers": W},
            "optimizer": {"lr": 0.05},
            "run": {"backend": "local", "updates": updates, "eval_every": 20,
                    "time_unit": 0.0, "target_accuracy": target},
        }
    )  # fmt: skip


def one(cfg: h.Config) -> tuple[float, float]:
    """Throughput (updates per second of the run's clock) and time to the target."""
    s = h.run(cfg, progress=False).summary
    t = s.get("time_to_target")
    return s["updates"] / s["end_time"], (float(t) if t is not None else math.inf)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--updates", type=int, default=400)
    ap.add_argument("--target", type=float, default=0.9)
    ap.add_argument("--minibatches", type=int, default=200, help="profiled jobs per worker")
    ap.add_argument("--out", default="runs/fidelity")
    args = ap.parse_args()
    console = Console()
    for W in args.workers:
        cfg = base(W, args.updates, args.target)
        prof = measure(cfg, args.minibatches, Path(args.out) / f"W{W}", progress=False)
        fit = fit_timing(prof)
        for line in describe(fit):
            console.print(f"W = {W}: {line}", markup=False, highlight=False)
        timing = tomllib.loads(fit.toml())["timing"]
        t = Table(
            title=f"W = {W}, mlp-digits, local backend at natural timing: predicted (sim, "
            f"fitted timing) against measured, {args.seeds} seeds"
        )
        for col in ("policy", "updates/s sim", "real", "error", "time to target sim", "real",
                    "error"):  # fmt: skip
            t.add_column(col, justify="left" if col == "policy" else "right")
        ranks = {}
        for spec in POLICIES:
            _, policy = h.policies.parse_spec(spec)
            real, sim = [], []
            for seed in range(args.seeds):
                c = cfg.replace(*policy, f"run.seed={seed}")
                real.append(one(c))
                d = c.to_dict()
                d["run"] |= {"backend": "sim"}
                d["timing"] = {**d["timing"], **timing}
                sim.append(one(h.Config.from_dict(d)))
            (tp_r, tt_r), (tp_s, tt_s) = np.mean(real, axis=0), np.mean(sim, axis=0)
            ranks[spec] = (tt_s, tt_r)
            t.add_row(
                spec, f"{tp_s:.4g}", f"{tp_r:.4g}", f"{tp_s / tp_r - 1:+.1%}",
                f"{tt_s:.4g}", f"{tt_r:.4g}",
                f"{tt_s / tt_r - 1:+.1%}" if math.isfinite(tt_s * tt_r) else "-",
            )  # fmt: skip
        console.print(t)
        by_sim = sorted(ranks, key=lambda p: ranks[p][0])
        by_real = sorted(ranks, key=lambda p: ranks[p][1])
        same = sum(a == b for a, b in zip(by_sim, by_real, strict=True))
        console.print(f"W = {W}: ranking by time to target, sim {by_sim}, real {by_real}: "
                      f"{same} of {len(POLICIES)} places agree", markup=False)  # fmt: skip


if __name__ == "__main__":
    main()
