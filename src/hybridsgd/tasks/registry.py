"""The built-in tasks by name (docs/tasks.md)."""

from __future__ import annotations

from collections.abc import Callable

from hybridsgd.tasks import builtin, workloads
from hybridsgd.tasks.base import Task

TASKS: dict[str, Callable[..., Task]] = {
    "quadratic": builtin.quadratic,
    "logistic": builtin.logistic,
    "mlp-digits": builtin.mlp_digits,
    "mlp-mnist": builtin.mlp_mnist,
    "cnn-digits": workloads.cnn_digits,
    "cnn-mnist": workloads.cnn_mnist,
    "teacher": workloads.teacher,
    "lm": workloads.lm,
    "mf": workloads.mf,
}


def build_task(cfg, seed: int) -> Task:
    """The task a ``[task]`` section names, built-in or a user's own
    (``"FILE.py:build"``, :mod:`hybridsgd.tasks.user`); model initialised from ``seed``."""
    from hybridsgd.tasks import user

    if user.is_user_spec(cfg.name):
        return user.build(cfg, seed)
    return TASKS[cfg.name](cfg, seed)
