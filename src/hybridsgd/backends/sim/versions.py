"""Gradients read at different versions, computed together (the asynchronous family).

In the replay, a gradient is normally computed when the server reaches the version its
worker read, alone when no other gradient read that version: under ``async`` every gradient
is its own small forward/backward pass. Those passes cannot be stacked into one minibatch,
since each runs on other parameters. What can be batched is the parameters themselves:
this module keeps a ring of the versions that gradients still have to read, and computes up
to :func:`batch_limit` such gradients, on their own versions and minibatches, in one
``vmap``-ed call (:meth:`hybridsgd.tasks.Task.grads_at`), lazily, just before the first of
their updates is applied.

* **Which gradients.** A gradient that is alone in its (read version, update) group, in an
  update made only of such gradients (``async``, ``k_async``, ``ssp``, ``ringmaster``,
  ``hybrid``'s asynchronous phase ...). Updates that also take a batched group (several
  gradients of one version) are computed as before, so each update still sums its parts in
  the order of their read versions.
* **The batches** are planned from the whole schedule before the replay starts
  (:class:`Plan`). A gradient may be computed at any version from its read version to its
  deadline: its update, or the last version before the next checkpoint. At the earliest
  deadline not yet met, every gradient not yet computed whose version exists then goes
  into one batch, in deadline order, up to :func:`batch_limit` (:func:`stab`). Batches
  smaller than :func:`min_batch` are left to the one-at-a-time path, and the others are
  planned again without them (:func:`plan_batches`).
* **Memory.** A version stays in the ring from when it is read until its last gradient is
  computed. The replay knows the whole schedule, so it computes the most versions ever held
  at once before starting; if they exceed :data:`RING_BYTES`, the run computes every
  gradient at its read version instead (the same numbers, slower).

The results equal the one-at-a-time replay to float tolerance: a batched matrix product
rounds differently from a single one. The schedule and the trace are unchanged.
"""

from __future__ import annotations

import numpy as np
import torch

#: whether replays batch across versions unless told (``replay(batch_versions=...)``);
#: False computes every gradient at its read version, one at a time
ENABLED = True
#: parameter floats one batched call may hold (its rows): past it the rows leave the caches
#: (docs/performance.md, "Batching across versions")
VERSION_FLOATS = 4_000_000
#: the same for a plain MLP's closed-form gradient, whose cost per gradient does not fall
#: with more versions a call: fewer versions gather fewer bytes (docs/performance.md)
VERSION_FLOATS_CLOSED_FORM = 850_000
#: the fewest versions worth one batched call: below it, a batch's gradients are computed
#: one at a time on the ring's rows (smaller batches lost: docs/performance.md)
MIN_BATCH = 8
#: the same for a plain MLP, whose batched gradient is its closed-form backward pass
#: (:mod:`hybridsgd.tasks.mlp`): pairs already gain (docs/performance.md)
MIN_BATCH_CLOSED_FORM = 2


def min_batch(closed_form: bool) -> int:
    """The fewest versions worth one batched call (:data:`MIN_BATCH`, or
    :data:`MIN_BATCH_CLOSED_FORM` for a task with a closed-form batched gradient)."""
    return MIN_BATCH_CLOSED_FORM if closed_form else MIN_BATCH


#: the most versions in one call, however small the model
MAX_BATCH = 64
#: the most memory the ring of versions may take; past it, no batching across versions
RING_BYTES = 1 << 29


def batch_limit(
    numel: int, samples_per_gradient: int, stack_limit: int, closed_form: bool = False
) -> int:
    """Versions per batched call: :data:`VERSION_FLOATS` of parameters
    (:data:`VERSION_FLOATS_CLOSED_FORM` for a plain MLP's closed form), at most
    :data:`MAX_BATCH`, and no more samples than one stacked pass may take."""
    floats = VERSION_FLOATS_CLOSED_FORM if closed_form else VERSION_FLOATS
    by_params = floats // max(1, numel)
    by_samples = stack_limit // max(1, samples_per_gradient)
    return int(max(1, min(MAX_BATCH, by_params, by_samples)))


def versions_held(reads: np.ndarray, last_use: np.ndarray, n_updates: int) -> int:
    """The most versions held at once: version r from r until ``last_use`` (the last update
    that applies a gradient read at r), for each distinct r in ``reads``."""
    if not len(reads):
        return 0
    order = np.argsort(reads, kind="stable")
    r, u = reads[order], last_use[order]
    first = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
    until = np.maximum.reduceat(u, first)
    live = np.zeros(n_updates + 2, np.int64)
    np.add.at(live, r[first], 1)
    np.add.at(live, until + 1, -1)
    return int(np.cumsum(live).max())


class VersionRing:
    """The versions still to be read, as rows of one preallocated ``[capacity, numel]``
    tensor, each held until its last gradient is computed."""

    def __init__(
        self,
        capacity: int,
        numel: int,
        reads_per_version: dict[int, int],
        device: torch.device | str = "cpu",
    ) -> None:
        self.rows = torch.empty(capacity, numel, device=device)  # where the replay runs
        self._free = list(range(capacity - 1, -1, -1))
        self._slot: dict[int, int] = {}
        self._left = dict(reads_per_version)

    def keep(self, version: int, params: torch.Tensor) -> None:
        """Copy ``params`` in if some gradient still has to read ``version``."""
        if self._left.get(version, 0) > 0:
            slot = self._free.pop()
            self.rows[slot].copy_(params)
            self._slot[version] = slot

    def gather(self, versions: list[int]) -> torch.Tensor:
        """The rows of ``versions``, stacked ``[len(versions), numel]``; each read is counted,
        and a version's row is freed after its last."""
        idx = torch.tensor([self._slot[v] for v in versions], device=self.rows.device)
        out = self.rows.index_select(0, idx)
        for v in versions:
            self._left[v] -= 1
            if self._left[v] == 0:
                self._free.append(self._slot.pop(v))
        return out


