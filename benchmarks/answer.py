"""Time to answer (issue 38): the whole of ``hybridsgd tune`` as a user waits through it.

    python benchmarks/answer.py                 # mlp-digits and cnn-digits, before and after
    python benchmarks/answer.py --tasks mlp-digits --repeats 1
    python benchmarks/answer.py --profile       # where an mlp-digits tune's time goes

Each tune is one ``hybridsgd tune`` process: 4 policies (sync, backup b = 2, async,
k_async k = 4) x the default 7 learning rates x 2 seeds, on a validation split; each
policy's winner on 3 fresh seeds on the test set; then the report. The base is
examples/digits-backup.toml (W = 16, Pareto compute, a link) with the task named, 200
updates and its target accuracy (0.95, or 0.9 for cnn-digits: the winners' runs find
their time to it).

"before" is the tune as it was before issue 38's cuts (its grid runs search for the
target like every run); "after" is the tune as it is (:data:`~hybridsgd.app.tuning.
LEAN_GRID`). They alternate, best of ``--repeats`` each, in this one run; the winners of
every tune must be the same, or the benchmark exits 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "examples" / "digits-backup.toml"
POLICIES = ["sync", "backup:backups=2", "async", "k_async:k=4"]
TARGET = {"mlp-digits": 0.95, "cnn-digits": 0.9}

# the tune in a process of its own, with the grid runs lean or not
CHILD = (
    "import sys\n"
    "from hybridsgd.app import tuning\n"
    "tuning.LEAN_GRID = sys.argv[1] == 'after'\n"
    "from hybridsgd.cli import main\n"
    "sys.exit(main(sys.argv[2:]))\n"
)


def tune_args(task: str, out: Path) -> list[str]:
    args = ["tune", str(BASE), "--out", str(out), "--seeds", "2", "--final-seeds", "3"]
    for p in POLICIES:
        args += ["--policy", p]
    for s in (f"task.name={task}", "run.updates=200", f"run.target_accuracy={TARGET[task]}"):
        args += ["--set", s]
    return args


def timed_tune(task: str, version: str, out: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, version, *tune_args(task, out)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{task} {version}: hybridsgd tune exited {done.returncode}:\n{done.stderr}")
    if not (out / "report.html").is_file():
        sys.exit(f"{task} {version}: no report.html in {out}")
    chosen = json.loads((out / "tune.json").read_text())["chosen"]
    return wall, {label: c["settings"] for label, c in chosen.items()}


def profile(task: str) -> None:
    """Where one tune's time goes (cProfile, in this process, grid runs lean)."""
    import cProfile
    import pstats

    from hybridsgd.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        prof = cProfile.Profile()
        start = time.perf_counter()
        prof.runcall(main, [*tune_args(task, Path(tmp) / "t"), "--jobs", "1"])
        wall = time.perf_counter() - start
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    parts = {
        "grid runs and winners' runs": ("sweep.py", "run_many"),
        "  schedules (the event loop)": ("sim/__init__.py", "simulate_schedule"),
        "  gradients (what was read at each version)": ("replay.py", "read_at"),
        "  updates (aggregation, optimizer step)": ("replay.py", "update"),
        "  evaluations (and the target search)": ("replay.py", "appeared"),
        "    of which the target search": ("target.py", "evaluated"),
        "report (tables, plots, HTML)": ("report/build.py", "build_report"),
    }
    print(f"{task}: one tune, --jobs 1, {wall:.1f} s in this process")
    for label, (file, func) in parts.items():
        cum = sum(v[3] for (f, _, name), v in stats.items() if f.endswith(file) and name == func)
        print(f"  {label:<46} {cum:7.1f} s  {cum / wall:6.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="mlp-digits,cnn-digits")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    tasks = args.tasks.split(",")
    if args.profile:
        for task in tasks:
            profile(task)
        return
    same = True
    print("tune -> report wall time, s (best of each; before/after alternate)")
    for task in tasks:
        best = {"before": float("inf"), "after": float("inf")}
        winners = {}
        for r in range(args.repeats):
            for version in ("before", "after"):
                with tempfile.TemporaryDirectory() as tmp:
                    wall, chosen = timed_tune(task, version, Path(tmp) / "t")
                best[version] = min(best[version], wall)
                winners.setdefault(version, chosen)
                same &= chosen == winners["before"]
                print(f"  {task} {version} #{r + 1}: {wall:.1f} s", flush=True)
        print(
            f"{task}: before {best['before']:.1f} s, after {best['after']:.1f} s, "
            f"{best['before'] / best['after']:.2f}x; winners identical: "
            f"{'yes' if winners['after'] == winners['before'] else 'NO'}"
        )
        print(f"  winners: {json.dumps(winners['after'])}")
    if not same:
        sys.exit("the winners differ between tunes")


if __name__ == "__main__":
    main()
