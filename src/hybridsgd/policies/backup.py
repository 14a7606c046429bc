"""``backup``: synchronous SGD with b backup workers (Chen et al. 2016).

W = N + b workers compute on version v; the first N gradients to arrive are averaged and
applied, and the b late ones are cancelled (``late="cancel"``, the default) or allowed to
finish and then dropped as stale (``late="drop"``, as in TensorFlow's SyncReplicasOptimizer).
Either way they are counted in the trace. With b = 0 this is exactly ``sync``.

Advice: one or two backups per 32 workers usually remove most of the straggler tail; more
backups waste work without shortening rounds much (see the arrival-order plot).
"""

from __future__ import annotations

from hybridsgd.policies.quorum import SYNCHRONOUS, QuorumPolicy


def backup(workers: int, backups: int, late: str = "cancel") -> QuorumPolicy:
    """N = ``workers - backups`` of ``workers`` gradients per update."""
    if not 0 <= backups < workers:
        raise ValueError("backups must be in [0, workers)")
    if late not in ("cancel", "drop"):
        raise ValueError("late must be 'cancel' or 'drop'")
    settings = {**SYNCHRONOUS, "in_flight": late}
    return QuorumPolicy(workers, workers - backups, counts="workers", **settings, name="backup")
