"""Does the noise scale predict what a bigger batch buys? (docs/tasks.md)

On two tasks with different noise scales, synchronous SGD runs with W = 1, 4, 16 and 64
workers of batch 32 (B = 32 to 2,048 samples per update), each at its own best lr of a grid,
until the test loss first reaches a target. McCandlish et al.'s eq. 2.11 predicts the updates
needed, S(B) = S_min (1 + B_noise / B), so relative to B = 32:

    S(B) / S(32) = (1 + B_noise / B) / (1 + B_noise / 32)

with B_noise from ``hybridsgd noise-scale --hessian`` (the mean at 5 points along the W = 16
run to the target); the prediction from its Hessian-free proxy B_simple is printed beside.
Time to target is S(B) times the time per update, which ``predict`` gives exactly for sync,
so the updates are what the noise model must get right.

    python examples/noise_scale_check.py [TASK ...]
"""

from __future__ import annotations

import math
import sys

import numpy as np

import hybridsgd as h
from hybridsgd.forecast import noise_scale_along_run

#: task, its settings, the target test loss, the lr grid
CASES = [
    ("mlp-digits", {"name": "mlp-digits"}, 0.25, [0.03, 0.1, 0.3, 1.0, 3.0]),
    ("teacher", {"name": "teacher"}, 1.45, [0.1, 0.3, 1.0, 3.0, 10.0]),
]
WORKERS = [1, 4, 16, 64]
CAP = 4000  # updates


def config(task: dict, workers: int, lr: float, updates: int) -> h.Config:
    return h.Config.from_dict(
        {
            "task": {**task, "batch_size": 32},
            "policy": {"name": "sync", "workers": workers},
            "optimizer": {"lr": lr},
            "run": {"updates": updates, "eval_every": 1},
        }
    )


def updates_to(task: dict, workers: int, lr: float, target: float, cap: int) -> float:
    """Updates until the test loss first falls to ``target`` (inf if never within ``cap``)."""
    ev = h.run(config(task, workers, lr, cap), progress=False).trace.evals
    hit = ev[ev.loss <= target]
    return float(hit.version.iloc[0]) if len(hit) else math.inf


def main() -> None:
    only = sys.argv[1:]
    for name, task, target, grid in CASES:
        if only and name not in only:
            continue
        best: dict[int, tuple[float, float]] = {}
        cap = CAP
        for w in WORKERS:  # more samples per update never needs more updates: cap by the last
            tries = {lr: updates_to(task, w, lr, target, cap) for lr in grid}
            lr = min(tries, key=tries.get)
            best[w] = (tries[lr], lr)
            if math.isfinite(tries[lr]):
                cap = int(tries[lr] * 1.2) + 10
        s16, lr16 = best[16]
        pts = noise_scale_along_run(config(task, 16, lr16, 1), int(s16), 5, hessian=True)
        b_noise = float(np.mean([p["b_noise"] for p in pts]))
        b_simple = float(np.mean([p["b_simple"] for p in pts]))
        along = ", ".join(f"{p['b_noise']:.0f}" for p in pts)
        print(f"{name}: target loss {target}, B_noise {b_noise:.0f} (along the run: {along}), "
              f"B_simple {b_simple:.0f}")  # fmt: skip
        print("  W  samples/update  best lr  updates  measured S(B)/S(32)  B_noise  B_simple")
        s1 = best[1][0]
        for w in WORKERS:
            s, lr = best[w]
            b = 32 * w
            predicted = (1 + b_noise / b) / (1 + b_noise / 32)
            proxy = (1 + b_simple / b) / (1 + b_simple / 32)
            print(f"{w:3d} {b:15d} {lr:8g} {s:8.0f} {s / s1:20.3f} {predicted:8.3f} {proxy:9.3f}")


if __name__ == "__main__":
    main()
