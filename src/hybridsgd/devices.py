"""Where numerics run: ``run.device`` and ``run.local.devices`` (docs/gpu.md).

* ``cpu`` (the default): everything as before, bit for bit.
* ``cuda`` / ``cuda:N``: the simulator replays on that GPU (``cuda`` is GPU 0); on the local
  backend ``cuda`` spreads the workers round-robin over every visible GPU and ``cuda:N``
  puts them all on GPU N; ``run.local.devices = ["cuda:0", "cuda:2"]`` names the GPUs to spread
  over. The Ray backend asks Ray for ``num_gpus`` per worker instead (Ray picks the GPU).
* ``auto``: ``cuda`` when torch sees a GPU, else ``cpu``.

On the real backends the parameter server and the ring of parameter versions stay in
shared CPU memory. A worker on a GPU moves what it reads and writes through its own pinned
(page-locked) buffers with non-blocking copies (:class:`DeviceMirror`). The local backend
can instead keep the server, the ring and the gradient slots on the one GPU its workers
share (``run.local.server``, :func:`server_device`): the workers then read and write them
there, through CUDA IPC, with no copy to or from the CPU.
"""

from __future__ import annotations

import re
import time

import torch

from hybridsgd.errors import ConfigError

_PATTERN = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def check_name(value: str, field: str = "run.device") -> None:
    """The form alone (no hardware is looked at): cpu, auto, cuda or cuda:N."""
    if not _PATTERN.match(value):
        raise ConfigError(field, f'must be "cpu", "cuda", "cuda:N" or "auto" (got {value!r})')


