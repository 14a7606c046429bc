"""How close the simulator's answer is to a real run whose timing was not injected (issue 31;
docs/fidelity.md).

For each worker count: the backend's workers are profiled (`hybridsgd profile`: each
computes back to back, no injected delay) and the machine measured (its processors, the
server's work per gradient, worker 0 alone: `hybridsgd.profiling.measure_machine`), a timing
model is fitted (`fit_machine`), and then every policy runs on seeds 0..S-1, seed by seed
across the policies, both for real (`run.time_unit = 0`: real compute times) and in the
simulator with the fitted timing (its time unit is the second). Printed per policy:
throughput (updates per second) and time to the target accuracy, predicted (simulator)
against measured (real: means over the seeds ± their sd), with the error; the errors of
the one-worker model (the profile's times as they are, each worker on a processor of its
own, no server) against the same real runs, side by side; and how many places the two
rankings by time to target agree in.

    python benchmarks/fidelity.py [--workers 2 4] [--seeds 3] [--workload jobs-10ms|jobs-1ms]
        [--slow F] [--backend local|ray] [--out runs/fidelity]

Real runs measure wall-clock time: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

import hybridsgd as h
from hybridsgd.cli.render import places_line
from hybridsgd.profiling import describe, validate

POLICIES = ["sync", "backup:backups=1", "async", "ssp:staleness_bound=2", "k_async:k=2"]


#: the workloads: (task section, updates, target accuracy). ``jobs-10ms``: mlp-mnist with two
#: hidden layers of 512 at batch 128, a job about 10 ms of one core on this machine and the
#: server about 1.6 ms a gradient; ``jobs-1ms``: mlp-digits at batch 16, a job about 1 ms,
#: as long as the operating system's own time slices and the server's share a third of it
WORKLOADS = {
    "jobs-10ms": ({"name": "mlp-mnist", "batch_size": 128, "hidden": [512, 512]}, 300, 0.85),
    "jobs-1ms": ({"name": "mlp-digits", "batch_size": 16}, 400, 0.9),
}


def base(
    W: int, workload: str, updates: int | None, target: float | None, backend: str = "local"
) -> h.Config:
    task, n, acc = WORKLOADS[workload]
    return h.Config.from_dict(
        {
            "task": task,
            "policy": {"name": "async", "workers": W},
            "optimizer": {"lr": 0.05},
            "run": {"backend": backend, "updates": updates or n, "eval_every": 20,
                    "time_unit": 0.0, "target_accuracy": target or acc},
        }
    )  # fmt: skip


def one_worker_model(cfg: h.Config, out: Path, table, seeds: int) -> list[tuple[float, float]]:
    """The side-by-side baseline: the simulator with the timing fitted as if every worker
    had a processor of its own (the profile's shared times as they are, no server), on
    the same seeds: (throughput, time to target) per policy, means, to set against the
    same real runs."""
    import tomllib

    from hybridsgd.policies import parse_spec
    from hybridsgd.profiling import read_profile

    timing = tomllib.loads(h.fit_timing(read_profile(out / "profile.csv")).toml())["timing"]
    rows = []
    for spec in table.policy:
        got = []
        for seed in range(seeds):
            d = cfg.replace(*parse_spec(spec)[1], f"run.seed={seed}").to_dict()
            d["run"] |= {"backend": "sim", "worker_load": ""}
            d["timing"] = timing
            s = h.run(h.Config.from_dict(d), progress=False).summary
            t = s.get("time_to_target")
            got.append((s["updates"] / s["end_time"], math.inf if t is None else float(t)))
        rows.append(tuple(sum(x) / len(x) for x in zip(*got, strict=True)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="jobs-10ms")
    ap.add_argument("--backend", choices=["local", "ray"], default="local")
    ap.add_argument(
        "--slow", type=float,
        help="heterogeneity made real: the last worker does this many times its own work "
        "per job (run.worker_load)",
    )  # fmt: skip
    ap.add_argument("--updates", type=int, help="per run (default: the workload's)")
    ap.add_argument("--target", type=float, help="accuracy (default: the workload's)")
    ap.add_argument("--minibatches", type=int, default=200, help="profiled jobs per worker")
    ap.add_argument("--out", default="runs/fidelity")
    args = ap.parse_args()
    console = Console()
    for W in args.workers:
        cfg = base(W, args.workload, args.updates, args.target, args.backend)
        if args.slow:
            cfg = cfg.replace(f"run.worker_load=1x{W - 1},{args.slow:g}x1")
        name = f"{args.backend}-W{W}" + (f"-slow{args.slow:g}" if args.slow else "")
        out = Path(args.out) / args.workload / name
        table, fit = validate(
            cfg, POLICIES, seeds=args.seeds, minibatches=args.minibatches, out=out
        )
        assert fit is not None
        for line in describe(fit):
            console.print(f"W = {W}: {line}", markup=False, highlight=False)
        t = Table(
            title=f"W = {W}, {args.workload} ({cfg.task.name})"
            + (f", the last worker's load x{args.slow:g}" if args.slow else "")
            + f", {args.backend} backend at natural timing: predicted (sim, "
            f"fitted timing) against measured, {args.seeds} seeds (real: mean ± the seeds' sd)"
        )
        for col in ("policy", "updates/s sim", "real", "error", "time to target sim", "real",
                    "error", "errors, one-worker model"):  # fmt: skip
            t.add_column(col, justify="left" if col == "policy" else "right")
        plain = one_worker_model(cfg, out, table, args.seeds)
        for r, (tp, tt) in zip(table.itertuples(), plain, strict=True):
            err = r.time_to_target_error
            t.add_row(
                r.policy, f"{r.throughput_sim:.4g}",
                f"{r.throughput_real:.4g} ± {r.throughput_real_spread:.0%}",
                f"{r.throughput_error:+.1%}", f"{r.time_to_target_sim:.4g}",
                f"{r.time_to_target_real:.4g} ± {r.time_to_target_real_spread:.0%}",
                "-" if math.isnan(err) else f"{err:+.1%}",
                f"{tp / r.throughput_real - 1:+.1%}, {tt / r.time_to_target_real - 1:+.1%}",
            )  # fmt: skip
        console.print(t)
        console.print(f"W = {W}: {places_line(table)}", markup=False)
        table.attrs["runs"].to_csv(out / "validate-runs.csv", index=False)


if __name__ == "__main__":
    main()
