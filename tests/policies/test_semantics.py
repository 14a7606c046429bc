"""docs/design.md section 3, rows sync / backup / async, on hand-checked scenarios.

Three workers whose minibatches take exactly 1, 2 and 10 time units.
"""

from __future__ import annotations

import numpy as np
import pytest

from hybridsgd import asynchronous, backup, simulate_schedule, sync
from hybridsgd.policies import Fate, QuorumPolicy
from hybridsgd.record import APPLIED, CANCELLED, DROPPED
from tests.helpers import const_cluster

SPEEDS = [1.0, 2.0, 10.0]


def events(policy, updates):
    return simulate_schedule(policy, const_cluster(SPEEDS), max_updates=updates, fast=False)


def test_sync_waits_for_all_three_every_round():
    s = events(sync(3), 3)
    assert s.update_time.tolist() == [10.0, 20.0, 30.0]
    assert (s.fate == APPLIED).all() and (s.staleness == 0).all()
    # arrival order within a round is 1, 2, 10; each update holds all three workers
    assert s.worker.tolist() == [0, 1, 2] * 3
    assert s.update.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_backup_cancels_the_straggler_each_round():
    s = events(backup(3, 1, late="cancel"), 3)
    assert s.update_time.tolist() == [2.0, 4.0, 6.0]
    # per round: workers 0 and 1 applied, worker 2 cancelled when the update fires
    assert s.worker.tolist() == [0, 1, 2] * 3
    assert s.fate.tolist() == [APPLIED, APPLIED, CANCELLED] * 3
    assert s.end[s.fate == CANCELLED].tolist() == [2.0, 4.0, 6.0]
    assert (s.staleness[s.fate == APPLIED] == 0).all()
    assert (s.staleness[s.fate == CANCELLED] == 1).all()


def test_backup_drop_lets_late_work_finish_then_drops_it():
    s = events(backup(3, 1, late="drop"), 8)
    assert s.update_time.tolist() == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0]
    dropped = s.fate == DROPPED
    assert not (s.fate == CANCELLED).any()
    # worker 2 read version 0 at t=0 and arrives at t=10, after update 5 (w1 wins the tie)
    assert s.worker[dropped].tolist() == [2]
    assert s.read_version[dropped].tolist() == [0]
    assert s.end[dropped].tolist() == [10.0]
    assert s.staleness[dropped].tolist() == [5]
    assert (np.bincount(s.update[s.fate == APPLIED]) == 2).all()


def test_async_applies_every_gradient_with_its_staleness():
    s = events(asynchronous(3), 16)
    assert (s.fate == APPLIED).all()
    assert s.update.tolist() == list(range(16))
    # ties at equal times go by worker index: t=2 -> w0 then w1; t=10 -> w0, w1, w2
    assert s.worker.tolist()[:6] == [0, 0, 1, 0, 0, 1]
    assert s.end.tolist()[:6] == [1.0, 2.0, 2.0, 3.0, 4.0, 4.0]
    w1_first = np.flatnonzero(s.worker == 1)[0]
    assert s.staleness[w1_first] == 2  # read v0 at t=0; v1 and v2 landed before it
    w2_first = np.flatnonzero(s.worker == 2)[0]
    assert (s.end[w2_first], s.read_version[w2_first], s.staleness[w2_first]) == (10.0, 0, 15)


def test_backup_without_backups_is_sync():
    for fast in (True, False):
        a = simulate_schedule(backup(5, 0), const_cluster([1, 3, 2, 7, 1.5]), 20, fast=fast)
        b = simulate_schedule(sync(5), const_cluster([1, 3, 2, 7, 1.5]), 20, fast=fast)
        assert a.equals(b)


def test_policy_calls_directly():
    """The contract a real backend relies on: wait, release, cancel, late delivery."""
    p = backup(3, 1)
    assert [p.request(w) for w in range(3)] == [0, 0, 0]
    assert p.push(0, 0, gid=0).fate == Fate.BUFFERED
    assert p.request(0) is None  # pushed: waits for version 1
    d = p.push(1, 0, gid=1)
    assert d.fate == Fate.APPLIED and d.update.members == [0, 1] and d.update.version == 1
    assert d.cancel == [2] and d.release == [0]
    # worker 2's cancelled gradient arrives anyway (a real backend's race): not applied
    late = p.push(2, 0, gid=2)
    assert late.fate == Fate.CANCELLED and late.update is None
    assert p.request(2) == 1 and p.request(0) == 1


def test_quorum_policy_rejects_contradictory_settings():
    with pytest.raises(ValueError):
        QuorumPolicy(3, 4)
    with pytest.raises(ValueError):
        QuorumPolicy(3, 1, fresh_only=False, in_flight="drop")
