"""What a policy decides when a worker is lost for good (real backends' faults)."""

from __future__ import annotations

import pytest

from hybridsgd import asynchronous, backup, sync
from hybridsgd.config import PolicyConfig
from hybridsgd.errors import WorkerLost
from hybridsgd.policies import Fate, build_policy


def test_sync_shrinks_to_the_survivors_and_keeps_what_the_dead_delivered():
    p = sync(3)
    assert [p.request(w) for w in range(3)] == [0, 0, 0]
    assert p.push(2, 0, gid=0).fate == Fate.BUFFERED
    d = p.lose(2)  # it delivered this round, then died
    assert d.update is None and d.fate == Fate.CANCELLED
    assert p.push(0, 0, gid=1).fate == Fate.BUFFERED
    d = p.push(1, 0, gid=2)  # its gradient still counts: 3 in this round
    assert d.update.members == [0, 1, 2]
    assert [p.request(w) for w in (0, 1)] == [1, 1]
    assert p.push(0, 1, gid=3).fate == Fate.BUFFERED
    assert p.push(1, 1, gid=4).update.members == [3, 4]  # then rounds of the 2 survivors


def test_a_loss_can_complete_the_round_that_waited_for_it():
    p = sync(3)
    for w in range(3):
        p.request(w)
    p.push(0, 0, gid=0)
    p.push(1, 0, gid=1)
    assert p.request(0) is None and p.request(1) is None  # both wait for worker 2
    d = p.lose(2)
    assert d.update.members == [0, 1] and d.fate == Fate.CANCELLED
    assert d.release == [0, 1] and d.cancel == []


def test_fail_raises_instead_of_shrinking():
    p = sync(3)
    for w in range(3):
        p.request(w)
    with pytest.raises(WorkerLost, match="needs 3 workers per update but 2 are left"):
        p.lose(1, shrink=False)


def test_slack_absorbs_a_loss_without_changing_the_quorum():
    p = backup(4, 1)  # N = 3 of 4
    for w in range(4):
        p.request(w)
    p.lose(3, shrink=False)  # 3 are left, N = 3: fine
    assert p.push(0, 0, 0).fate == Fate.BUFFERED
    assert p.push(1, 0, 1).fate == Fate.BUFFERED
    assert p.push(2, 0, 2).update.members == [0, 1, 2]
    a = asynchronous(2)
    a.request(0), a.request(1)
    a.lose(0, shrink=False)
    assert a.push(1, 0, 0).update.members == [0]
    with pytest.raises(WorkerLost, match="every worker"):
        a.lose(1)


def test_ssp_forgets_a_dead_worker_clock():
    p = build_policy(PolicyConfig(name="ssp", workers=2, staleness_bound=0), 0, 100.0, 2)
    p.request(0), p.request(1)
    p.push(0, 0, 0)
    assert p.request(0) is None  # one tick ahead of worker 1, bound 0
    d = p.lose(1)
    assert d.release == [0] and p.request(0) == 1
