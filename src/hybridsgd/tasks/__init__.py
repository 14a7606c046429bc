"""Workloads: built-in tasks and the :class:`Task` interface for a user's own model."""

from hybridsgd.tasks.base import Task
from hybridsgd.tasks.builtin import TASKS, build_task
from hybridsgd.tasks.data import WorkerSampler, samplers, split

__all__ = ["TASKS", "Task", "WorkerSampler", "build_task", "samplers", "split"]
