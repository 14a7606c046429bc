"""Staleness rules: how a gradient's staleness changes its weight, or whether it is accepted.

A rule answers two questions. ``accepts(staleness)`` is a control decision (a rejected
gradient is dropped and does not count toward a quorum); ``scale(staleness)`` multiplies the
gradient's contribution to an update, i.e. its learning rate (Zhang et al. 2016,
"Staleness-aware Async-SGD", use lr / tau with tau = max(1, staleness)).
"""

from __future__ import annotations

from hybridsgd.errors import lookup


class StalenessRule:
    """Base rule: accept everything at full weight. Subclasses override one or both methods."""

    name = "none"

    def accepts(self, staleness: int) -> bool:
        return True

    def scale(self, staleness: int) -> float:
        return 1.0

    def describe(self) -> str:
        return self.name


class NoStalenessRule(StalenessRule):
    """Gradients count fully whatever their staleness (plain asynchronous SGD)."""


STALENESS_RULES: dict[str, type[StalenessRule]] = {"none": NoStalenessRule}


def build_staleness(name: str) -> StalenessRule:
    """Build a staleness rule by name (``policy.staleness``)."""
    return lookup(STALENESS_RULES, name, "policy.staleness", "rule")()
