"""The Ray backend against the pattern of Ray's own parameter-server example, measured in
the same run on the same Ray instance (issue 7; docs/design.md section 7: at least 1.5x).

The baseline is written from Ray's documentation ("Parameter Server" example): a
parameter-server actor with ``apply_gradients(*gradients)`` / ``get_weights()`` holding a
torch model and SGD, and worker actors whose ``compute_gradients(weights)`` load the weights,
run one minibatch and return per-tensor numpy gradients. Sync: every iteration sends the
current weights to all workers and applies their gradients together. Async: ``ray.wait`` for
any gradient, apply it alone, hand that worker the new weights. Models: `mlp-mnist`
(784-256-10, 203,530 parameters) and a 1M-parameter MLP (784-1024-256-10, 1,068,810),
batch 32 per worker, one torch thread per actor. Updates per second after start-up.

    RAY_AUTH_MODE=disabled python benchmarks/ray_vs_ps.py [--quick] [--workers 2 4]
        [--models mlp-mnist mlp-1M] [--policies sync async]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

import hybridsgd as h
from hybridsgd.tasks import build_task, samplers

BATCH = 32
MODELS = {"mlp-mnist": [256], "mlp-1M": [1024, 256]}


def config(policy: str, workers: int, hidden: list[int], updates: int) -> h.Config:
    return h.Config.from_dict(
        {
            "task": {"name": "mlp-mnist", "batch_size": BATCH, "hidden": hidden},
            "policy": {"name": policy, "workers": workers},
            "optimizer": {"lr": 0.05},
            "run": {"backend": "ray", "updates": updates, "eval_every": updates},
        }
    )


def ours(policy: str, workers: int, hidden: list[int], updates: int) -> float:
    s = h.run(config(policy, workers, hidden, updates)).summary
    return s["updates"] / s["end_time"]


# -- Ray's parameter-server example, on the same task --------------------------------------
class _Model:
    def __init__(self, hidden: list[int]) -> None:
        torch.set_num_threads(1)
        cfg = config("sync", 1, hidden, 1)
        self.task = build_task(cfg.task, 0)
        self.model = self.task.model
        self.feed = samplers(self.task.y_train.numpy(), 1, BATCH, "iid", 0.5, 0)[0]
        self.k = 0

    def get_weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})

    def get_gradients(self) -> list[np.ndarray]:
        return [p.grad.numpy().copy() for p in self.model.parameters()]

    def set_gradients(self, gradients: list[np.ndarray]) -> None:
        for g, p in zip(gradients, self.model.parameters(), strict=True):
            p.grad = torch.from_numpy(np.array(g))


class ParameterServer(_Model):
    def __init__(self, hidden: list[int], lr: float) -> None:
        super().__init__(hidden)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)

    def apply_gradients(self, *gradients):
        summed = [np.stack(z).sum(axis=0) for z in zip(*gradients, strict=True)]
        self.optimizer.zero_grad()
        self.set_gradients(summed)
        self.optimizer.step()
        return self.get_weights()


class DataWorker(_Model):
    def compute_gradients(self, weights):
        self.set_weights(weights)
        x, y = self.task.batch(self.feed.batch(self.k))
        self.k += 1
        self.model.zero_grad()
        self.task.loss_fn(self.model(x), y).backward()
        return self.get_gradients()


def baseline(ray, policy: str, workers: int, hidden: list[int], updates: int) -> float:
    ps = ray.remote(num_cpus=0)(ParameterServer).remote(hidden, 0.05)
    remote = ray.remote(num_cpus=0)(DataWorker)
    group = [remote.remote(hidden) for _ in range(workers)]
    weights = ps.get_weights.remote()
    ray.get(weights, timeout=120)

    def sync(n: int):
        w = weights
        for _ in range(n):
            w = ps.apply_gradients.remote(*[g.compute_gradients.remote(w) for g in group])
        return ray.get(w, timeout=600)

    def asynchronous(n: int):
        w = weights
        pending = {g.compute_gradients.remote(w): g for g in group}
        for _ in range(n):
            ready, _ = ray.wait(list(pending), timeout=600)
            worker = pending.pop(ready[0])
            w = ps.apply_gradients.remote(ready[0])
            pending[worker.compute_gradients.remote(w)] = worker
        return ray.get(w, timeout=600)

    loop = sync if policy == "sync" else asynchronous
    loop(5)  # warm-up: every actor has started and run once
    t0 = time.perf_counter()
    loop(updates)
    rate = updates / (time.perf_counter() - t0)
    for a in [ps, *group]:
        ray.kill(a)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--policies", nargs="+", choices=["sync", "async"], default=["sync", "async"])
    args = ap.parse_args()
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, log_to_driver=False)
    repeats = 1 if args.quick else args.repeats
    console = Console()
    table = Table(title=f"updates/s, batch {BATCH}, {os.cpu_count()} cores, best of {repeats}")
    for col in ("model", "W", "policy", "Ray PS example", "hybridsgd ray", "ratio"):
        table.add_column(col, justify="right")
    with console.status("measuring") as status:
        for model in args.models:
            hidden = MODELS[model]
            for W in args.workers:
                for policy in args.policies:
                    n = 100 if args.quick else 400
                    n = n if policy == "sync" else n * W
                    status.update(f"{model} W={W} {policy}")
                    base = max(baseline(ray, policy, W, hidden, n) for _ in range(repeats))
                    mine = max(ours(policy, W, hidden, n) for _ in range(repeats))
                    table.add_row(
                        model, str(W), policy, f"{base:,.0f}", f"{mine:,.0f}", f"{mine / base:.2f}x"
                    )
    console.print(table)
    ray.shutdown()


if __name__ == "__main__":
    main()
