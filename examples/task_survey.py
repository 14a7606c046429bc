"""The numbers of docs/tasks.md: for every built-in task, sync against async at W = 16 in the
simulator, each tuned on its own over a learning-rate grid, at equal virtual time, and the
gradient noise scale (B_simple and B_noise) at the start and after 100 synchronous updates
at sync's lr.

    python examples/task_survey.py [--tasks lm,mf] [--time 60] [--out survey.json]

Each (task, policy) runs every lr of the task's grid for ``--time`` units of virtual time
(compute times 1 + exponential of mean 0.2: mild straggling), seed 0, and keeps the lr with
the lowest final test loss. A run that diverges scores +inf. This is a survey, one seed.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import hybridsgd as h
from hybridsgd.forecast import noise_scale_along_run

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
    ap.add_argument("--out", default="task_survey.json")
    args = ap.parse_args()
    rows = []
    for key in args.tasks.split(","):
        t0 = time.time()
        row: dict = {"task": key}
        for policy in ("sync", "async"):
            best = (math.inf, None, None)
            for lr in TASKS[key][2]:
                r = h.run(config(key, policy, lr, args.time), progress=False)
                s = r.summary
                loss = s["final_loss"] if not s.get("diverged") else math.inf
                if not math.isfinite(loss):
                    loss = math.inf
                row.setdefault("grid", []).append([policy, lr, loss, s["updates"]])
                if loss < best[0]:
                    best = (loss, lr, s.get("final_accuracy"))
            row[policy] = {"loss": best[0], "lr": best[1], "accuracy": best[2]}
        # the noise scale along 100 synchronous updates at sync's own best lr
        lr = row["sync"]["lr"] or TASKS[key][2][0]
        pts = noise_scale_along_run(config(key, "sync", lr, 1.0), 100, 2, hessian=True)
        row["noise_scale"] = [
            {k: p[k] for k in ("update", "loss", "b_simple", "low", "high", "b_noise",
                               "noise_low", "noise_high")}
            for p in pts
        ]  # fmt: skip
        row["seconds"] = time.time() - t0
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
