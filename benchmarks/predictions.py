"""Predicted against simulated: every policy family x timing models x W (docs/analysis.md).

Prints the table with relative errors and writes docs/predictions.png (points on the
diagonal are exact predictions).

    python benchmarks/predictions.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import hybridsgd as h  # noqa: E402
from hybridsgd.analysis import measure, predict  # noqa: E402
from hybridsgd.config import PolicyConfig  # noqa: E402
from hybridsgd.policies import POLICIES  # noqa: E402

MODELS = ["shifted-exp:delta=1,mu=2", "pareto:alpha=2.5,scale=1", "lognormal:mu=0,sigma=0.5"]
FAMILY = [
    ("sync", {}),
    ("backup", {"backups": 2}),
    ("k_sync", {"k": 4}),
    ("k_batch_sync", {"k": 4}),
    ("async", {}),
    ("k_async", {"k": 4}),
    ("k_batch_async", {"k": 4}),
    ("ssp", {"staleness_bound": 0}),
]


def main() -> None:
    t = Table(title="predicted vs simulated (relative error)")
    for col in ("policy", "timing", "W", "time/update", "sim", "err", "staleness", "sim", "err"):
        t.add_column(col)
    points = []
    for model in MODELS:
        m = h.parse_model(model)
        for W in (8, 64):
            for policy, kw in FAMILY:
                p = predict(policy, W, m, **kw)
                cfg = PolicyConfig(
                    name=policy,
                    workers=W,
                    backups=kw.get("backups", 0),
                    k=kw.get("k"),
                    staleness_bound=kw.get("staleness_bound"),
                )
                n = {"k_batch_sync": 4000, "ssp": 150_000 if W == 64 else 40_000}.get(
                    policy, 30_000
                )
                s = h.simulate_schedule(
                    POLICIES[policy](cfg, 0, 1.0, 1), h.Cluster(m, W, seed=3), n
                )
                measured = measure(s)
                st, tm = measured["mean_staleness"], measured["mean_update_time"]
                e_t = p.mean_update_time / tm - 1
                e_s = p.mean_staleness / st - 1 if st else 0.0
                points.append((policy, p.mean_update_time, tm, p.mean_staleness, st))
                t.add_row(
                    policy,
                    model.split(":")[0],
                    str(W),
                    f"{p.mean_update_time:.4g}",
                    f"{tm:.4g}",
                    f"{e_t:+.1%}",
                    f"{p.mean_staleness:.3g}",
                    f"{st:.3g}",
                    f"{e_s:+.1%}",
                )
    Console().print(t)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, (i, j, name) in zip(
        axes, [(1, 2, "mean time per update"), (3, 4, "mean staleness")], strict=True
    ):
        xs = [pt[j] for pt in points if pt[j] > 0]
        ys = [pt[i] for pt in points if pt[j] > 0]
        ax.loglog(xs, ys, "o", alpha=0.7)
        lo, hi = min(xs + ys), max(xs + ys)
        ax.plot([lo, hi], [lo, hi], "k--", lw=1)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("simulated")
        ax.set_ylabel("predicted")
        ax.set_title(name)
    fig.suptitle(
        "hybridsgd.analysis against the simulator (8 policies x 3 timing models x W in {8, 64})"
    )
    fig.tight_layout()
    out = Path(__file__).resolve().parents[1] / "docs" / "predictions.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
