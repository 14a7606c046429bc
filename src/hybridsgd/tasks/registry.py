"""The built-in tasks by name (docs/tasks.md), each with the ``[task]`` keys it reads.

Every task reads the shared keys (:data:`SHARED_KEYS`: what is trained, its minibatch, how
its data is split among workers and held out). Each task declares the keys of its own, as
each policy does in :mod:`hybridsgd.policies.registry`: a run's config.toml lists the shared
keys and its task's, and a key of another task that is set is kept and noted ("task.dim is
not used by mlp-digits"). A task checks the values of its keys when it is built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hybridsgd.tasks import builtin, workloads
from hybridsgd.tasks.base import Task

#: the [task] keys every task reads (``custom`` and ``options`` belong to a user's task)
SHARED_KEYS = ("name", "batch_size", "split", "alpha", "data_seed", "validation")


@dataclass(frozen=True)
class TaskEntry:
    """A built-in task: its builder ``build(cfg, seed)`` and the keys of its own."""

    build: Callable[..., Task]
    keys: tuple[str, ...]


_CNN = ("channels", "hidden", "norm")
ENTRIES: dict[str, TaskEntry] = {
    "quadratic": TaskEntry(
        builtin.quadratic, ("dim", "samples", "curvature_min", "curvature_max", "noise")
    ),
    "logistic": TaskEntry(builtin.logistic, ("dim", "samples", "noise")),
    "mlp-digits": TaskEntry(builtin.mlp_digits, ("hidden",)),
    "mlp-mnist": TaskEntry(builtin.mlp_mnist, ("hidden",)),
    "cnn-digits": TaskEntry(workloads.cnn_digits, _CNN),
    "cnn-mnist": TaskEntry(workloads.cnn_mnist, _CNN),
    "teacher": TaskEntry(
        workloads.teacher,
        ("dim", "samples", "noise", "classes", "hidden", "teacher_hidden", "norm", "test_samples"),
    ),
    "lm": TaskEntry(
        workloads.lm, ("corpus", "context", "layers", "d_model", "heads", "test_samples")
    ),
    "mf": TaskEntry(workloads.mf, ("users", "items", "rank", "observed", "noise")),
}
#: each built-in task's builder by name
TASKS: dict[str, Callable[..., Task]] = {name: e.build for name, e in ENTRIES.items()}


def task_keys(name: str) -> tuple[str, ...] | None:
    """The keys the task ``name`` reads beyond :data:`SHARED_KEYS`; None for a user's task
    (``build(cfg)`` is given the whole section and may read any key)."""
    from hybridsgd.tasks import user

    entry = None if user.is_user_spec(name) else ENTRIES.get(name)
    return None if entry is None else entry.keys


def build_task(cfg, seed: int) -> Task:
    """The task a ``[task]`` section names, built-in or a user's own
    (``"FILE.py:build"``, :mod:`hybridsgd.tasks.user`); model initialised from ``seed``."""
    from hybridsgd.tasks import user

    if user.is_user_spec(cfg.name):
        return user.build(cfg, seed)
    return TASKS[cfg.name](cfg, seed)
