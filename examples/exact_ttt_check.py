"""Check that a comparison's times to target do not depend on its evaluation grid.

    python examples/exact_ttt_check.py runs/repro/chen [--jobs 2]

Every run under DIR/runs/ is run again from its own config.toml with ``run.eval_every = 1``
(every update evaluated), and its time to target is compared with the one the run recorded
at its own ``eval_every``. With the exact search (hybridsgd.target) the two are equal for
every run; a row marked "differs" is a run whose target was crossed, lost and crossed again
between two of its evaluations (the search starts after the last evaluation below it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import hybridsgd as h
from hybridsgd.app.sweep import run_many


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--jobs", type=int, default=None)
    args = ap.parse_args()
    runs = sorted(d for d in (args.dir / "runs").iterdir() if (d / "summary.json").is_file())
    if not runs:
        raise SystemExit(f"{args.dir}/runs holds no run")
    recorded = [json.loads((d / "summary.json").read_text()) for d in runs]
    configs = [h.Config.load(d / "config.toml", ["run.eval_every=1"]) for d in runs]
    outcomes = run_many(configs, jobs=args.jobs)
    same = 0
    print(f"{'run':40} {'eval_every':>10} {'recorded':>10} {'every update':>12}  verdict")
    for d, s, o in zip(runs, recorded, outcomes, strict=True):
        if o.trace is None:
            print(f"{d.name:40} failed: {o.error}")
            continue
        a, b = s.get("time_to_target"), o.trace.summary.get("time_to_target")
        equal = a == b or (a is None and b is None)
        same += equal
        fa = "-" if a is None else f"{a:.6g}"
        fb = "-" if b is None else f"{b:.6g}"
        every = s["config"]["run"]["eval_every"]
        print(f"{d.name:40} {every:>10} {fa:>10} {fb:>12}  {'equal' if equal else 'differs'}")
    print(f"{same} of {len(runs)} runs: the same time to target at every update's evaluation")
    return 0 if same == len(runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
