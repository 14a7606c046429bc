"""The local backend as a :class:`~hybridsgd.backends.base.Backend` (see
:mod:`hybridsgd.backends.local.driver` for how it moves work)."""

from __future__ import annotations

from typing import Any

from hybridsgd.backends.base import RunContext
from hybridsgd.backends.local.driver import LocalDriver, warm_up
from hybridsgd.backends.real import RealBackend
from hybridsgd.devices import worker_devices


class LocalBackend(RealBackend):
    name = "local"
    driver = LocalDriver

    def warm_up(self) -> None:
        warm_up()  # its workers' server starts while the task is built

    def options(self, ctx: RunContext) -> dict[str, Any]:
        run = ctx.cfg.run
        devices = worker_devices(run.device, run.local.devices, ctx.cfg.policy.workers)
        return {"threads": run.threads, "devices": devices}
