"""Synchronization policies (DESIGN.md section 3). Each named policy is a recipe over
:class:`QuorumPolicy`, optionally with a start gate (ssp, psp) or a schedule over its
settings (hybrid)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from hybridsgd.core.staleness import build_staleness
from hybridsgd.policies.adaptive import AdaptivePolicy, adaptive
from hybridsgd.policies.asynchronous import asynchronous
from hybridsgd.policies.backup import backup
from hybridsgd.policies.base import Decision, Fate, Policy, Update
from hybridsgd.policies.hybrid import PROGRESS, HybridPolicy, PartitionHybrid, hybrid
from hybridsgd.policies.k_variants import k_async, k_batch_async, k_batch_sync, k_sync
from hybridsgd.policies.quorum import QuorumPolicy
from hybridsgd.policies.ssp import psp, ssp
from hybridsgd.policies.sync import sync
from hybridsgd.policies.thresholds import parse_threshold

if TYPE_CHECKING:
    from hybridsgd.config import PolicyConfig


def _rule(c: PolicyConfig):
    return build_staleness(c.staleness, c.max_staleness)


def _hybrid(c: PolicyConfig, gpe: float, tensors: int) -> Policy:
    threshold = parse_threshold(c.threshold)
    if c.reading == "partition":
        return PartitionHybrid(c.workers, threshold, tensors, c.progress, gpe, _rule(c))
    return hybrid(c.workers, threshold, c.progress, gpe, _rule(c))


#: name -> builder from the ``[policy]`` section, the run seed, gradients per epoch and the
#: model's number of parameter tensors.
POLICIES: dict[str, Callable[[PolicyConfig, int, float, int], Policy]] = {
    "sync": lambda c, seed, gpe, nt: sync(c.workers),
    "backup": lambda c, seed, gpe, nt: backup(c.workers, c.backups, c.late),
    "async": lambda c, seed, gpe, nt: asynchronous(c.workers, _rule(c)),
    "k_sync": lambda c, seed, gpe, nt: k_sync(c.workers, c.k),
    "k_batch_sync": lambda c, seed, gpe, nt: k_batch_sync(c.workers, c.k),
    "k_async": lambda c, seed, gpe, nt: k_async(c.workers, c.k, _rule(c)),
    "k_batch_async": lambda c, seed, gpe, nt: k_batch_async(c.workers, c.k, _rule(c)),
    "ssp": lambda c, seed, gpe, nt: ssp(c.workers, c.staleness_bound, _rule(c)),
    "psp": lambda c, seed, gpe, nt: psp(c.workers, c.sample, c.staleness_bound, seed, _rule(c)),
    "hybrid": lambda c, seed, gpe, nt: _hybrid(c, gpe, nt),
    "adaptive": lambda c, seed, gpe, nt: adaptive(c.workers, c.explore_every),
}

_STALE = ("staleness", "max_staleness")
#: the ``[policy]`` keys each policy reads beyond name, workers and aggregator.
POLICY_KEYS: dict[str, tuple[str, ...]] = {
    "sync": (),
    "backup": ("backups", "late"),
    "async": _STALE,
    "k_sync": ("k",),
    "k_batch_sync": ("k",),
    "k_async": ("k", *_STALE),
    "k_batch_async": ("k", *_STALE),
    "ssp": ("staleness_bound", *_STALE),
    "psp": ("sample", "staleness_bound", *_STALE),
    "hybrid": ("threshold", "progress", "reading", *_STALE),
    "adaptive": ("explore_every",),
}

#: keys a policy cannot do without (validated with one clear line each).
REQUIRED: dict[str, tuple[str, ...]] = {
    "k_sync": ("k",),
    "k_batch_sync": ("k",),
    "k_async": ("k",),
    "k_batch_async": ("k",),
    "ssp": ("staleness_bound",),
    "psp": ("sample", "staleness_bound"),
    "hybrid": ("threshold",),
}


_ALIASES = {"b": "backups", "K": "k", "s": "staleness_bound", "beta": "sample"}


def parse_spec(spec: str) -> tuple[str, list[str]]:
    """``name:key=value,...`` -> (name, ``policy.key=value`` overrides), for command lines.

    >>> parse_spec("backup:b=2")
    ('backup', ['policy.name=backup', 'policy.backups=2'])
    >>> parse_spec("hybrid:threshold=linear:start=0,end=500")[1][1]
    'policy.threshold=linear:start=0,end=500'
    """
    from hybridsgd.errors import ConfigError, lookup

    name, _, rest = spec.strip().partition(":")
    lookup(POLICIES, name, "--policy", "policy")
    import dataclasses

    from hybridsgd.config import PolicyConfig

    keys = {f.name for f in dataclasses.fields(PolicyConfig)} | set(_ALIASES)
    pairs: list[list[str]] = []
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if eq and key.strip() in keys:
            pairs.append([key.strip(), value.strip()])
        elif pairs:  # a comma inside a value, e.g. threshold=linear:start=0,end=500
            pairs[-1][1] += "," + part
        else:
            raise ConfigError("--policy", f"write {name}:key=value (got {part!r})")
    overrides = [f"policy.name={name}"]
    overrides += [f"policy.{_ALIASES.get(k, k)}={v}" for k, v in pairs]
    return name, overrides


def gradients_per_update(c: PolicyConfig) -> int:
    """The fewest gradients an update of this policy may aggregate."""
    if c.name == "sync":
        return c.workers
    if c.name == "backup":
        return c.workers - c.backups
    if c.name.startswith("k_"):
        return c.k or 1
    return 1  # async, ssp, psp, hybrid (its asynchronous regime), adaptive (may pick K = 1)


def build_policy(
    cfg: PolicyConfig | str, seed: int = 0, gradients_per_epoch: float = 1.0, tensors: int = 1
) -> Policy:
    """The policy a ``[policy]`` section describes (validated by :class:`Config`), or a spec
    string as ``--policy`` takes it (validated the same way).

    >>> build_policy("k_sync:k=4,workers=6").describe()
    'k_sync(W=6, quorum=4)'
    """
    if isinstance(cfg, str):
        from hybridsgd.config import Config

        cfg = Config.from_dict({}, parse_spec(cfg)[1]).policy
    return POLICIES[cfg.name](cfg, seed, gradients_per_epoch, tensors)


__all__ = [
    "POLICIES",
    "POLICY_KEYS",
    "PROGRESS",
    "REQUIRED",
    "AdaptivePolicy",
    "Decision",
    "Fate",
    "HybridPolicy",
    "PartitionHybrid",
    "Policy",
    "QuorumPolicy",
    "Update",
    "adaptive",
    "asynchronous",
    "backup",
    "build_policy",
    "gradients_per_update",
    "parse_spec",
    "hybrid",
    "k_async",
    "k_batch_async",
    "k_batch_sync",
    "k_sync",
    "parse_threshold",
    "psp",
    "ssp",
    "sync",
]
