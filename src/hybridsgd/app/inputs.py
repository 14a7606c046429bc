"""The check compare and tune both make of what they are given, before anything runs: the
policies (at least one, none twice) and the seeds. Each bad input is one ConfigError
naming the flag and the fix."""

from __future__ import annotations

import re
from collections.abc import Sequence

from hybridsgd.errors import ConfigError


def label_of(spec: str) -> str:
    """A directory-safe label: ``backup:backups=2`` -> ``backup_backups-2``;
    ``hybrid:threshold=linear:start=0,end=9`` -> ``hybrid_linear_start-0_end-9``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.replace("threshold=", "").replace("=", "-")).strip(
        "_"
    )


def check_sweep(specs: Sequence[str], seeds: int, flag: str = "--seeds") -> list[str]:
    """The label of each policy in ``specs`` (a sweep needs at least one, none twice), once
    ``seeds`` (``flag``) is checked to be at least 1."""
    if not specs:
        raise ConfigError("--policy", "give at least one, e.g. --policy sync --policy async")
    labels = [label_of(s) for s in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError("--policy", "the same policy is given twice")
    if seeds < 1:
        raise ConfigError(flag, f"must be >= 1 (got {seeds})")
    return labels
