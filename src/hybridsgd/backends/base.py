"""One interface for every backend: ``Backend.run(context) -> Trained``.

A :class:`RunContext` holds everything a run of one config is made of (built once by the
runner, whatever the backend); a backend supplies time and transport and returns what
happened: the schedule, the evaluations, the summary's extras and the final parameters.
``backend_for(name)`` gives the backend a config names (``run.backend``), importing only
that one (Ray is optional).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from hybridsgd.record import Evals, Schedule

if TYPE_CHECKING:
    from hybridsgd.config import Config
    from hybridsgd.core.aggregators import Aggregator
    from hybridsgd.core.faults import Faults, GradientCheck
    from hybridsgd.core.server import ParameterServer
    from hybridsgd.core.staleness import StalenessRule
    from hybridsgd.interrupts import Interrupts
    from hybridsgd.logs import Stream
    from hybridsgd.policies.base import Policy
    from hybridsgd.tasks.base import Task
    from hybridsgd.threads import Load
    from hybridsgd.timing import Cluster


@dataclass
class RunContext:
    """A run's parts: what every backend is given."""

    cfg: Config
    task: Task
    policy: Policy
    server: ParameterServer
    cluster: Cluster
    feeds: list  # each worker's minibatch stream (hybridsgd.backends.build.samplers_for)
    aggregator: Aggregator
    staleness: StalenessRule
    faults: Faults
    check: GradientCheck
    signals: Interrupts
    out: Path | None = None
    progress: Callable[[str, int, int], None] | None = None
    state: dict | None = None  # a checkpoint's content, when resuming
    stream: Stream | None = None  # TensorBoard / MLflow writers (run.log)


@dataclass
class Trained:
    """What a backend's run did."""

    schedule: Schedule
    evals: Evals
    extra: dict[str, Any] = field(default_factory=dict)  # joins the run's summary
    final: torch.Tensor | None = None  # the final parameters, if not the server's


class Backend:
    """Time and transport for a run; every decision comes from the core."""

    name = ""
    #: whether the server's loop asks between updates whether to stop (the simulator's
    #: replay), rather than being interrupted anywhere (a real run's loop)
    cooperative = False
    #: whether each update's metrics reach run.log's writers as it is applied (the
    #: simulator); otherwise they are written after the run, with its evaluations
    streams = False

    def warm_up(self) -> None:
        """Called before the task is built: start what takes time (worker processes)."""

    def settle(self, cfg: Config, task: Task, load: Load, resuming: bool) -> tuple[Config, dict]:
        """The config as this backend runs it (settings it decides, e.g. threads), and what
        the summary says about those decisions."""
        return cfg, {}

    def device(self, cfg: Config) -> torch.device:
        """Where the server's parameters live."""
        return torch.device("cpu")

    def run(self, ctx: RunContext) -> Trained:
        raise NotImplementedError


#: run.backend -> the module and class that implement it
BACKENDS = {
    "sim": ("hybridsgd.backends.sim.backend", "SimBackend"),
    "local": ("hybridsgd.backends.local.backend", "LocalBackend"),
    "ray": ("hybridsgd.backends.ray.backend", "RayBackend"),
}


def backend_for(name: str) -> Backend:
    """The backend ``run.backend = name`` names."""
    module, cls = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)()
