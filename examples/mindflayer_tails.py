"""MindFlayer against Rennala as compute times grow heavy-tailed (issue 37,
docs/reproductions.md section 9).

Both apply B fresh gradients of the current parameters per update, so an update is the
same in expectation; only its time differs. W = B = 16 workers with log-normal(0, sigma)
minibatch times (median 1), sigma in {0.5, 1.5, 2.5}; MindFlayer with one budget for every
worker, from half the median to 8x. The simulator's schedules only (no training), 3000
updates, 3 seeds each.

    python examples/mindflayer_tails.py          # ~30 s
"""

from __future__ import annotations

import numpy as np

import hybridsgd as h
from hybridsgd.policies import build_policy
from hybridsgd.timing import Cluster, parse_model

W = B = 16
SIGMAS = (0.5, 1.5, 2.5)
BUDGETS = (0.5, 1, 2, 4, 8)


def time_per_update(spec: str, model: str, seeds: int = 3, updates: int = 3000) -> np.ndarray:
    out = []
    for seed in range(seeds):
        policy = build_policy(f"{spec},workers={W}")
        s = h.simulate_schedule(policy, Cluster(parse_model(model), W, seed=seed), updates)
        out.append(s.update_time[-1] / s.n_updates)
    return np.asarray(out)


def main() -> None:
    head = "| sigma | rennala | " + " | ".join(f"budget {b:g}" for b in BUDGETS) + " |"
    print(head)
    print("|---" * (len(BUDGETS) + 2) + "|")
    for sigma in SIGMAS:
        model = f"lognormal:mu=0,sigma={sigma}"
        cells = [time_per_update(f"rennala:batch={B}", model)]
        cells += [time_per_update(f"mindflayer:batch={B},budgets={b}", model) for b in BUDGETS]
        row = " | ".join(f"{c.mean():.3f} ± {c.std(ddof=1):.3f}" for c in cells)
        print(f"| {sigma:g} | {row} |")


if __name__ == "__main__":
    main()
