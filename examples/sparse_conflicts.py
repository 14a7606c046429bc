"""Why asynchronous SGD suits matrix factorization (docs/tasks.md): its gradients touch a few
rows, so a stale gradient rarely meets a row that changed since it was read.

For asynchronous SGD at W = 16 on ``mf`` and on a dense task, this measures from the trace:

* conflicts: of the parameters a stale gradient changes, the share that some update between
  its read and its apply had changed too (Hogwild!'s overlap, Recht et al. 2011);
* the cost of staleness: the final test loss of W = 16 against W = 1 (no staleness) with the
  same lr and the same number of updates.

    python examples/sparse_conflicts.py
"""

from __future__ import annotations

import numpy as np
import torch

import hybridsgd as h
from hybridsgd.runner import samplers_for
from hybridsgd.tasks import build_task

#: name, task settings, lr, updates: mf as classic factorization SGD does it, a few ratings
#: per step (batch 4: 0.9% of the parameters per gradient); the dense tasks at batch 32
CASES = [
    ("mf", {"name": "mf", "batch_size": 4}, 0.3, 30_000),
    ("teacher", {"name": "teacher"}, 1.0, 400),
    ("mlp-digits", {"name": "mlp-digits"}, 0.3, 400),
]


def touched(task, feeds, worker: int, minibatch: int, params: torch.Tensor) -> np.ndarray:
    """Which coordinates a gradient changes (its nonzero entries)."""
    g, _ = task.grad(params, *task.batch(feeds[worker].batch(minibatch)))
    return (g != 0).numpy()


def conflicts(name: str, task_cfg: dict, lr: float, updates: int) -> dict:
    cfg = h.Config.from_dict(
        {
            "task": {"batch_size": 32, **task_cfg},
            "policy": {"name": "async", "workers": 16},
            "optimizer": {"lr": lr},
            "run": {"updates": updates, "eval_every": updates},
        }
    )
    r = h.run(cfg, progress=False)
    task = build_task(cfg.task, 0)
    feeds = samplers_for(cfg, task)
    params = task.initial_params()  # which coordinates are nonzero does not depend on them
    g = r.trace.gradients
    g = g[g.fate == "applied"].sort_values("update")
    masks = {
        int(row.update): touched(task, feeds, int(row.worker), int(row.minibatch), params)
        for row in g.itertuples()
    }
    shares, stale = [], 0
    for row in g.itertuples():
        read, applied = int(row.read_version), int(row.update)
        if applied - 1 == read:
            continue  # fresh: nothing changed in between
        stale += 1
        between = np.zeros_like(masks[applied])
        for u in range(read + 1, applied):
            if u in masks:  # an update whose gradient was rejected changed nothing
                between |= masks[u]
        mine = masks[applied]
        shares.append((mine & between).sum() / max(1, mine.sum()))
    serial = h.run(cfg.replace("policy.workers=1"), progress=False)
    return {
        "task": name,
        "mean_staleness": float(g.staleness.mean()),
        "touched": float(np.mean([m.mean() for m in masks.values()])),
        "conflict": float(np.mean(shares)) if shares else 0.0,
        "stale_gradients": stale,
        "loss_w16": r.summary["final_loss"],
        "loss_w1": serial.summary["final_loss"],
    }


def main() -> None:
    print("task        staleness  touched  conflicts  loss W=16  loss W=1 (same lr, updates)")
    for name, cfg, lr, updates in CASES:
        c = conflicts(name, cfg, lr, updates)
        print(
            f"{name:<11} {c['mean_staleness']:9.1f} {c['touched']:8.1%} {c['conflict']:10.1%}"
            f" {c['loss_w16']:10.4f} {c['loss_w1']:9.4f}"
        )


if __name__ == "__main__":
    main()
