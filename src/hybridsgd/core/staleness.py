"""Staleness rules: how a gradient's staleness changes its weight, or whether it is accepted.

A rule answers two questions. ``accepts(staleness)`` is a control decision (a rejected
gradient is dropped and does not count toward a quorum); ``scale(staleness)`` multiplies the
gradient's contribution to an update, i.e. its learning rate. Zhang et al. 2016
("Staleness-aware Async-SGD") divide the learning rate by tau = max(1, staleness).

Every rule takes an optional ``max_staleness``: gradients staler than it are dropped, so
``inverse`` with ``max_staleness = 8`` both reweights and bounds.

===============  ==============================  =========================================
rule             weight of a gradient            use it when
===============  ==============================  =========================================
``none``         1                               staleness is small (about W - 1 <= 4)
``inverse``      1 / max(1, tau)                 many workers: keeps the effective step
                                                 near lr; slows progress of stale workers
``inverse-sqrt`` 1 / sqrt(max(1, tau))           a milder correction than ``inverse``
``max``          1, dropped above the bound      a few stragglers produce very stale work
===============  ==============================  =========================================
"""

from __future__ import annotations

import math

from hybridsgd.errors import ConfigError, lookup


class StalenessRule:
    """Accept everything up to ``max_staleness`` at full weight; subclasses reweight."""

    name = "none"

    def __init__(self, max_staleness: float = math.inf) -> None:
        self.max_staleness = max_staleness

    @property
    def drops(self) -> bool:
        """Whether the rule ever rejects a gradient (then schedules depend on it)."""
        return self.max_staleness < math.inf

    def accepts(self, staleness: int) -> bool:
        return staleness <= self.max_staleness

    def scale(self, staleness: int) -> float:
        return 1.0

    def describe(self) -> str:
        return self.name if not self.drops else f"{self.name}, max {self.max_staleness:g}"


class NoStalenessRule(StalenessRule):
    """Gradients count fully whatever their staleness (plain asynchronous SGD)."""


class InverseStaleness(StalenessRule):
    """lr / tau, tau = max(1, staleness) (Zhang et al. 2016)."""

    name = "inverse"

    def scale(self, staleness: int) -> float:
        return 1.0 / max(1, staleness)


class InverseSqrtStaleness(StalenessRule):
    """lr / sqrt(tau), tau = max(1, staleness)."""

    name = "inverse-sqrt"

    def scale(self, staleness: int) -> float:
        return 1.0 / math.sqrt(max(1, staleness))


class MaxStaleness(StalenessRule):
    """Full weight, but gradients staler than ``max_staleness`` are dropped."""

    name = "max"


STALENESS_RULES: dict[str, type[StalenessRule]] = {
    "none": NoStalenessRule,
    "inverse": InverseStaleness,
    "inverse-sqrt": InverseSqrtStaleness,
    "max": MaxStaleness,
}


def build_staleness(name: str, max_staleness: int | None = None) -> StalenessRule:
    """Build a staleness rule by name (``policy.staleness``, ``policy.max_staleness``)."""
    cls = lookup(STALENESS_RULES, name, "policy.staleness", "rule")
    if cls is MaxStaleness and max_staleness is None:
        raise ConfigError(
            "policy.max_staleness", 'is required by policy.staleness = "max" (e.g. 8)'
        )
    if max_staleness is not None and max_staleness < 0:
        raise ConfigError("policy.max_staleness", f"must be >= 0 (got {max_staleness})")
    return cls(math.inf if max_staleness is None else max_staleness)
