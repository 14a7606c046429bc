"""Synchronization policies. Each named policy is a recipe over :class:`QuorumPolicy`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hybridsgd.core.staleness import build_staleness
from hybridsgd.policies.asynchronous import asynchronous
from hybridsgd.policies.backup import backup
from hybridsgd.policies.base import Decision, Fate, Policy, Update
from hybridsgd.policies.quorum import QuorumPolicy
from hybridsgd.policies.sync import sync

if TYPE_CHECKING:
    from hybridsgd.config import PolicyConfig

#: name -> builder from the ``[policy]`` config section.
POLICIES: dict[str, Callable[[PolicyConfig], Policy]] = {
    "sync": lambda c: sync(c.workers),
    "backup": lambda c: backup(c.workers, c.backups, c.late),
    "async": lambda c: asynchronous(c.workers, build_staleness(c.staleness)),
}

#: the ``[policy]`` keys each policy reads beyond name, workers and aggregator.
POLICY_KEYS: dict[str, tuple[str, ...]] = {
    "sync": (),
    "backup": ("backups", "late"),
    "async": ("staleness",),
}


def build_policy(cfg: PolicyConfig) -> Policy:
    """The policy a ``[policy]`` section describes (validated by :class:`Config`)."""
    return POLICIES[cfg.name](cfg)


__all__ = [
    "POLICIES",
    "POLICY_KEYS",
    "Decision",
    "Fate",
    "Policy",
    "QuorumPolicy",
    "Update",
    "asynchronous",
    "backup",
    "build_policy",
    "sync",
]
