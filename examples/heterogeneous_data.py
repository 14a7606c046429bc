"""Heterogeneous data and heterogeneous speeds together (issue 37, docs/reproductions.md):
does asynchronous SGD favour the classes its fast workers hold, and which methods remove
that bias?

By default mlp-digits, W = 10 workers, lognormal(0, 0.5) minibatch times; three workers
1x, seven 4x slower (``--task``, ``--slow``). The data is split by Dirichlet label skew
(alpha in 0.1, 1, and an iid split for alpha = inf) with a fixed data seed, and the three
fast workers are the three whose shards hold the largest share of classes 0-2 ("the fast
classes"). Every policy gets the same virtual-time budget; each is tuned on its own (lr
grid, final validation loss, on a 20% validation split of the training set), then its
chosen lr is rerun on 3 fresh seeds and scored on the test set: overall accuracy,
accuracy on the fast classes and on the other seven (the slow classes).

    python examples/heterogeneous_data.py --out runs/heterogeneous   # 113 s on 2 cores
    python examples/heterogeneous_data.py --quick                    # 4 s: a smoke run
    # docs/reproductions.md section 8 (21 min on 2 cores):
    python examples/heterogeneous_data.py --task mlp-mnist --budget 200 --slow 8 --out runs/het

Writes ``results.json``, ``results.md`` (the tables of docs/reproductions.md) and
``gap.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

import hybridsgd as h
from hybridsgd.backends.build import samplers_for
from hybridsgd.tasks.registry import build_task

W, FAST, SLOW_FACTOR, FAST_CLASSES = 10, 3, 4.0, (0, 1, 2)
POLICIES = [
    "async", "ssp:s=2", "ringmaster:R=10", "rennala:batch=10", "malenia", "ia2sgd",
    "ringleader", "dc_asgd:lam=0.04", "rescaled",
]  # fmt: skip
ALPHAS = [0.1, 1.0, math.inf]
LRS = [0.01, 0.03, 0.1, 0.3, 1.0]
ENDS = (0.8, 0.9, 1.0)  # fractions of the budget at which each final run is scored


def base(
    alpha: float, budget: float, hidden: list[int] | None = None, task: str = "mlp-digits"
) -> h.Config:
    split = {"split": "iid"} if math.isinf(alpha) else {"split": "dirichlet", "alpha": alpha}
    if hidden is not None:
        split["hidden"] = hidden
    return h.Config.from_dict(
        {
            "task": {"name": task, "batch_size": 32, "data_seed": 0, **split},
            "policy": {"name": "async", "workers": W},
            "optimizer": {"name": "sgd", "lr": 0.1},
            "timing": {"compute": "lognormal:mu=0,sigma=0.5"},
            "run": {"time": budget, "eval_every": 1000, "seed": 0},
        }
    )


def speeds_for(cfg: h.Config, slow: float = SLOW_FACTOR) -> tuple[list[float], list[float]]:
    """Speeds making the FAST workers with the largest share of the fast classes fast,
    and each worker's share of the fast classes."""
    task = build_task(cfg.task, cfg.run.seed)
    labels = task.y_train.numpy()
    share = []
    for feed in samplers_for(cfg, task):
        y = labels[feed.shard]
        share.append(float(np.isin(y, FAST_CLASSES).mean()))
    fast = set(np.argsort(share)[::-1][:FAST].tolist())
    return [1.0 if w in fast else slow for w in range(W)], share


def with_policy(cfg: h.Config, spec: str, speeds: list[float], lr: float, seed: int) -> h.Config:
    name, _, rest = spec.partition(":")
    sets = [f"policy.name={name}", f"optimizer.lr={lr}", f"run.seed={seed}",
            "timing.speed=" + ",".join(f"{s:g}" for s in speeds)]  # fmt: skip
    for kv in filter(None, rest.split(",")):
        key, value = kv.split("=")
        key = {"s": "staleness_bound", "R": "delay_threshold"}.get(key, key)
        sets.append(f"policy.{key}={value}")
    if name == "rescaled":  # the paper's fixed-computation model: its times are the speeds
        sets.append("policy.taus=" + ",".join(f"{s:g}" for s in speeds))
    return cfg.replace(*sets)


