"""The numbers of docs/tasks.md: for every built-in task, sync against async at W = 16 in the
simulator, each tuned on its own with `hybridsgd tune` (the lr grid below, scored on a
validation split of 0.2 of the training set, one tuning seed), its winner rerun on 3 fresh
seeds evaluated on the test set, and the verdict on the final test loss with its paired 95%
interval ("tie" when it covers zero); and the gradient noise scale (B_simple and B_noise)
at the start and after 100 synchronous updates at sync's lr.

    python examples/task_survey.py [--tasks lm,mf] [--time 300] [--out runs/survey]

Each run has ``--time`` units of virtual time (compute times 1 + exponential of mean 0.2:
mild straggling). A run that diverges scores +inf and ranks last.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

import hybridsgd as h
from hybridsgd.app.tuning import plan, tune
from hybridsgd.forecast import noise_scale_along_run
from hybridsgd.report.verdict import verdict

#: mild straggling: 1 + an exponential of mean 0.2 (E[slowest of 16] = 1.68)
COMPUTE = "shifted-exp:delta=1,mu=5"

#: task settings, optimizer, and the lr grid (log-spaced around what trains)
TASKS: dict[str, tuple[dict, dict, list[float]]] = {
    "quadratic": ({}, {}, [0.03, 0.1, 0.3, 1.0]),
    "logistic": ({}, {}, [0.1, 0.3, 1.0, 3.0, 10.0]),
    "mlp-digits": ({}, {}, [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]),
    "mlp-mnist": ({}, {}, [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]),
    "cnn-digits": ({}, {}, [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]),
    "cnn-mnist": ({}, {}, [0.001, 0.003, 0.01, 0.03, 0.1, 0.3]),
    "cnn-mnist-bn": ({"name": "cnn-mnist", "norm": "batch"}, {}, [0.01, 0.03, 0.1, 0.3, 1.0]),
    "teacher": ({}, {}, [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]),
    "mf": ({}, {}, [1.0, 3.0, 10.0, 30.0, 100.0]),
    "lm": ({}, {"name": "adamw"}, [1e-3, 3e-3, 1e-2]),
}


def config(key: str, policy: str, lr: float, time_: float) -> h.Config:
    task, opt, _ = TASKS[key]
    return h.Config.from_dict(
        {
            "task": {"name": key, **task, "batch_size": 16 if key == "lm" else 32},
            "policy": {"name": policy, "workers": 16},
            "optimizer": {**opt, "lr": lr},
            "timing": {"compute": COMPUTE},
            "run": {"time": time_, "eval_every": 10_000_000},
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--time", type=float, default=300.0)
    ap.add_argument("--final-seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=None, help="runs side by side (default: all)")
    ap.add_argument("--out", default="runs/survey")
    args = ap.parse_args()
    rows = []
    for key in args.tasks.split(","):
        t0 = time.time()
        row: dict = {"task": key}
        base = config(key, "sync", TASKS[key][2][0], args.time)
        p = plan(base, ["sync", "async"], {"optimizer.lr": TASKS[key][2]},
                 final_seeds=args.final_seeds)  # fmt: skip
        out = Path(args.out) / key
        tuned = tune(p, out, jobs=args.jobs, force=True)
        h.report.build_report(out)
        summary = pd.read_csv(out / "summary.csv")
        for policy in ("sync", "async"):
            mine = summary[summary.policy == policy]
            row[policy] = {
                "lr": tuned.chosen[policy]["settings"]["optimizer.lr"],
                "loss": float(mine.final_loss.mean()),
                "loss_sd": float(mine.final_loss.std()),
                "accuracy": float(mine.final_accuracy.mean()),
                "updates": float(mine.updates.mean()),
            }
        v = verdict(summary, "final-loss")
        row["verdict"] = v.sentence() if v is not None else ""
        row["warnings"] = tuned.warnings
        # the noise scale along 100 synchronous updates at sync's own best lr
        lr = row["sync"]["lr"]
        pts = noise_scale_along_run(config(key, "sync", lr, 1.0), 100, 2, hessian=True)
        row["noise_scale"] = [
            {k: p[k] for k in ("update", "loss", "b_simple", "low", "high", "b_noise",
                               "noise_low", "noise_high")}
            for p in pts
        ]  # fmt: skip
        row["seconds"] = time.time() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    with open(Path(args.out) / "survey.json", "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
