"""What a policy decides when a worker is lost for good (real backends' faults)."""

from __future__ import annotations

import pytest
import torch

from hybridsgd import Coordinator, ParameterServer, asynchronous, backup, sync
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


def test_a_restarted_sync_worker_redoes_its_share_of_the_round():
    """Ray with run.max_worker_restarts >= 1: a worker that died mid-round was recorded as
    cancelled, and sync told its replacement to wait for the round that needs its own
    gradient: "no worker is running and none may start". Through the core alone."""
    c = Coordinator(sync(3), ParameterServer(torch.zeros(2), "sgd", lr=1.0))
    assert [c.request(w) for w in range(3)] == [0, 0, 0]
    assert c.push(0, 0, torch.tensor([3.0, 0.0])).decision.fate == Fate.BUFFERED
    c.abandon(1)  # worker 1 died computing on version 0 and is restarted
    assert c.request(1) == 0  # the new process redoes its share of round 0
    assert c.push(2, 0, torch.tensor([0.0, 3.0])).decision.fate == Fate.BUFFERED
    d = c.push(1, 0, torch.tensor([3.0, 3.0])).decision
    assert d.fate == Fate.APPLIED and c.server.params.tolist() == [-2.0, -2.0]
    # a worker that already delivered its gradient of the round still waits after a restart
    assert [c.request(w) for w in range(3)] == [1, 1, 1]
    c.push(0, 1, torch.zeros(2))
    c.abandon(0)
    assert c.request(0) is None


@pytest.mark.parametrize("name", ["backup", "async", "k_sync", "ssp"])
def test_a_restart_never_leaves_a_policy_without_a_worker_that_may_start(name):
    from hybridsgd.policies import build_policy

    spec = {"backup": "backup:backups=1", "k_sync": "k_sync:k=2", "ssp": "ssp:s=1"}.get(name, name)
    c = Coordinator(
        build_policy(f"{spec},workers=3" if ":" in spec else f"{spec}:workers=3"),
        ParameterServer(torch.zeros(1), "sgd", lr=1.0),
    )
    for w in range(3):
        assert c.request(w) == 0
    c.abandon(2)
    assert c.request(2) == 0
