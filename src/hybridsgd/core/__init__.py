"""The core: parameter server, aggregation and staleness rules.

No clock and no transport lives here, and no policy: the core is the bottom layer
(docs/design.md section 2). Every decision about what to accept, drop, buffer, apply or
cancel is made by a :class:`~hybridsgd.policies.Policy`, and
:class:`~hybridsgd.coordinator.Coordinator` (the layer above the policies) carries it out on
a :class:`ParameterServer`.
"""

from hybridsgd.core.aggregators import AGGREGATORS, Aggregator, Mean, build_aggregator
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
    "Mean",
    "NoStalenessRule",
    "ParameterServer",
    "StalenessRule",
    "build_aggregator",
    "build_optimizer",
    "build_staleness",
]
