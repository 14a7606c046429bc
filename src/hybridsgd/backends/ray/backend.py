"""The Ray backend as a :class:`~hybridsgd.backends.base.Backend` (see
:mod:`hybridsgd.backends.ray.driver` for how it moves work)."""

from __future__ import annotations

from typing import Any

from hybridsgd.backends.base import RunContext
from hybridsgd.backends.build import optimizer_settings
from hybridsgd.backends.driver import RealResult
from hybridsgd.backends.ray.driver import RayDriver, ray_threads
from hybridsgd.backends.real import RealBackend


class RayBackend(RealBackend):
    name = "ray"
    driver = RayDriver

    def options(self, ctx: RunContext) -> dict[str, Any]:
        run = ctx.cfg.run
        return {
            "address": run.ray.address,
            "max_restarts": run.ray.max_worker_restarts,
            "threads": ray_threads(run.threads),
            "shards": run.ray.shards,
            "share_memory": run.ray.transport == "auto",
            "optimizer": optimizer_settings(ctx.cfg),
            "device": run.device,
        }

    def extras(self, ctx: RunContext, result: RealResult) -> dict[str, Any]:
        return {
            "worker_restarts": result.restarts,
            "ps_shards": ctx.cfg.run.ray.shards,
            "shared_memory_workers": result.shared,
        }
