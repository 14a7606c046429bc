"""Synchronization policies (docs/design.md section 3). Each named policy is a recipe over
:class:`QuorumPolicy`, optionally with a start gate (ssp, psp) or a schedule over its
settings (hybrid)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

# each policy module registers itself on import (hybridsgd.policies.registry)
from hybridsgd.policies.adaptive import AdaptivePolicy, adaptive
from hybridsgd.policies.allocation import ATA
from hybridsgd.policies.asynchronous import asynchronous
from hybridsgd.policies.backup import backup
from hybridsgd.policies.base import Decision, Fate, Policy, Update
from hybridsgd.policies.heterogeneous import IA2SGD, Malenia, Ringleader
from hybridsgd.policies.hybrid import PROGRESS, HybridPolicy, PartitionHybrid, hybrid
from hybridsgd.policies.k_variants import k_async, k_batch_async, k_batch_sync, k_sync
from hybridsgd.policies.optimal_time import m_sync, rennala, ringmaster
from hybridsgd.policies.quorum import QuorumPolicy
from hybridsgd.policies.registry import (
    REGISTRY,
    Context,
    PolicyConfig,
    Registered,
    register,
    section,
    unregister,
    validate,
)
from hybridsgd.policies.rescaled import DCASGD, Rescaled
from hybridsgd.policies.ssp import psp, ssp
from hybridsgd.policies.sync import sync
from hybridsgd.policies.thresholds import parse_threshold


class _View(Mapping):
    """A read-only view of every registered policy, by name (a policy registered later is
    in it too)."""

    def __init__(self, read: Callable[[Registered], Any]) -> None:
        self._read = read

    def __getitem__(self, name: str) -> Any:
        return self._read(REGISTRY[name])

    def __iter__(self) -> Iterator[str]:
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


def _builder(entry: Registered) -> Callable[..., Policy]:
    def build(c: PolicyConfig, seed: int = 0, gpe: float = 1.0, tensors: int = 1) -> Policy:
        return entry.build(c, Context(seed, gpe, tensors))

    return build


#: name -> builder(``[policy]`` section, run seed, gradients per epoch, parameter tensors)
POLICIES: Mapping[str, Callable[..., Policy]] = _View(_builder)
#: the ``[policy]`` keys each policy reads beyond name, workers and aggregator
POLICY_KEYS: Mapping[str, tuple[str, ...]] = _View(lambda e: e.reads)
#: keys a policy cannot do without (validated with one clear line each)
REQUIRED: Mapping[str, tuple[str, ...]] = _View(lambda e: e.required)


def parse_spec(spec: str) -> tuple[str, list[str]]:
    """``name:key=value,...`` -> (name, ``policy.key=value`` overrides), for command lines.

    >>> parse_spec("backup:b=2")
    ('backup', ['policy.name=backup', 'policy.backups=2'])
    >>> parse_spec("hybrid:threshold=linear:start=0,end=500")[1][1]
    'policy.threshold=linear:start=0,end=500'
    """
    from hybridsgd.errors import ConfigError, lookup
    from hybridsgd.policies.registry import PARAMS, SHARED_KEYS, aliases

    name, _, rest = spec.strip().partition(":")
    lookup(REGISTRY, name, "--policy", "policy")
    known_aliases = aliases()
    keys = set(SHARED_KEYS) | set(PARAMS) | set(known_aliases)
    pairs: list[list[str]] = []
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if eq and key.strip() in keys:
            pairs.append([key.strip(), value.strip()])
        elif pairs and ":" in pairs[-1][1]:  # a spec's comma, threshold=linear:start=0,end=5
            pairs[-1][1] += "," + part
        elif not eq:
            raise ConfigError("--policy", f"write {name}:key=value,... (got {part!r})")
        else:
            from hybridsgd.policies.registry import unknown_key_message

            why = unknown_key_message(name, key.strip())
            raise ConfigError("--policy", f"{name}: {key.strip()!r}: {why}")
    overrides = [f"policy.name={name}"]
    overrides += [f"policy.{known_aliases.get(k, k)}={v}" for k, v in pairs]
    return name, overrides


def gradients_per_update(c: PolicyConfig) -> int:
    """The fewest gradients an update of this policy may aggregate."""
    return REGISTRY[c.name].min_gradients(c)


def policy_config(spec: str) -> PolicyConfig:
    """The validated ``[policy]`` section a spec string describes.

    >>> policy_config("backup:b=2").backups
    2
    """
    from hybridsgd.values import parse_value

    table = {}
    for item in parse_spec(spec)[1]:  # policy.key=value
        key, _, raw = item.partition("=")
        table[key.removeprefix("policy.")] = parse_value(raw)
    p = section(table)
    validate(p)
    return p


def build_policy(
    cfg: PolicyConfig | str, seed: int = 0, gradients_per_epoch: float = 1.0, tensors: int = 1
) -> Policy:
    """The policy a ``[policy]`` section describes (validated by :class:`Config`), or a spec
    string as ``--policy`` takes it (validated the same way).

    >>> build_policy("k_sync:k=4,workers=6").describe()
    'k_sync(W=6, quorum=4)'
    """
    if isinstance(cfg, str):
        cfg = policy_config(cfg)
    return REGISTRY[cfg.name].build(cfg, Context(seed, gradients_per_epoch, tensors))


__all__ = [
    "POLICIES",
    "REGISTRY",
    "Context",
    "PolicyConfig",
    "Registered",
    "register",
    "unregister",
    "validate",
    "POLICY_KEYS",
    "PROGRESS",
    "REQUIRED",
    "AdaptivePolicy",
    "IA2SGD",
    "Malenia",
    "Ringleader",
    "Rescaled",
    "DCASGD",
    "ATA",
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
    "policy_config",
    "hybrid",
    "k_async",
    "k_batch_async",
    "k_batch_sync",
    "k_sync",
    "m_sync",
    "rennala",
    "ringmaster",
    "parse_threshold",
    "psp",
    "ssp",
    "sync",
]