def per_class(task, params: torch.Tensor) -> tuple[float, float, float]:
    """Test accuracy overall, on the fast classes, and on the others."""
    model = task.load(params)
    model.eval()
    with torch.no_grad():
        right = (model(task.x_test).argmax(dim=1) == task.y_test).numpy()
    fast = np.isin(task.y_test.numpy(), FAST_CLASSES)
    return float(right.mean()), float(right[fast].mean()), float(right[~fast].mean())


def tune(cfg: h.Config, spec: str, speeds: list[float], lrs: list[float]) -> float:
    """The lr of the grid with the lowest final validation loss (diverged runs lose)."""
    best, chosen = math.inf, lrs[0]
    for lr in lrs:
        c = with_policy(cfg, spec, speeds, lr, seed=100).replace("task.validation=0.2")
        loss = h.run(c, progress=False).summary["final_loss"]
        if loss is not None and math.isfinite(loss) and loss < best:
            best, chosen = loss, lr
    return chosen


def measure(
    alphas, policies, lrs, seeds, budget, slow: float = SLOW_FACTOR, hidden=None,
    task_name: str = "mlp-digits",
) -> dict:  # fmt: skip
    out: dict = {"task": task_name, "workers": W, "fast_classes": list(FAST_CLASSES),
                 "budget": budget, "slow_factor": slow, "seeds": seeds, "hidden": hidden,
                 "rows": []}  # fmt: skip
    for alpha in alphas:
        cfg = base(alpha, budget, hidden, task_name)
        speeds, share = speeds_for(cfg, slow)
        task = build_task(cfg.task, cfg.run.seed)
        fast = [w for w in range(W) if speeds[w] == 1]
        shares = [round(share[w], 2) for w in fast]
        print(f"alpha={alpha}: fast workers {fast}, their share of classes 0-2: {shares}")
        for spec in policies:
            lr = tune(cfg, spec, speeds, lrs)
            scores = []
            for seed in range(seeds):
                c = with_policy(cfg, spec, speeds, lr, seed)
                # scored at the end and at 80% and 90% of the budget, averaged: one moment
                # of a run is a noisy sample of where it stands
                ends = [h.run(c.replace(f"run.time={budget * f:g}"), progress=False).params
                        for f in ENDS]  # fmt: skip
                scores.append(np.mean([per_class(task, p) for p in ends], axis=0))
            s = np.asarray(scores)
            row = {
                "alpha": alpha, "policy": spec, "lr": lr,
                "accuracy": s[:, 0].tolist(), "fast_classes": s[:, 1].tolist(),
                "slow_classes": s[:, 2].tolist(),
                "fast_share": [share[w] for w in range(W) if speeds[w] == 1],
            }  # fmt: skip
            out["rows"].append(row)
            gap = s[:, 1] - s[:, 2]
            spread = gap.std(ddof=1) if len(gap) > 1 else 0.0
            print(
                f"  {spec:18s} lr={lr:<5g} acc {s[:, 0].mean():.3f}  fast {s[:, 1].mean():.3f}"
                f"  slow {s[:, 2].mean():.3f}  gap {gap.mean():+.3f} ± {spread:.3f}"
            )
    return out


def table(results: dict) -> str:
    lines = []
    for alpha in sorted({r["alpha"] for r in results["rows"]}):
        head = "| policy | lr | test accuracy | fast classes | slow classes | gap (fast - slow) |"
        lines += [f"\n**alpha = {alpha:g}**\n", head, "|---|---|---|---|---|---|"]
        for r in results["rows"]:
            if r["alpha"] != alpha:
                continue
            a, f, s = (np.asarray(r[k]) for k in ("accuracy", "fast_classes", "slow_classes"))
            g = f - s
            sd = lambda v: v.std(ddof=1) if len(v) > 1 else 0.0  # noqa: E731
            lines.append(
                f"| `{r['policy']}` | {r['lr']:g} | {a.mean():.3f} ± {sd(a):.3f} | "
                f"{f.mean():.3f} ± {sd(f):.3f} | {s.mean():.3f} ± {sd(s):.3f} | "
                f"{g.mean():+.3f} ± {sd(g):.3f} |"
            )
    return "\n".join(lines) + "\n"


