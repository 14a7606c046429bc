"""The local backend against torch DistributedDataParallel (gloo), measured in the same run
(docs/design.md section 7; issue 5).

Samples per second on `mlp-mnist` (784-256-10, batch 32 per worker, SGD), W worker
processes each, the same torch threads per process, `sync` and `async`, W = 2 and 4.
DDP: W ranks all-reduce every gradient (the loop everyone writes). hybridsgd: W workers and
the driver as parameter server, parameters and gradients in shared memory. Time counts
from the moment every process is ready (start-up excluded on both sides). Bars: `sync`
>= 1.0x DDP, `async` > 1.0x.

    python benchmarks/local_vs_ddp.py [--quick] [--workers 2 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as tmp
from rich.console import Console
from rich.table import Table

import hybridsgd as h
from hybridsgd.backends.local import available_cores, worker_threads
from hybridsgd.tasks import build_task, samplers

BATCH = 32


def config(policy: str, workers: int, updates: int) -> h.Config:
    return h.Config.from_dict(
        {
            "task": {"name": "mlp-mnist", "batch_size": BATCH},
            "policy": {"name": policy, "workers": workers},
            "optimizer": {"lr": 0.05},
            "run": {"backend": "local", "updates": updates, "eval_every": updates},
        }
    )


def ours(policy: str, workers: int, steps: int) -> float:
    """Samples per second of the local backend: applied gradients x batch / run time."""
    updates = steps if policy == "sync" else steps * workers
    s = h.run(config(policy, workers, updates)).summary
    return s["gradients"]["applied"] * BATCH / s["end_time"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank: int, workers: int, steps: int, port: int, threads: int, out: str) -> None:
    torch.set_num_threads(threads)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=workers
    )
    cfg = config("sync", workers, steps)
    task = build_task(cfg.task, 0)
    feed = samplers(task.y_train.numpy(), workers, BATCH, "iid", 0.5, 0)[rank]
    model = torch.nn.parallel.DistributedDataParallel(task.model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    warm = 10

    def step(k: int) -> None:
        x, y = task.batch(feed.batch(k))
        opt.zero_grad()
        task.loss_fn(model(x), y).backward()
        opt.step()

    for k in range(warm):
        step(k)
    dist.barrier()
    t0 = time.perf_counter()
    for k in range(warm, warm + steps):
        step(k)
    dist.barrier()
    elapsed = time.perf_counter() - t0
    if rank == 0:
        with open(out, "w") as f:
            f.write(str(workers * steps * BATCH / elapsed))
    dist.destroy_process_group()


def ddp(workers: int, steps: int) -> float:
    """Samples per second of DDP with ``workers`` ranks (same threads per process)."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rate")
        args = (workers, steps, _free_port(), worker_threads(workers), out)
        tmp.spawn(_ddp_rank, args=args, nprocs=workers, join=True)
        with open(out) as f:
            return float(f.read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke test)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs each")
    args = ap.parse_args()
    steps = 100 if args.quick else 1000
    repeats = 1 if args.quick else args.repeats
    console = Console()
    table = Table(title=f"samples/s on mlp-mnist, batch {BATCH}, {available_cores()} cores")
    for col in ("W", "threads", "DDP (gloo)", "sync", "sync / DDP", "async", "async / DDP"):
        table.add_column(col, justify="right")
    with console.status("measuring") as status:
        for W in args.workers:
            status.update(f"W={W}: DDP")
            base = max(ddp(W, steps) for _ in range(repeats))
            status.update(f"W={W}: local sync")
            s = max(ours("sync", W, steps) for _ in range(repeats))
            status.update(f"W={W}: local async")
            a = max(ours("async", W, steps) for _ in range(repeats))
            table.add_row(
                str(W),
                str(worker_threads(W)),
                f"{base:,.0f}",
                f"{s:,.0f}",
                f"{s / base:.2f}x",
                f"{a:,.0f}",
                f"{a / base:.2f}x",
            )
    console.print(table)


if __name__ == "__main__":
    main()
