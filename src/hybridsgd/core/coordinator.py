"""The coordinator: a policy and a parameter server joined, for backends that move real
gradients (processes, actors). It owns no clock and no transport: a backend calls
:meth:`Coordinator.request` when a worker is idle and :meth:`Coordinator.push` when a
gradient arrives, and carries out the answer (start, wait, cancel, release).

>>> import torch
>>> from hybridsgd.policies import sync
>>> c = Coordinator(sync(2), ParameterServer(torch.zeros(2), "sgd", lr=1.0))
>>> c.request(0), c.request(1)
(0, 0)
>>> c.push(0, 0, torch.tensor([1.0, 0.0])).decision.fate
'buffered'
>>> r = c.push(1, 0, torch.tensor([0.0, 1.0])); r.decision.fate, c.server.params.tolist()
('applied', [-0.5, -0.5])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridsgd.core.aggregators import Aggregator, Mean
from hybridsgd.core.server import ParameterServer
from hybridsgd.core.staleness import NoStalenessRule, StalenessRule
from hybridsgd.policies.base import Decision, Fate, Policy


@dataclass(slots=True)
class PushResult:
    gid: int
    decision: Decision


class Coordinator:
    """Buffers gradients the policy holds, aggregates and applies the updates it fires."""

    def __init__(
        self,
        policy: Policy,
        server: ParameterServer,
        aggregator: Aggregator | None = None,
        staleness: StalenessRule | None = None,
    ) -> None:
        self.policy = policy
        self.server = server
        self.aggregator = aggregator or Mean()
        self.staleness = staleness or NoStalenessRule()
        self._held: dict[int, torch.Tensor] = {}
        self._next_gid = 0

    def request(self, worker: int) -> int | None:
        """The version an idle worker must read now, or ``None`` to wait for a release."""
        return self.policy.request(worker)

    def push(
        self, worker: int, read_version: int, gradient: torch.Tensor, now: float = 0.0
    ) -> PushResult:
        """Hand a gradient (arriving at the backend's time ``now``) to the policy; apply the
        update it fires, if any."""
        gid = self._next_gid
        self._next_gid += 1
        decision = self.policy.push(worker, read_version, gid, now)
        if decision.fate in (Fate.BUFFERED, Fate.APPLIED):
            self._held[gid] = gradient
        update = decision.update
        if update is not None:
            rows = torch.stack([self._held.pop(m) for m in update.members])
            counts = torch.ones(len(update.members))
            scales = torch.tensor([self.staleness.scale(s) for s in update.staleness])
            self.server.apply(self.aggregator(rows, counts, scales))
            if self.server.version != update.version:
                raise RuntimeError("server and policy disagree on the version")  # a bug
        return PushResult(gid, decision)
