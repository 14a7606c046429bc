"""The virtual-time simulator: schedule first (fast), numerics after (batched).

>>> from hybridsgd.policies import backup
>>> from hybridsgd.timing import Cluster, parse_model
>>> cluster = Cluster(parse_model("exp:mu=1"), 8, seed=0)
>>> s = simulate_schedule(backup(8, 2), cluster, max_updates=100)
>>> s.n_updates, s.counts()["applied"], s.counts()["cancelled"]
(100, 600, 200)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybridsgd.backends.sim.events import run_events
from hybridsgd.backends.sim.fast import run_gated, run_renewal, run_rounds
from hybridsgd.backends.sim.replay import replay
from hybridsgd.backends.sim.shared import run_shared
from hybridsgd.policies.base import Policy
from hybridsgd.record import FATES, Evals, Schedule
from hybridsgd.timing.cluster import Cluster


def simulate_schedule(
    policy: Policy,
    cluster: Cluster,
    max_updates: int | None = None,
    max_time: float | None = None,
    fast: bool = True,
    crashes: Sequence[tuple[float, int]] = (),
    shrink: bool = True,
) -> Schedule:
    """Who computes on which version, when, and each gradient's fate, without any numerics.

    Uses a vectorised path when the policy's shape allows it and the cluster has no
    time-dependent slowdowns and sizes jobs by count (``fast=False`` forces the event
    loop; both give the same schedule). The policy must be fresh: it is driven from
    version 0. ``crashes`` (sorted ``(time, worker)`` pairs) kill workers; see
    :func:`run_events`. Workers that share fewer processors than there are of them
    (``cluster.cores``), or a server that works on each gradient (``cluster.server``),
    take :func:`run_shared`.
    """
    if max_updates is None and max_time is None:
        raise ValueError("give max_updates or max_time")
    if cluster.shares:
        return run_shared(policy, cluster, max_updates, max_time, crashes, shrink)
    bulk = (
        fast
        and not cluster.time_dependent
        and cluster.step_time is None
        and not crashes
        and policy.budgets is None
    )
    shape = policy.fast_path() if bulk else None
    if shape is None:
        return run_events(policy, cluster, max_updates, max_time, crashes, shrink)
    if shape[0] == "rounds":
        schedule = run_rounds(shape[1], cluster, policy.workers, max_updates, max_time)
    elif shape[0] == "gated":
        schedule = run_gated(shape[1], cluster, policy.workers, max_updates, max_time)
    else:
        distinct = shape[0] == "renewal-distinct"
        schedule = run_renewal(
            shape[1], cluster, policy.workers, max_updates, max_time, distinct=distinct
        )
    schedule.update_regime = np.full(schedule.n_updates, policy.level())  # one regime throughout
    return schedule


__all__ = ["FATES", "Evals", "Schedule", "replay", "run_events", "run_shared", "simulate_schedule"]
