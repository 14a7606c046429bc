"""Errors a user can act on. The CLI prints them as one line and exits with status 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


class HybridSGDError(Exception):
    """Base class for every error hybridsgd raises on purpose."""


class ConfigError(HybridSGDError, ValueError):
    """A bad input: names the field and says what is allowed.

    >>> str(ConfigError("policy.backups", "must be smaller than policy.workers (got 40)"))
    'policy.backups: must be smaller than policy.workers (got 40)'
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def suggest(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean X?)`` for the closest of ``choices`` to a misspelt ``name``, or "".

    >>> suggest("bakups", ["backups", "workers"])
    ' (did you mean backups?)'
    """
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``, for an error of someone else's code."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def raised(exc: BaseException) -> str:
    """An exception in one line, with the last place in the user's own code it passed
    (frames outside torch and hybridsgd)."""
    import os
    import traceback

    line = one_line(exc)
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "/torch/" not in f.filename and "/hybridsgd/" not in f.filename
    ]
    if frames:
        f = frames[-1]
        line += f" (at {os.path.basename(f.filename)}:{f.lineno}, in {f.name})"
    return line


def lookup(table: Mapping[str, T], name: str, field: str, what: str = "value") -> T:
    """``table[name]``, or a :class:`ConfigError` on ``field`` listing the allowed names."""
    try:
        return table[name]
    except KeyError:
        allowed = ", ".join(sorted(table))
        raise ConfigError(
            field, f"unknown {what} {name!r}{suggest(name, table)}; use one of: {allowed}"
        ) from None


class NotSaved(HybridSGDError):
    """A run's file could not be written (no space, no permission). Its temp file is
    removed and the files written before are kept; a finished run is also written to a
    fallback directory, which the message names (the CLI exits 1)."""


class DiskFull(NotSaved):
    """A run's file could not be written for want of space."""


class UserCodeFailed(HybridSGDError):
    """The model or its loss raised while the simulator computed a gradient or an
    evaluation: ``str`` says what raised, where in the user's code, and on which worker's
    minibatch (its sample indices). ``version`` is the last update applied before it."""

    def __init__(self, message: str, version: int, evals=None) -> None:
        super().__init__(message)
        self.version = version
        self.evals = evals  # the evaluations made before it (hybridsgd.record.Evals)


class WorkerLost(HybridSGDError):
    """Workers died and the policy cannot go on without them (``policy.on_worker_loss =
    "fail"``, or no worker is left). The run's trace up to the loss is still written."""