def deadlines(reads: np.ndarray, updates: np.ndarray, checkpoint_every: int) -> np.ndarray:
    """The last version at which each gradient may be computed: before its update, and
    before the next checkpoint after its read, since a checkpoint holds computed gradients,
    not versions. A run resumed from a checkpoint then forms exactly the batches the
    uninterrupted run forms after it."""
    if not checkpoint_every:
        return updates
    return np.minimum(updates, (reads // checkpoint_every + 1) * checkpoint_every - 1)


def stab(
    queue: list[int], reads: list[int], due: list[int], limit: int
) -> list[tuple[int, list[int]]]:
    """Greedy batches ``(version, gradients)``: at the earliest deadline of a gradient not
    yet computed, every gradient not yet computed whose version exists then, in deadline
    order, up to ``limit`` (``queue`` is sorted by deadline). Each gradient is in one
    batch, computed within its window [read, deadline]; with no limit, no other choice
    of versions needs fewer batches (the earliest deadline first is optimal for stabbing
    intervals)."""
    done = dict.fromkeys(queue, False)
    out: list[tuple[int, list[int]]] = []
    q = 0
    while True:
        while q < len(queue) and done[queue[q]]:
            q += 1
        if q == len(queue):
            return out
        v = due[queue[q]]
        chosen: list[int] = []
        j = q
        while j < len(queue) and len(chosen) < limit and j - q < 4 * limit:
            c = queue[j]
            if not done[c] and reads[c] <= v:
                chosen.append(c)
                done[c] = True
            j += 1
        out.append((v, chosen))


def plan_batches(
    candidates: np.ndarray,
    reads: np.ndarray,
    due: np.ndarray,
    updates: np.ndarray,
    limit: int,
    min_batch: int = 0,
    rounds: int = 3,
) -> list[tuple[int, list[int]]]:
    """The batches of :func:`stab` over ``candidates`` (group indices), after leaving out
    the updates whose gradients would go in batches smaller than ``min_batch`` (they are
    computed at their read versions, with no copy in the ring), ``rounds`` times: leaving
    gradients out changes the batches of the others."""
    r_list, d_list = reads.tolist(), due.tolist()
    keep = np.asarray(candidates)
    for i in range(rounds + 1):
        queue = keep[np.lexsort((keep, due[keep]))].tolist()
        batches = stab(queue, r_list, d_list, limit)
        small = [c for _, chosen in batches if len(chosen) < min_batch for c in chosen]
        if i == rounds or not small:
            return batches
        keep = keep[~np.isin(updates[keep], updates[small])]
    return batches


class Plan:
    """Which lone gradients of a replay are computed together, and when: ``lone[g]`` for
    each (read version, update) group, the batches by version (:meth:`due`), and the
    :class:`VersionRing` that holds their versions, ``row_floats`` each."""

    def __init__(self, lone: list[bool], batches, ring: VersionRing) -> None:
        self.lone, self.ring = lone, ring
        self.vmap_ok = True  # until the model turns out not to work under torch.func.vmap
        self._at: dict[int, list[list[int]]] = {}
        for v, chosen in batches:
            self._at.setdefault(v, []).append(chosen)

    @classmethod
    def make(
        cls,
        group_r: list[int],
        group_u: list[int],
        sizes: np.ndarray,
        n_updates: int,
        *,
        limit: int,
        row_floats: int,
        min_batch: int,
        first: int = 0,
        checkpoint_every: int = 0,
        device: torch.device | str = "cpu",
    ) -> Plan | None:
        """The plan for the groups (of ``sizes`` gradients) read at ``first`` or later:
        those alone in an update made only of lone gradients, batched by
        :func:`plan_batches`; None when nothing is batched or the ring would exceed
        :data:`RING_BYTES`."""
        if not group_r:
            return None
        r, u = np.asarray(group_r), np.asarray(group_u)
        shared = np.zeros(n_updates, bool)
        shared[u[sizes > 1]] = True
        candidates = np.flatnonzero((sizes == 1) & ~shared[u] & (r >= first))
        if len(candidates) < max(2, min_batch):
            return None
        due = deadlines(r, u, checkpoint_every)
        if checkpoint_every:
            # each interval between checkpoints on its own: a run resumed from a checkpoint
            # plans its intervals exactly as the uninterrupted run did (the rounds of
            # plan_batches would otherwise depend on the batches before the checkpoint)
            interval = r[candidates] // checkpoint_every
            batches = []
            for k in np.unique(interval):
                part = candidates[interval == k]
                batches += plan_batches(part, r, due, u, limit, min_batch)
        else:
            batches = plan_batches(candidates, r, due, u, limit, min_batch)
        if not batches:
            return None
        chosen = np.concatenate([c for _, c in batches])
        held = versions_held(r[chosen], due[chosen], n_updates)
        if held * row_floats * 4 > RING_BYTES:
            return None
        reads = np.bincount(r[chosen])
        counts = {int(v): int(n) for v, n in enumerate(reads) if n}
        ring = VersionRing(held, row_floats, counts, device)
        lone = np.zeros(len(group_r), bool)
        lone[chosen] = True
        return cls(lone.tolist(), batches, ring)

    def due(self, v: int) -> list[list[int]]:
        """The batches to compute at version ``v``, before update v is built."""
        return self._at.pop(v, [])
