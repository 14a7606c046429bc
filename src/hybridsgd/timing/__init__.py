"""Timing models (docs/design.md section 4): what makes stragglers."""

from hybridsgd.timing.cluster import (
    Cluster,
    Slowdown,
    Transient,
    parse_slowdowns,
    parse_speeds,
    parse_transient,
)
from hybridsgd.timing.models import (
    Constant,
    Empirical,
    Exponential,
    Gamma,
    Link,
    LogNormal,
    Pareto,
    ShiftedExponential,
    TimingModel,
    Uniform,
    parse_model,
)

__all__ = [
    "Cluster",
    "Constant",
    "Empirical",
    "Exponential",
    "Gamma",
    "Link",
    "LogNormal",
    "Pareto",
    "ShiftedExponential",
    "Slowdown",
    "TimingModel",
    "Transient",
    "Uniform",
    "parse_model",
    "parse_slowdowns",
    "parse_speeds",
    "parse_transient",
]
