"""Run every policy of a comparison on the same task, data, timing model and seeds."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from hybridsgd.config import Config
from hybridsgd.errors import ConfigError
from hybridsgd.policies import parse_spec
from hybridsgd.rundir import writable_dir
from hybridsgd.runner import run


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
) -> Path:
    """Run ``specs`` x ``seeds`` (run.seed, run.seed + 1, ...) into ``out/runs/<label>-s<seed>``.

    Every spec is validated before the first run starts, so a typo costs nothing.
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
    out = writable_dir(out)
    (out / "policies.txt").write_text("\n".join(labels) + "\n")
    for n, (spec, cfg) in enumerate(configs):
        if progress:
            progress(n, len(configs), spec)
        run(cfg, out=out / "runs" / f"{label_of(spec)}-s{cfg.run.seed}", force=True)
    if progress:
        progress(len(configs), len(configs), "")
    return out
