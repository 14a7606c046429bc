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

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hybridsgd.core.aggregators import Aggregator, Mean
from hybridsgd.core.faults import GradientCheck
from hybridsgd.core.server import ParameterServer
from hybridsgd.core.staleness import NoStalenessRule, StalenessRule
from hybridsgd.core.update import Part, UpdateBuilder, compensated, scaled
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
        check: GradientCheck | None = None,
        attack: Callable[[torch.Tensor, list[int]], None] | None = None,
    ) -> None:
        self.policy = policy
        self.server = server
        self.aggregator = aggregator or Mean()
        self.staleness = staleness or NoStalenessRule()
        self.check = check or GradientCheck()
        if self.check.numel is None:
            self.check.numel = server.numel
        self.check.dtype = server.params.dtype
        self.rejected: list[tuple[int, str]] = []  # (gid, why) the check refused; drain it
        #: an omniscient attack (``Faults.attack_update``): rewrites an update's Byzantine
        #: rows from its accepted honest ones, the same place the simulator applies it
        self.attack = attack
        self._held: dict[int, torch.Tensor] = {}
        self._worker: dict[int, int] = {}  # who sent each held gradient (for the attack)
        # the update from its gradients, as the simulator's replay builds it; the gradients
        # may be a worker's buffers: read, never scaled in place
        self._snapshots: dict[int, torch.Tensor] = {}  # version -> parameters (compensation)
        self._reading: dict[int, int] = {}  # worker -> version it computes on (compensation)
        self._read: dict[int, torch.Tensor] = {}  # held gradient -> the parameters it read
        self._builder = UpdateBuilder(self.aggregator, attack, owned=False, table=server.table)
        self._next_gid = 0

    def request(self, worker: int) -> int | None:
        """The version an idle worker must read now, or ``None`` to wait for a release."""
        version = self.policy.request(worker)
        if version is not None and self.server.compensation is not None:
            # delay compensation: keep the parameters each worker reads until it delivers
            if version not in self._snapshots:
                self._snapshots[version] = self.server.params.clone()
            self._reading[worker] = version
        return version

    def push(
        self,
        worker: int,
        read_version: int,
        gradient: torch.Tensor,
        now: float = 0.0,
        gid: int | None = None,
    ) -> PushResult:
        """Hand a gradient (arriving at the backend's time ``now``) to the policy; apply the
        update it fires, if any. A buffered gradient is held by reference: a backend that
        will overwrite its buffer calls :meth:`own` first. ``gid`` numbers the gradient (a
        backend that also counts cancelled work gives its own numbers, in increasing order)."""
        if gradient.requires_grad:  # a value, not part of anyone's graph
            gradient = gradient.detach()
        if gid is None:
            gid = self._next_gid
        self._next_gid = gid + 1
        decision = self.policy.push(worker, read_version, gid, now)
        if decision.fate in (Fate.BUFFERED, Fate.APPLIED):
            self._held[gid] = gradient
            if self._builder.per_row:  # an attack or a gradient table needs the sender
                self._worker[gid] = worker
            if self.server.compensation is not None:
                self._read[gid] = self._snapshots[read_version]
        if self.server.compensation is not None:
            self._forget(worker)
        self._apply(decision, now)
        return PushResult(gid, decision)

    def lose(self, worker: int, now: float = 0.0, *, shrink: bool = True) -> Decision:
        """The worker is gone for good; apply the update its loss completes, if any (see
        :meth:`~hybridsgd.policies.QuorumPolicy.lose`)."""
        decision = self.policy.lose(worker, now, shrink=shrink)
        self._forget(worker)
        self._apply(decision, now)
        return decision

    def abandon(self, worker: int, now: float = 0.0) -> None:
        """The worker's process died and is being replaced; its work in flight is gone (see
        :meth:`~hybridsgd.policies.QuorumPolicy.abandon`). Its next :meth:`request` says
        which version the new process reads."""
        self.policy.abandon(worker, now)
        self._forget(worker)

    def _forget(self, worker: int) -> None:
        """``worker`` delivered (or lost) what it computed: drop the snapshots of versions
        nobody computes on any more and no held gradient read."""
        self._reading.pop(worker, None)
        versions = set(self._reading.values())
        held = {id(t) for t in self._read.values()}
        for v, t in list(self._snapshots.items()):
            if v not in versions and id(t) not in held:
                del self._snapshots[v]

    def own(self, gid: int) -> None:
        """Hold a copy of gradient ``gid`` instead of the backend's buffer (no-op once the
        gradient has been applied)."""
        if gid in self._held:
            self._held[gid] = self._held[gid].clone()

    @property
    def held(self) -> int:
        """Gradients held for an update that has not fired yet."""
        return len(self._held)

    def _apply(self, decision: Decision, now: float) -> None:
        update = decision.update
        if update is None:
            return
        if update.sync_tensors:
            raise NotImplementedError("the hybrid partition reading runs only in the simulator")
        parts = []
        for gid, stale in zip(update.members, update.staleness, strict=True):
            g = self._held.pop(gid)
            sender = self._worker.pop(gid, -1)
            read = self._read.pop(gid, None)
            why = self.check.row(g)
            if why:
                self.rejected.append((gid, why))
            else:
                parts.append(Part(g, 1, self.staleness.scale(stale), [sender], read=read))
        if parts and self.server.compensation is not None:
            parts = compensated(parts, self.server.compensation, self.server.params)
        if not parts:
            self.server.skip()
        else:
            grad = scaled(self._builder.build(parts, reset=update.reset), update.scale)
            self.server.apply(grad, n=len(parts), time=now, level=update.regime)
        if self.server.version != update.version:
            raise RuntimeError("server and policy disagree on the version")  # a bug
