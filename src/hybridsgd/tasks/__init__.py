"""Workloads: built-in tasks and the :class:`Task` interface for a user's own model."""

from hybridsgd.tasks.base import Task
from hybridsgd.tasks.data import WorkerSampler, samplers, split
from hybridsgd.tasks.registry import TASKS, build_task
from hybridsgd.tasks.stream import StreamSampler, StreamTask

__all__ = [
    "TASKS",
    "StreamSampler",
    "StreamTask",
    "Task",
    "WorkerSampler",
    "build_task",
    "samplers",
    "split",
]
