"""Reproduce the seed papers' claims (docs/reproductions.md) on the simulator.

    python examples/reproduce.py [chen|dutta|yu|yu-tuned|vora|ringmaster ...] [--seeds 3]
                                 [--jobs N] [--ray-address ADDRESS] [--out runs/repro]

Each claim is one `tune` over the same task (mlp-digits), data, timing model and seeds:
every policy gets its own lr and momentum from GRID, scored on a validation split held out
from the training data (time to the target accuracy, ties broken by the final loss), and
its winner reruns on `--seeds` fresh seeds evaluated on the test set. "yu" keeps one fixed
lr for every W, as the claim itself does; "yu-tuned" tunes each W. The report of each lands
in <out>/<claim>/report.html.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import hybridsgd as h
from hybridsgd.app.compare import compare
from hybridsgd.app.tuning import plan, tune
from hybridsgd.report import build_report

#: each policy's own lr and momentum come from this grid (docs/tuning.md)
GRID = {"optimizer.lr": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0], "optimizer.momentum": [0.0, 0.9]}

BASE = {
    "task": {"name": "mlp-digits", "batch_size": 32},
    "optimizer": {"name": "sgd", "lr": 0.05},
    "run": {"eval_every": 10, "target_accuracy": 0.95},
}

CLAIMS = {
    # Chen et al. 2016: backup workers beat sync to a target; end better than async. W = 32.
    "chen": (
        {
            "policy": {"workers": 32},
            "timing": {"compute": "pareto:alpha=1.8,scale=1"},
            "run": {"time": 400.0},
        },
        [
            "sync",
            "backup:backups=1",
            "backup:backups=2",
            "backup:backups=4",
            "backup:backups=8",
            "async",
        ],
    ),
    # Dutta et al. 2018: error versus time across K, K-sync and K-async. W = 32.
    "dutta": (
        {
            "policy": {"workers": 32},
            "timing": {"compute": "shifted-exp:delta=1,mu=1"},
            "run": {"time": 300.0},
        },
        [
            "k_sync:k=8",
            "k_sync:k=16",
            "k_sync:k=24",
            "sync",
            "async",
            "k_async:k=4",
            "k_async:k=8",
            "k_async:k=16",
        ],
    ),
    # Yu, Chen & Poor: adding asynchronous workers stops helping, then diverges (fixed lr).
    "yu": (
        {
            "timing": {"compute": "lognormal:mu=0,sigma=0.5"},
            "optimizer": {"lr": 0.1},
            "run": {"time": 60.0},
        },
        [f"async:workers={w}" for w in (2, 4, 8, 16, 32, 64, 128)],
    ),
    # Vora et al. 2024: a threshold from async to sync beats both within a time budget.
    "vora": (
        {
            "policy": {"workers": 32},
            "timing": {"compute": "pareto:alpha=1.8,scale=1"},
            "run": {"time": 300.0},
        },
        [
            "async",
            "sync",
            "hybrid:threshold=step:at=100,progress=time",
            "hybrid:threshold=linear:start=50,end=200,progress=time",
            "hybrid:threshold=exponential:rate=0.02,progress=time",
            "hybrid:threshold=sigmoid:mid=120,width=20,progress=time",
            "hybrid:threshold=cosine:start=50,end=200,progress=time",
            "hybrid:threshold=cyclic:async=40,sync=20,progress=time",
        ],
    ),
    # Maranjyan, Tyurin & Richtarik 2025: Ringmaster ASGD beats async SGD (and Rennala SGD)
    # when worker times differ widely. W = 32 in four speed classes, 1x to 64x slower.
    "ringmaster": (
        {
            "policy": {"workers": 32},
            "timing": {"compute": "exp:mu=1", "speed": "1x8,4x8,16x8,64x8"},
            "run": {"time": 300.0},
        },
        [
            "async",
            "ringmaster:R=8",
            "ringmaster:R=8,stops=true",
            "ringmaster:R=32,stops=true",
            "rennala:B=16",
            "m_sync:m=8",
            "sync",
        ],
    ),
}


FIXED_LR = {"yu"}  # the claim is about one lr for every W: compared as it is, not tuned


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("claims", nargs="*", default=[*CLAIMS, "yu-tuned"])
    ap.add_argument("--seeds", type=int, default=3, help="fresh seeds for each winner")
    ap.add_argument("--jobs", type=int, help="runs side by side (default: every core)")
    ap.add_argument("--ray-address", default="", help="run on this Ray cluster instead")
    ap.add_argument("--out", default="runs/repro")
    args = ap.parse_args()
    for claim in args.claims:
        extra, specs = CLAIMS[claim.removesuffix("-tuned")]
        data = {k: dict(v) for k, v in BASE.items()}
        for section, values in extra.items():
            data.setdefault(section, {}).update(values)
        out = Path(args.out) / claim
        cfg = h.Config.from_dict(data)
        say = lambda d, n, s, c=claim: print(f"[{c}] {d}/{n} {s}", flush=True)  # noqa: E731
        if claim in FIXED_LR:
            compare(
                cfg, specs, args.seeds, out, say, jobs=args.jobs, ray_address=args.ray_address,
                force=True,
            )  # fmt: skip
        else:
            p = plan(cfg, specs, GRID, final_seeds=args.seeds, objective="time-to-target")
            result = tune(
                p, out, jobs=args.jobs, ray_address=args.ray_address, progress=say, force=True
            )
            for label, c in result.chosen.items():
                print(f"[{claim}] {label}: {c['settings']}", flush=True)
            for warning in result.warnings:
                print(f"[{claim}] warning: {warning}", flush=True)
        print(f"[{claim}] report: {build_report(out)}", flush=True)


if __name__ == "__main__":
    main()
