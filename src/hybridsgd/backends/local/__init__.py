"""The local backend: W worker processes on this machine, parameters in shared memory, the
real clock. :mod:`~hybridsgd.backends.local.driver` moves the work (the transport, faults,
Ctrl-C), :mod:`~hybridsgd.backends.local.worker` computes, and
:mod:`~hybridsgd.backends.local.backend` is the backend a config's ``run.backend = "local"``
names."""

from hybridsgd.backends.driver import RealResult
from hybridsgd.backends.local.driver import (
    LocalDriver,
    available_cores,
    exit_reason,
    warm_up,
    worker_threads,
)


def __getattr__(name: str):
    # the backend imports hybridsgd.backends.real, which imports this package's driver
    if name == "LocalBackend":
        from hybridsgd.backends.local.backend import LocalBackend

        return LocalBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LocalBackend",
    "LocalDriver",
    "RealResult",
    "available_cores",
    "exit_reason",
    "warm_up",
    "worker_threads",
]
