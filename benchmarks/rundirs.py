"""Run directories for a refactor's "behaviour unchanged" check (issue 35's bar).

    python benchmarks/rundirs.py write DIR      # ten run directories, from this checkout
    python benchmarks/rundirs.py compare A B    # byte for byte, apart from wall times
    python benchmarks/rundirs.py compare A B --config-as-read

Write them before a change (from a worktree of the old commit: ``PYTHONPATH=WT/src``) and
after it, then compare. The runs: one per policy family on the simulator, a learning-rate
grid replayed in one pass (``run_grid``), and a run interrupted at update 55 and resumed
from its checkpoint. Every run fixes ``run.threads = 1``: the default chooses threads by
the machine's load, and the numerics follow the thread count.

``--config-as-read`` compares each config.toml (and summary.json's copy of the config) as
this version reads it rather than byte for byte: for a change of the config's layout
(issue 35 moved keys into [run.local] and [run.ray] and lists only a task's own keys),
whose other files must still be byte-identical.
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


def _as_read(config: dict) -> dict:
    import hybridsgd as h

    return h.Config.from_dict(config).to_dict()


def _same(x: Path, y: Path, as_read: bool) -> bool:
    if x.name == "summary.json":
        sx, sy = _strip(json.loads(x.read_text())), _strip(json.loads(y.read_text()))
        if as_read:
            sx["config"], sy["config"] = _as_read(sx["config"]), _as_read(sy["config"])
        return sx == sy
    if x.name == "config.toml" and as_read:
        import hybridsgd as h

        return h.Config.load(x).to_dict() == h.Config.load(y).to_dict()
    return x.read_bytes() == y.read_bytes()


def compare(a: Path, b: Path, as_read: bool = False) -> int:
    bad = 0
    names = sorted({p.relative_to(a) for p in a.rglob("*") if p.is_file()})
    if names != sorted({p.relative_to(b) for p in b.rglob("*") if p.is_file()}):
        print("different files:", names)
        bad += 1
    for name in names:
        if (b / name).exists() and not _same(a / name, b / name, as_read):
            print("differs:", name)
            bad += 1
    how = "configs as read, the rest byte for byte" if as_read else "byte for byte"
    print(f"{len(names)} files compared ({how}), {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "write":
        write(Path(sys.argv[2]))
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "compare":
        as_read = sys.argv[4:] == ["--config-as-read"]
        if len(sys.argv) == 5 and not as_read:
            sys.exit(__doc__)
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3]), as_read))
    else:
        sys.exit(__doc__)
