"""Run directories for a refactor's "behaviour unchanged" check (issue 35's bar).

    python benchmarks/rundirs.py write DIR      # ten run directories, from this checkout
    python benchmarks/rundirs.py compare A B    # byte for byte, apart from wall times

Write them before a change (from a worktree of the old commit: ``PYTHONPATH=WT/src``) and
after it, then compare. The runs: one per policy family on the simulator, a learning-rate
grid replayed in one pass (``run_grid``), and a run interrupted at update 55 and resumed
from its checkpoint. Every run fixes ``run.threads = 1``: the default chooses threads by
the machine's load, and the numerics follow the thread count.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

BASE = {
    "task": {"name": "mlp-digits", "batch_size": 16},
    "run": {"updates": 60, "eval_every": 10, "threads": 1, "target_accuracy": 0.6},
    "timing": {"compute": "lognormal:mu=0,sigma=0.5"},
}
POLICIES = {
    "sync": {"name": "sync", "workers": 4},
    "backup": {"name": "backup", "workers": 6, "backups": 2},
    "async": {"name": "async", "workers": 4},
    "k_async": {"name": "k_async", "workers": 6, "k": 2},
    "ssp": {"name": "ssp", "workers": 4, "staleness_bound": 2},
    "hybrid": {"name": "hybrid", "workers": 4, "threshold": "linear:start=0,end=40"},
    "partition": {
        "name": "hybrid",
        "workers": 4,
        "threshold": "linear:start=0,end=40",
        "reading": "partition",
    },
}
# wall-clock fields: they differ from run to run whatever the code
WALL = {"wall_time_s"}


def _config(policy: dict, **run):
    import hybridsgd as h

    base = json.loads(json.dumps(BASE))
    base["policy"] = policy
    base["run"].update(run)
    return h.Config.from_dict(base)


def write(out: Path) -> None:
    import hybridsgd as h
    from hybridsgd.rundir import to_toml
    from hybridsgd.runner import run_grid, save_run

    for name, policy in POLICIES.items():
        h.run(_config(policy), out=out / name, progress=False, force=True)
    grid = [_config(POLICIES["sync"]).replace(f"optimizer.lr={lr}") for lr in (0.03, 0.1, 0.3)]
    for i, r in enumerate(run_grid(grid)):
        save_run(r.trace, out / f"grid-{i}", to_toml(r.config.to_dict()))

    def stop(phase: str, v: int, total: int) -> None:
        if phase == "train" and v == 55:
            raise KeyboardInterrupt

    cut = _config(POLICIES["k_async"], checkpoint_every=20, updates=90)
    with contextlib.suppress(KeyboardInterrupt):
        h.run(cut, out=out / "resumed", progress=stop, force=True)
    h.resume(out / "resumed", progress=False)


def _strip(value):
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in WALL}
    return value


def compare(a: Path, b: Path) -> int:
    bad = 0
    names = sorted({p.relative_to(a) for p in a.rglob("*") if p.is_file()})
    if names != sorted({p.relative_to(b) for p in b.rglob("*") if p.is_file()}):
        print("different files:", names)
        bad += 1
    for name in names:
        x, y = a / name, b / name
        if not y.exists():
            continue
        if name.name == "summary.json":
            same = _strip(json.loads(x.read_text())) == _strip(json.loads(y.read_text()))
        else:
            same = x.read_bytes() == y.read_bytes()
        if not same:
            print("differs:", name)
            bad += 1
    print(f"{len(names)} files compared, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit(__doc__)
