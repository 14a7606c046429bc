"""Run every policy of a comparison on the same task, data, timing model and seeds."""

from __future__ import annotations

import re
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


def compare(
    base: Config,
    specs: list[str],
    seeds: int,
    out: str | Path,
    progress: Callable[[int, int, str], None] | None = None,
    *,
    jobs: int | None = None,
    ray_address: str = "",
) -> Path:
    """Run ``specs`` x ``seeds`` (run.seed, run.seed + 1, ...) into ``out/runs/<label>-s<seed>``.

    Every spec is validated before the first run starts, so a typo costs nothing. The runs
    go ``jobs`` at a time, or on the Ray cluster at ``ray_address`` (:func:`run_many`).
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
    out = writable_dir(out)
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
