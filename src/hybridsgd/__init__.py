"""hybridsgd: data-parallel SGD under any synchronization policy.

>>> import hybridsgd as h
>>> cfg = h.Config.from_dict({"policy": {"name": "async", "workers": 4}, "run": {"updates": 20}})
>>> h.run(cfg).summary["updates"]
20
"""

__version__ = "0.1.0"

import importlib
from typing import Any

from hybridsgd.errors import ConfigError, DiskFull, HybridSGDError, NotSaved, WorkerLost

# Everything else is imported on first use (PEP 562), so `hybridsgd --help`, or a Ctrl-C
# while the command starts, does not wait for torch to load.
_LAZY = {
    "Schedule": "hybridsgd.record",
    "simulate_schedule": "hybridsgd.backends.sim",
    "Config": "hybridsgd.config",
    "Coordinator": "hybridsgd.coordinator",
    "Mean": "hybridsgd.core",
    "ParameterServer": "hybridsgd.core",
    "Policy": "hybridsgd.policies",
    "QuorumPolicy": "hybridsgd.policies",
    "asynchronous": "hybridsgd.policies",
    "backup": "hybridsgd.policies",
    "build_policy": "hybridsgd.policies",
    "sync": "hybridsgd.policies",
    "RunResult": "hybridsgd.runner",
    "build_cluster": "hybridsgd.runner",
    "resume": "hybridsgd.runner",
    "run": "hybridsgd.runner",
    "samplers_for": "hybridsgd.runner",
    "Task": "hybridsgd.tasks",
    "build_task": "hybridsgd.tasks",
    "Cluster": "hybridsgd.timing",
    "parse_model": "hybridsgd.timing",
    "fit_timing": "hybridsgd.timing.fit",
    "Trace": "hybridsgd.trace",
    "SweepResult": "hybridsgd.api",
    "compare": "hybridsgd.api",
    "tune": "hybridsgd.api",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        try:  # a submodule: hybridsgd.tasks, hybridsgd.runner, ...
            value = importlib.import_module(f"hybridsgd.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"hybridsgd.{name}":
                raise
            raise AttributeError(f"module 'hybridsgd' has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Cluster",
    "Config",
    "ConfigError",
    "Coordinator",
    "HybridSGDError",
    "Mean",
    "ParameterServer",
    "Policy",
    "QuorumPolicy",
    "RunResult",
    "Schedule",
    "SweepResult",
    "Task",
    "Trace",
    "WorkerLost",
    "DiskFull",
    "NotSaved",
    "__version__",
    "asynchronous",
    "fit_timing",
    "backup",
    "build_cluster",
    "build_policy",
    "build_task",
    "compare",
    "parse_model",
    "resume",
    "run",
    "samplers_for",
    "simulate_schedule",
    "sync",
    "tune",
]
