"""How far to trust `hybridsgd recommend`: six held-out cluster descriptions, each ranked by
the prediction (every policy at its own best lr, the task's own noise scale) and its top N
tuned in the simulator (`recommend --check N`). Prints one row per case: the Spearman rank
correlation of the predicted order with the tuned times, and whether the predicted #1 is
within 20% of the tuned best (issue 32; the table in docs/analysis.md).

    python examples/recommend_check.py [--top 5] [--out runs/recommend-check]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hybridsgd import Config
from hybridsgd.analysis.recommend import recommend
from hybridsgd.app.tuning import check_ranking
from hybridsgd.forecast import curvature_of, noise_scale_of
from hybridsgd.runner import build_cluster

#: (name, workers, compute, comm, speed, task), none of them the issue's own case
CASES = [
    ("W8 exp", 8, "exp:mu=1", "constant:value=0", "", "mlp-digits"),
    ("W16 lognormal 1", 16, "lognormal:mu=0,sigma=1", "constant:value=0", "", "mlp-digits"),
    ("W16 pareto 1.8", 16, "pareto:alpha=1.8,scale=1", "constant:value=0", "", "mlp-digits"),
    ("W32 shifted-exp, 2 at 3x", 32, "shifted-exp:delta=1,mu=2", "constant:value=0", "1x30,3x2",
     "mlp-digits"),
    ("W24 comm-bound", 24, "constant:value=1", "constant:value=0.5", "", "mlp-digits"),
    ("W16 logistic lognormal 0.5", 16, "lognormal:mu=0,sigma=0.5", "constant:value=0", "",
     "logistic"),
]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=5, help="policies tuned per case (default 5)")
    ap.add_argument("--out", default="runs/recommend-check", help="where the tunings go")
    ap.add_argument("--time", type=float, default=150.0, help="run.time of each tuning run")
    ap.add_argument("--target", type=float, default=0.9, help="target accuracy (default 0.9)")
    args = ap.parse_args()
    console = Console()
    t = Table(title=f"recommend --check {args.top}: predicted against tuned, 6 held-out cases")
    for col in ("case", "predicted #1 (lr)", "its tuned time", "tuned best", "Spearman",
                "#1 within 20%", "seconds"):  # fmt: skip
        t.add_column(col, overflow="fold")
    hits = 0
    for name, W, compute, comm, speed, task in CASES:
        t0 = time.perf_counter()
        sets = [f"policy.workers={W}", f"timing.compute={compute}", f"timing.comm={comm}",
                f"task.name={task}", "task.batch_size=32"]  # fmt: skip
        cfg = Config.from_dict({}, sets + ([f"timing.speed={speed}"] if speed else []))
        cluster = build_cluster(cfg)
        speeds = None if (cluster.speeds == 1).all() else cluster.speeds
        h = curvature_of(task, 0)
        noise = noise_scale_of(task, 32, 0)
        ranked = recommend(W, cluster.compute, None, h, cluster.comm, speeds, 32,
                           noise_scale=noise)  # fmt: skip
        top = [c for c in ranked if math.isfinite(c.time_to_1000x)][: args.top]
        base = cfg.replace(f"run.time={args.time}", "run.updates=3000",
                           f"run.target_accuracy={args.target}")  # fmt: skip
        out = Path(args.out) / name.replace(" ", "-").replace(",", "")
        table = check_ranking(base, [c.spec for c in top], [c.time_to_1000x for c in top], out)
        best = table.loc[table.tuned_time.idxmin()]
        within = table.attrs["first_within_20"]
        hits += within
        t.add_row(
            name,
            f"{top[0].spec} ({top[0].lr:.3g})",
            f"{table.tuned_time[0]:.4g}",
            f"{best.policy} {best.tuned_time:.4g}",
            f"{table.attrs['spearman']:.2f}",
            "yes" if within else "no",
            f"{time.perf_counter() - t0:.0f}",
        )
        console.print(table.to_string(index=False))
    console.print(t)
    console.print(f"predicted #1 within 20% of the tuned best in {hits} of {len(CASES)} cases")


if __name__ == "__main__":
    main()
