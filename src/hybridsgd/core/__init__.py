"""The core: parameter server, aggregation and staleness rules.

No clock and no transport lives here, and no policy: the core is the bottom layer
(docs/design.md section 2). Every decision about what to accept, drop, buffer, apply or
cancel is made by a :class:`~hybridsgd.policies.Policy`, and
:class:`~hybridsgd.coordinator.Coordinator` (the layer above the policies) carries it out on
a :class:`ParameterServer`.
"""

import importlib
from typing import Any

# imported on first use (PEP 562): the policies import the staleness rules, and
# `hybridsgd --help` (which lists the policies) need not load torch for the server
_LAZY = {
    "AGGREGATORS": "hybridsgd.core.aggregators",
    "Aggregator": "hybridsgd.core.aggregators",
    "Mean": "hybridsgd.core.aggregators",
    "build_aggregator": "hybridsgd.core.aggregators",
    "ParameterServer": "hybridsgd.core.server",
    "build_optimizer": "hybridsgd.core.server",
    "STALENESS_RULES": "hybridsgd.core.staleness",
    "NoStalenessRule": "hybridsgd.core.staleness",
    "StalenessRule": "hybridsgd.core.staleness",
    "build_staleness": "hybridsgd.core.staleness",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hybridsgd.core' has no attribute {name!r}")


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
