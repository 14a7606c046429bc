"""``backup``: synchronous SGD with b backup workers (Chen et al. 2016).

W = N + b workers compute on version v; the first N gradients to arrive are averaged and
applied, and the b late ones are cancelled (``late="cancel"``, the default) or allowed to
finish and then dropped as stale (``late="drop"``, as in TensorFlow's SyncReplicasOptimizer).
Either way they are counted in the trace. With b = 0 this is exactly ``sync``.

Advice: one or two backups per 32 workers usually remove most of the straggler tail; more
backups waste work without shortening rounds much (see the arrival-order plot).
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridsgd.errors import ConfigError
from hybridsgd.policies.quorum import SYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import Registered, one_of, param, register


def backup(workers: int, backups: int, late: str = "cancel") -> QuorumPolicy:
    """N = ``workers - backups`` of ``workers`` gradients per update."""
    if not 0 <= backups < workers:
        raise ValueError("backups must be in [0, workers)")
    if late not in ("cancel", "drop"):
        raise ValueError("late must be 'cancel' or 'drop'")
    settings = SYNCHRONOUS.replace(in_flight=late)
    return QuorumPolicy(workers, workers - backups, counts="workers", **settings, name="backup")


def _check_backups(value: int, p) -> None:
    if not 0 <= value < p.workers:
        raise ConfigError(
            "policy.backups",
            f"must be in [0, policy.workers) so that N = workers - backups >= 1 (got {value})",
        )


@dataclass(frozen=True)
class BackupParams:
    backups: int = param(
        0,
        "b: each update averages the first N = W - b gradients",
        check=_check_backups,
        example="2",
    )
    late: str = param(
        "cancel",
        "late work is cancel-led, or finishes and is drop-ped",
        check=one_of("late", "cancel", "drop"),
    )


register(
    Registered(
        "backup",
        "synchronous with b backup workers: the first N = W - b gradients (Chen et al. 2016)",
        build=lambda c, ctx: backup(c.workers, c.backups, c.late),
        params=BackupParams,
        aliases={"b": "backups"},
        min_gradients=lambda c: c.workers - c.backups,
        family="sync",
        examples=("backup:backups=1", "backup:backups=1,late=drop"),
        candidates=lambda W: [
            {"backups": b} for b in sorted({1, 2, max(1, W // 8), max(1, W // 4)}) if b < W
        ],
        colour="#ff7f0e",
        predictor="first-k-distinct",
    )
)
