"""The replay loop every simulated replay shares, whatever it computes.

A schedule's updates are applied in order. At version v, the replay first computes what
was read at v (the gradients of each (read version, update) group, and any lone gradients
batched across versions that are due), then builds and applies update v, then the new
version appears: it is evaluated every ``eval_every`` updates and at the end, or else kept
for the exact search of the first update at the target (:mod:`hybridsgd.target`). A run's
replay (:mod:`~hybridsgd.backends.sim.replay`, one parameter vector), a grid's
(:mod:`~hybridsgd.backends.sim.grid`, G vectors at once) and the hybrid's partition
reading are each one :class:`Engine` with its own ``read_at``, ``update`` and
``appeared``; the cadence and the order live here, once.
"""

from __future__ import annotations

import numpy as np

from hybridsgd.record import APPLIED, Schedule


class Groups:
    """A schedule's applied gradients in (read version, update) groups, the unit the
    replays compute together: ``gids`` sorted by read version, then update, then gid;
    group g is ``gids[starts[g]:ends[g]]``, read at ``read[g]`` for ``update[g]``. Plain
    lists (the replays read them one scalar at a time), with each member's worker and
    minibatch."""

    def __init__(self, schedule: Schedule) -> None:
        applied = np.flatnonzero(schedule.fate == APPLIED)
        r_all, u_all = schedule.read_version[applied], schedule.update[applied]
        order = np.lexsort((applied, u_all, r_all))
        self.gids = applied[order]
        r_sorted, u_sorted = r_all[order], u_all[order]
        cut = np.flatnonzero((np.diff(r_sorted) != 0) | (np.diff(u_sorted) != 0)) + 1
        starts = np.concatenate([[0], cut]).astype(np.int64)
        ends = np.concatenate([cut, [len(self.gids)]]).astype(np.int64)
        if not len(self.gids):
            starts = ends = np.empty(0, np.int64)
        self.read: list[int] = r_sorted[starts].tolist()
        self.update: list[int] = u_sorted[starts].tolist()
        self.sizes = ends - starts
        self.starts: list[int] = starts.tolist()
        self.ends: list[int] = ends.tolist()
        self.worker: list[int] = schedule.worker[self.gids].tolist()
        self.minibatch: list[int] = schedule.minibatch[self.gids].tolist()


class Engine:
    """The loop (see the module doc); a replay supplies what each step computes."""

    def __init__(self, schedule: Schedule, eval_every: int) -> None:
        self.schedule = schedule
        self.U = schedule.n_updates
        self.eval_every = eval_every

    def due(self, version: int) -> bool:
        """Whether ``version`` is evaluated: every ``eval_every`` updates, and the last."""
        return version % self.eval_every == 0 or version == self.U

    def run(self, first: int = 0) -> None:
        """Apply updates ``first`` .. U - 1 in order (until :meth:`after` says stop)."""
        for v in range(first, self.U):
            self.read_at(v)
            self.update(v)
            version = v + 1
            self.appeared(version, float(self.schedule.update_time[v]), self.due(version))
            if self.after(version):
                break

    def read_at(self, v: int) -> None:
        """Compute what was read at version ``v`` (the server is at ``v`` now)."""
        raise NotImplementedError

    def update(self, v: int) -> None:
        """Build update ``v`` from what was computed for it, and apply it."""
        raise NotImplementedError

    def appeared(self, version: int, t: float, due: bool) -> None:
        """Version ``version`` appeared at time ``t``: evaluate it if ``due``, else keep it
        for the target's search."""
        raise NotImplementedError

    def after(self, version: int) -> bool:
        """Called once ``version`` has appeared; True stops the replay there."""
        return False
