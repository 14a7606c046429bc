"""Run every policy of a comparison on the same task, data, timing model and seeds."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

from hybridsgd.config import Config
from hybridsgd.errors import ConfigError, WorkerLost
from hybridsgd.policies import parse_spec
from hybridsgd.rundir import CHECKPOINT, writable_dir
from hybridsgd.sweep import check_jobs, run_many


def label_of(spec: str) -> str:
    """A directory-safe label: ``backup:backups=2`` -> ``backup_backups-2``;
    ``hybrid:threshold=linear:start=0,end=9`` -> ``hybrid_linear_start-0_end-9``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.replace("threshold=", "").replace("=", "-")).strip(
        "_"
    )


#: what a comparison or a tuning writes at the top of its directory (besides runs/ and plots)
OWN_FILES = ("report.html", "summary.csv", "policies.txt", "tune.csv", "tune.json")


def sweep_dir(out: str | Path, force: bool = False) -> Path:
    """``out`` ready for a new comparison or tuning. One that already holds one (a report,
    or runs/ from an interrupted sweep) is refused unless ``force``, which removes that
    comparison first: runs/, the report, its plots and tables, nothing else. Old runs left
    there would join the new report."""
    out = writable_dir(out)
    old = [n for n in OWN_FILES if (out / n).exists()] + (
        ["runs/"] if (out / "runs").exists() else []
    )
    if old and not force:
        raise ConfigError(
            "--out",
            f"{out} already holds a comparison ({', '.join(old)}); pass another --out or --force",
        )
    if old:
        shutil.rmtree(out / "runs", ignore_errors=True)
        for name in OWN_FILES:
            (out / name).unlink(missing_ok=True)
        for png in out.glob("*.png"):
            png.unlink()
    return out


def compare(
    base: Config,
    specs: list[str],
    seeds: int,
    out: str | Path,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    jobs: int | None = None,
    ray_address: str = "",
    force: bool = False,
) -> Path:
    """Run ``specs`` x ``seeds`` (run.seed, run.seed + 1, ...) into ``out/runs/<label>-s<seed>``.

    Every spec is validated before the first run starts, so a typo costs nothing. The runs
    go ``jobs`` at a time, or on the Ray cluster at ``ray_address`` (:func:`run_many`). A
    directory that holds a comparison already is refused unless ``force`` (:func:`sweep_dir`).
    """
    if seeds < 1:
        raise ConfigError("--seeds", f"must be >= 1 (got {seeds})")
    if not specs:
        raise ConfigError("--policy", "give at least one, e.g. --policy sync --policy async")
    configs = []
    for spec in specs:
        _, overrides = parse_spec(spec)
        for i in range(seeds):
            cfg = base.replace(*overrides, f"run.seed={base.run.seed + i}")
            configs.append((spec, cfg))
    labels = [label_of(s) for s in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError("--policy", "the same policy is given twice")
    check_jobs(jobs, [c for _, c in configs])
    out = sweep_dir(out, force)
    (out / "policies.txt").write_text("\n".join(labels) + "\n")
    dirs = [out / "runs" / f"{label_of(spec)}-s{cfg.run.seed}" for spec, cfg in configs]
    for d in dirs:
        (d / CHECKPOINT).unlink(missing_ok=True)
    tick = (lambda done, total: progress(done, total, "")) if progress else None
    outcomes = run_many(
        [c for _, c in configs], jobs=jobs, ray_address=ray_address, progress=tick, outs=dirs
    )
    failed = [(spec, o) for (spec, _), o in zip(configs, outcomes, strict=True) if o.error]
    if failed:
        spec, first = failed[0]
        raise WorkerLost(
            f"{len(failed)} of {len(configs)} runs failed; {spec} (seed "
            f"{first.config.run.seed}): {first.error}"
        )
    return out