def gpus() -> int:
    """CUDA devices torch sees here (0 without CUDA, or without a GPU)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve(value: str, field: str = "run.device") -> torch.device:
    """``value`` as a device of this machine, or a :class:`ConfigError` saying why not."""
    check_name(value, field)
    if value == "cpu":
        return torch.device("cpu")
    n = gpus()
    if value == "auto":
        return torch.device("cuda:0" if n else "cpu")
    if n == 0:
        why = (
            "this torch was built without CUDA"
            if not torch.backends.cuda.is_built()
            else "torch sees no GPU here"
        )
        raise ConfigError(field, f'{value!r} needs a GPU, but {why}; use "cpu" or "auto"')
    index = int(value.partition(":")[2] or 0)
    if index >= n:
        raise ConfigError(
            field, f"{value!r} is out of range: torch sees {n} GPU(s), cuda:0..cuda:{n - 1}"
        )
    return torch.device("cuda", index)


def simulator_device(device: str, devices: list[str]) -> torch.device:
    """The one device the simulator replays on."""
    if devices:
        raise ConfigError(
            "run.local.devices", "the simulator replays on one device: set run.device alone"
        )
    return resolve(device)


def worker_devices(device: str, devices: list[str], workers: int) -> list[torch.device]:
    """The device of each local worker: round-robin over ``devices``, or over every visible
    GPU for ``cuda`` (``auto`` with a GPU), or all on the one ``device`` names."""
    if devices:
        pool = [resolve(d, f"run.local.devices[{i}]") for i, d in enumerate(devices)]
    else:
        one = resolve(device)
        bare = device in ("cuda", "auto") and one.type == "cuda"
        pool = [torch.device("cuda", i) for i in range(gpus())] if bare else [one]
    return [pool[w % len(pool)] for w in range(workers)]


#: run.local.server's values
SERVER_PLACES = ("cpu", "gpu", "auto")


def server_device(place: str, device: str, devices: list[str], workers: int) -> torch.device:
    """Where the local backend keeps its server, the ring of parameter versions and the
    gradient slots (``run.local.server``): ``cpu``, shared CPU memory; ``gpu``, the one GPU
    every worker computes on (a :class:`ConfigError` when the workers are not all on one
    GPU); ``auto``, that GPU if there is one, else the CPU."""
    if place == "cpu":
        return torch.device("cpu")
    where = sorted({str(d) for d in worker_devices(device, devices, workers)})
    if len(where) == 1 and where[0].startswith("cuda"):
        return torch.device(where[0])
    if place == "auto":
        return torch.device("cpu")
    fix = 'run.device = "cuda:N"' if where != ["cpu"] else 'run.device = "cuda" or "cuda:N"'
    raise ConfigError(
        "run.local.server",
        f'"gpu" keeps the server on the one GPU every worker computes on, but the workers'
        f' are on {", ".join(where)}: put them on one GPU ({fix}) or set it to "cpu"',
    )


class DeviceMirror:
    """A worker's gradient computation on its device, for parameters and gradients that
    live in (shared) CPU memory.

    On the CPU it is the plain path: the task's module reads the parameter slot in place
    and backward writes into the gradient slot. On a GPU the task (model and data) moves
    there once; each job copies the version through a pinned buffer into a device buffer,
    computes there, copies the gradient back the same way into its slot, and waits for
    that copy before the worker says the job is done. When the slots themselves are on
    this worker's GPU (``run.local.server = "gpu"``) it computes on them in place, as on
    the CPU, and waits for its stream before the job is done: the driver, another process,
    reads the gradient next and may rewrite the version.
    """

    def __init__(self, task, device: torch.device | str, load: float = 1.0) -> None:
        self.task = task
        self.load = load  # run.worker_load: the real CPU work of a job, a multiple of its own
        self._scratch: torch.Tensor | None = None  # the repeated gradients' (repeat)
        self.device = torch.device(device)
        self.on_gpu = self.device.type == "cuda"
        if not self.on_gpu:
            return
        if self.device.index is None:  # "cuda" in a Ray actor: the GPU Ray made visible
            self.device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(self.device)
        task.to(self.device)
        self._staged: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def repeat(self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> None:
        """Heterogeneity made real (``run.worker_load``): after a job's gradient, do its work
        (load - 1) times more: the same gradient computed again, into a buffer of its own,
        ``floor(load - 1)`` times on the whole minibatch and once on the rest's share of it
        (load 2.5: once whole, once on half). The same work, not the same time: alone on a
        processor it runs faster than while it shares one, as the gradient does (a burn
        timed by CPU time does not). Random draws (dropout) come from a forked generator,
        so the worker's own stream does not move."""
        if self.load <= 1.0:
            return
        extra = self.load - 1.0
        whole = int(extra)
        part = round((extra - whole) * len(x))
        if self._scratch is None:
            self._scratch = torch.empty(self.task.numel, device=params.device)
        devices = [self.device] if self.on_gpu else []
        with torch.random.fork_rng(devices=devices):
            for _ in range(whole):
                self.grad(params, x, y, self._scratch)
            if part > 0:
                self.grad(params, x[:part], y[:part], self._scratch)

    def burn(self, since: float) -> None:
        """``run.worker_load`` for jobs of local steps (which have no one minibatch to
        repeat): after a job that began at thread CPU time ``since``, compute (load - 1)
        times as long again, on this thread (small matrix products). A thread's CPU time
        does not pass while it waits for a core, but does while it shares one, so this is
        the same time, not the same work, on a machine whose processors slow each other."""
        if self.load <= 1.0:
            return
        until = time.thread_time() + (self.load - 1.0) * (time.thread_time() - since)
        a = torch.full((32, 32), 1.0 / 32)
        while time.thread_time() < until:
            for _ in range(8):
                a = a @ a

    def grad(self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor):
        """The gradient at ``params`` on ``(x, y)`` written into ``out``; the loss. Both
        in CPU memory (through the staging buffers when this worker is on a GPU), or both
        on this worker's GPU (in place). ``x`` and ``y`` come from the task, so they are on
        the device already."""
        task = self.task
        if params.device == self.device:  # the CPU, or slots on this GPU: in place
            with task.bound_to(params):  # the module reads the slot in place: no copy
                loss = task.grad(params, x, y, out=out)[1]
            if self.on_gpu:  # done before the driver (another process) reads `out`
                torch.cuda.current_stream(self.device).synchronize()
            return loss
        if self._staged is None:
            n = task.numel
            self._staged = (
                torch.empty(n, device=self.device),
                torch.empty(n, device=self.device),
                torch.empty(n, pin_memory=True),
            )
        on_device, grad, staging = self._staged
        stream = torch.cuda.current_stream(self.device)
        stream.synchronize()  # the staging buffer is free: the last job's copy is done
        staging.copy_(params)
        on_device.copy_(staging, non_blocking=True)
        with task.bound_to(on_device):
            _, loss = task.grad(on_device, x, y, out=grad)
        staging.copy_(grad, non_blocking=True)
        stream.synchronize()
        out.copy_(staging)
        return loss

    def gradient(self, params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple:
        """Like :meth:`grad`, into a fresh CPU tensor (the Ray object-store path)."""
        out = torch.empty(self.task.numel)
        return out, self.grad(params, x, y, out)
