"""The local backend as a :class:`~hybridsgd.backends.base.Backend` (see
:mod:`hybridsgd.backends.local.driver` for how it moves work)."""

from __future__ import annotations

from typing import Any

import torch

from hybridsgd.backends.base import RunContext
from hybridsgd.backends.driver import RealResult
from hybridsgd.backends.local.driver import LocalDriver, warm_up
from hybridsgd.backends.real import RealBackend
from hybridsgd.config import Config
from hybridsgd.devices import server_device, worker_devices


class LocalBackend(RealBackend):
    name = "local"
    driver = LocalDriver

    def warm_up(self) -> None:
        warm_up()  # its workers' server starts while the task is built

    def device(self, cfg: Config) -> torch.device:
        """The CPU, or with ``run.local.server`` the GPU every worker computes on: the
        driver keeps its ring of versions and the gradient slots where the server is."""
        run = cfg.run
        return server_device(run.local.server, run.device, run.local.devices, cfg.policy.workers)

    def extras(self, ctx: RunContext, result: RealResult) -> dict[str, Any]:
        return {"server_device": str(ctx.server.params.device)}

    def options(self, ctx: RunContext) -> dict[str, Any]:
        run = ctx.cfg.run
        devices = worker_devices(run.device, run.local.devices, ctx.cfg.policy.workers)
        return {"threads": run.threads, "devices": devices}
