"""An example of adding a policy: this file alone (tests/policies/test_registry.py uses it).

``majority``: each update waits for the first ceil(fraction x W) gradients of the current
version, from distinct workers, and cancels the rest (k_sync with K set by a fraction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridsgd.errors import ConfigError
from hybridsgd.policies.quorum import SYNCHRONOUS, QuorumPolicy
from hybridsgd.policies.registry import Registered, param, register


def _check(value: float, p) -> None:
    if not 0 < value <= 1:
        raise ConfigError("policy.fraction", f"must be in (0, 1] (got {value})")


@dataclass(frozen=True)
class MajorityParams:
    fraction: float = param(0.5, "share of the W workers an update waits for", check=_check)


def quorum(c) -> int:
    return max(1, math.ceil(c.fraction * c.workers))


register(
    Registered(
        "majority",
        "the first ceil(fraction x W) gradients of each version; cancel the rest",
        build=lambda c, ctx: QuorumPolicy(
            c.workers, quorum(c), counts="workers", **SYNCHRONOUS, name="majority"
        ),
        params=MajorityParams,
        aliases={"f": "fraction"},
        min_gradients=quorum,
        family="sync",  # predict: the first ceil(fraction x W) of W, as k_sync
        examples=("majority:fraction=0.5",),
        candidates=lambda W: [{"fraction": 0.75}],  # what recommend compares
    )
)
