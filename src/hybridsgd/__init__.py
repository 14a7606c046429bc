"""hybridsgd: data-parallel SGD under any synchronization policy.

>>> import hybridsgd as h
>>> cfg = h.Config.from_dict({"policy": {"name": "async", "workers": 4}, "run": {"updates": 20}})
>>> h.run(cfg).summary["updates"]
20
"""

__version__ = "0.1.0"

from hybridsgd.backends.sim import Schedule, simulate_schedule  # noqa: E402
from hybridsgd.config import Config  # noqa: E402
from hybridsgd.core import Coordinator, Mean, ParameterServer  # noqa: E402
from hybridsgd.errors import ConfigError, DiskFull, HybridSGDError, WorkerLost  # noqa: E402
from hybridsgd.policies import Policy, QuorumPolicy, asynchronous, backup, build_policy, sync  # noqa: E402
from hybridsgd.runner import RunResult, build_cluster, resume, run, samplers_for  # noqa: E402
from hybridsgd.tasks import Task, build_task  # noqa: E402
from hybridsgd.timing import Cluster, parse_model  # noqa: E402
from hybridsgd.trace import Trace  # noqa: E402

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
    "Task",
    "Trace",
    "WorkerLost",
    "DiskFull",
    "__version__",
    "asynchronous",
    "backup",
    "build_cluster",
    "build_policy",
    "build_task",
    "parse_model",
    "resume",
    "run",
    "samplers_for",
    "simulate_schedule",
    "sync",
]