def excess(results: dict) -> str:
    """Each policy's gap minus its gap on the iid split (the classes' own difficulty), when
    the iid split was measured."""
    rows = results["rows"]
    iid = {r["policy"]: r for r in rows if math.isinf(r["alpha"])}
    if not iid:
        return ""
    alphas = sorted({r["alpha"] for r in rows if not math.isinf(r["alpha"])})
    head = "| policy | " + " | ".join(f"alpha = {a:g}" for a in alphas) + " |"
    lines = ["\n**gap minus the iid split's gap**\n", head, "|---|" + "---|" * len(alphas)]
    for policy, base_row in iid.items():
        base_gap = np.mean(np.asarray(base_row["fast_classes"]) - base_row["slow_classes"])
        cells = []
        for a in alphas:
            r = next(r for r in rows if r["policy"] == policy and r["alpha"] == a)
            g = np.asarray(r["fast_classes"]) - np.asarray(r["slow_classes"])
            cells.append(f"{g.mean() - base_gap:+.3f}")
        lines.append(f"| `{policy}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = sorted({r["alpha"] for r in results["rows"]})
    policies = list(dict.fromkeys(r["policy"] for r in results["rows"]))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(alphas)
    for i, alpha in enumerate(alphas):
        rows = {r["policy"]: r for r in results["rows"] if r["alpha"] == alpha}
        gaps = [np.asarray(rows[p]["fast_classes"]) - np.asarray(rows[p]["slow_classes"])
                for p in policies]  # fmt: skip
        x = np.arange(len(policies)) + (i - (len(alphas) - 1) / 2) * width
        ax.bar(x, [g.mean() for g in gaps], width, yerr=[g.std(ddof=1) if len(g) > 1 else 0
               for g in gaps], label=f"alpha = {alpha:g}", capsize=2)  # fmt: skip
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(policies)), policies, rotation=20, ha="right")
    ax.set_ylabel("accuracy: fast classes - slow classes")
    seeds, task = results.get("seeds", "?"), results.get("task", "mlp-digits")
    ax.set_title(f"Bias toward the fast workers' classes ({task}, {seeds} seeds, each tuned)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/heterogeneous"))
    parser.add_argument("--quick", action="store_true", help="2 policies, 1 alpha, 1 seed")
    parser.add_argument("--budget", type=float, default=120.0, help="virtual time per run")
    parser.add_argument("--slow", type=float, default=SLOW_FACTOR, help="slow workers' factor")
    parser.add_argument("--seeds", type=int, default=3, help="final runs per policy")
    parser.add_argument("--alphas", default="0.1,1,inf", help="Dirichlet alphas (inf: iid)")
    parser.add_argument("--task", default="mlp-digits", help="mlp-digits or mlp-mnist")
    parser.add_argument("--hidden", default="", help="the MLP's hidden widths, e.g. 8 (default 64)")
    parser.add_argument("--policies", default=",".join(POLICIES).replace(",", " "),
                        help="policy specs, space-separated")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        results = measure([0.1], ["async", "ringleader"], [0.1, 0.3], 1, 40.0)
        results["seeds"] = 1
    else:
        alphas = [float(a) for a in args.alphas.split(",")]
        hidden = [int(x) for x in args.hidden.split(",")] if args.hidden else None
        results = measure(alphas, args.policies.split(), LRS, args.seeds, args.budget,
                          args.slow, hidden, args.task)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(table(results) + excess(results))
    plot(results, args.out / "gap.png")
    print(f"wrote {args.out}/results.json, results.md, gap.png")


if __name__ == "__main__":
    main()
