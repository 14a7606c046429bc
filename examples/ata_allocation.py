"""ATA against Rennala: the time per update, and the computation spent on it (issue 37,
docs/reproductions.md section 10).

ATA's claim: by learning each worker's time per minibatch and allocating each round's B
minibatches to the workers that finish them soonest, it needs about the time of the best
fixed allocation while computing far less than methods that keep every worker busy.
Rennala keeps every worker computing and stops the unfinished work at each update.

W = 16 workers, B = 16, log-normal(0, 0.5) minibatch times; speeds 1x for 4 workers and
4x slower for 12 (or all equal). Schedules only, 3000 updates, 3 seeds each.

    python examples/ata_allocation.py      # ~1 min
"""

from __future__ import annotations

import numpy as np

import hybridsgd as h
from hybridsgd.policies import build_policy
from hybridsgd.timing import Cluster, parse_model

W = B = 16
CLUSTERS = {"equal speeds": [1.0] * W, "4 fast, 12 4x slower": [1.0] * 4 + [4.0] * 12}
POLICIES = (f"rennala:batch={B}", f"ata:batch={B}", f"ata:batch={B},alpha=0.1")


def measure(spec: str, speeds: list[float], seeds: int = 3, updates: int = 3000):
    """Time per update, and worker-time computed per update (cancelled work included)."""
    per_update, work = [], []
    for seed in range(seeds):
        cluster = Cluster(parse_model("lognormal:mu=0,sigma=0.5"), W, seed=seed, speeds=speeds)
        s = h.simulate_schedule(build_policy(f"{spec},workers={W}"), cluster, updates)
        end = s.update_time[-1]
        busy = np.minimum(s.end, end) - np.minimum(s.start, end)  # up to the last update
        per_update.append(end / s.n_updates)
        work.append(busy.sum() / s.n_updates)
    return np.asarray(per_update), np.asarray(work)


def main() -> None:
    print("| cluster | policy | time per update | worker-time computed per update |")
    print("|---|---|---|---|")
    for name, speeds in CLUSTERS.items():
        for spec in POLICIES:
            t, w = measure(spec, speeds)
            print(f"| {name} | `{spec}` | {t.mean():.3f} ± {t.std(ddof=1):.3f} | "
                  f"{w.mean():.2f} ± {w.std(ddof=1):.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
