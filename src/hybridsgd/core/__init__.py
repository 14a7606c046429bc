"""The core: parameter server, aggregation, staleness rules and the coordinator.

No clock and no transport lives here. Backends supply time (virtual or real) and move
bytes; every decision about what to accept, drop, buffer, apply or cancel is made by a
:class:`~hybridsgd.policies.Policy` and applied by :class:`ParameterServer`.
"""

from hybridsgd.core.aggregators import AGGREGATORS, Aggregator, Mean, build_aggregator
from hybridsgd.core.coordinator import Coordinator, PushResult
from hybridsgd.core.server import ParameterServer, build_optimizer
from hybridsgd.core.staleness import (
    STALENESS_RULES,
    NoStalenessRule,
    StalenessRule,
    build_staleness,
)

__all__ = [
    "AGGREGATORS",
    "STALENESS_RULES",
    "Aggregator",
    "Coordinator",
    "Mean",
    "NoStalenessRule",
    "ParameterServer",
    "PushResult",
    "StalenessRule",
    "build_aggregator",
    "build_optimizer",
    "build_staleness",
]
