"""Byzantine workers against every aggregator: the table of docs/robustness.md.

mlp-digits (real 8x8 digits), `sync` with W = 20 workers, batch 32, SGD lr 0.1, 150
updates; 4 of the 20 workers (20%, chosen by the seed) attack. Final test accuracy, mean
over seeds.

    python examples/byzantine.py [--seeds 3]
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import Progress

import hybridsgd as h

AGGREGATORS = [
    "mean",
    "median",
    "trimmed-mean:beta=0.2",
    "mean-around-median:f=4",
    "geometric-median",
    "krum:f=4",
    "multi-krum:f=4",
    "centered-clip:tau=1",
]
ATTACKS = [
    ("none", ""),
    ("sign-flip (-g)", "sign-flip"),
    ("sign-flip x4 (-4g)", "sign-flip:factor=4"),
    ("gaussian (std 1)", "gaussian:std=1"),
    ("label-flip", "label-flip"),
    ("ALIE (z_max)", "alie"),
    ("IPM (eps 0.5)", "ipm:eps=0.5"),
]


def accuracy(aggregator: str, attack: str, seed: int) -> float:
    cfg = h.Config.from_dict(
        {
            "task": {"name": "mlp-digits"},
            "policy": {"name": "sync", "workers": 20, "aggregator": aggregator},
            "optimizer": {"lr": 0.1},
            "faults": {"byzantine": 0.2 if attack else 0.0, "attack": attack or "sign-flip"},
            "run": {"updates": 150, "eval_every": 150, "seed": seed},
        }
    )
    return h.run(cfg).summary["final_accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    seeds = range(args.seeds)
    table: dict[tuple[str, str], float] = {}
    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("runs", total=len(AGGREGATORS) * len(ATTACKS) * args.seeds)
        for agg in AGGREGATORS:
            for label, attack in ATTACKS:
                accs = []
                for seed in seeds:
                    accs.append(accuracy(agg, attack, seed))
                    bar.advance(task)
                table[agg, label] = sum(accs) / len(accs)
    print("| aggregator | " + " | ".join(label for label, _ in ATTACKS) + " |")
    print("|---" * (len(ATTACKS) + 1) + "|")
    for agg in AGGREGATORS:
        cells = [f"{table[agg, label]:.3f}" for label, _ in ATTACKS]
        print(f"| `{agg}` | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
