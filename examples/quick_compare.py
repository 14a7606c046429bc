"""The demo: sync, backup, async and hybrid SGD on real digits under heavy-tailed stragglers.

Every policy trains on the simulator for the same virtual time and seed; the table shows
who reaches 95% test accuracy first and what each paid (cancelled work, staleness). The
learning rates here are set by hand; `make demo` (`hybridsgd tune`) tunes each policy on
its own first (docs/tuning.md), which is what a verdict should rest on.

    python examples/quick_compare.py [--seeds 2] [--out runs/demo]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import hybridsgd as h

POLICIES = {
    "sync (16 of 16)": ["policy.name=sync"],
    "backup (14 of 16)": ["policy.name=backup", "policy.backups=2"],
    "async": ["policy.name=async", "optimizer.lr=0.05"],  # stale gradients: smaller steps
    # from asynchronous at update 0 to all 16 gradients per update at update 1,500, linearly
    "hybrid (linear)": [
        "policy.name=hybrid",
        "policy.threshold=linear:start=0,end=1500",
        "optimizer.lr=0.05",
    ],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", default="runs/demo")
    args = ap.parse_args()
    base = h.Config.load(Path(__file__).with_name("digits-stragglers.toml"))
    console = Console()
    results: dict[str, list[dict]] = {name: [] for name in POLICIES}
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("training", total=len(POLICIES) * args.seeds)
        for name, overrides in POLICIES.items():
            for seed in range(args.seeds):
                cfg = base.replace(*overrides, f"run.seed={seed}")
                out = Path(args.out) / f"{name.split()[0]}-s{seed}"
                results[name].append(h.run(cfg, out=out).summary)
                progress.advance(bar)

    table = Table(
        title=f"{base.policy.workers} workers, Pareto(1.8) compute times, "
        f"{base.run.time:g} s of virtual time, {args.seeds} seeds"
    )
    table.add_column("policy", no_wrap=True)
    target = f"time to {base.run.target_accuracy:.0%}"
    for col in ("updates", target, "accuracy", "cancelled", "staleness"):
        table.add_column(col, justify="right")
    for name, runs in results.items():
        hits = [r["time_to_target"] for r in runs if r["time_to_target"] is not None]
        reach = (
            f"{sum(hits) / len(hits):.0f} s"
            if len(hits) == len(runs)
            else f"{len(hits)}/{len(runs)} runs"
        )
        table.add_row(
            name,
            f"{sum(r['updates'] for r in runs) / len(runs):.0f}",
            reach,
            f"{sum(r['final_accuracy'] for r in runs) / len(runs):.3f}",
            f"{sum(r['gradients']['cancelled'] for r in runs) / len(runs):.0f}",
            f"{sum(r['mean_staleness'] for r in runs) / len(runs):.1f}",
        )
    console.print(table)
    console.print(f"run directories: {args.out}/<policy>-s<seed>/ (summary.json and traces)")


if __name__ == "__main__":
    main()
