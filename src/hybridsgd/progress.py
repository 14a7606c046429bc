"""Progress bars for long work (rich), shared by the CLI and the Python API.

``h.run(cfg, progress=...)`` takes ``True`` (a bar on stderr), ``False``/``None`` (none), a
callable ``(phase, done, total)`` of your own, or ``"auto"`` (the default): a bar when
stderr is a terminal or the code runs in a Jupyter kernel, none otherwise (a pipe, a log
file, a test run).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

Progress = Callable[[str, int, int], None]

#: what each phase of a run is called on its bar
PHASES = {
    "schedule": "simulating schedule",
    "start": "starting workers",
    "train": "training",
    "evaluate": "evaluating",
}


def interactive() -> bool:
    """A person is watching: stderr is a terminal, or this is a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


@contextlib.contextmanager
def progress_of(progress: Any, console: Any = None) -> Iterator[Progress | None]:
    """The callable a run reports to, under a bar while the block runs when ``progress`` asks
    for one (see the module doc)."""
    if callable(progress):
        yield progress
        return
    if progress is None or progress is False or (progress == "auto" and not interactive()):
        yield None
        return
    if progress is not True and progress != "auto":
        from hybridsgd.errors import ConfigError

        raise ConfigError(
            "progress", f"expected True, False, 'auto' or a callable (got {progress!r})"
        )
    with run_bar(console) as report:
        yield report


@contextlib.contextmanager
def run_bar(console: Any = None) -> Iterator[Progress]:
    """A bar per phase of a run (schedule, training, evaluation), gone when it ends."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
    from rich.progress import Progress as Bar

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())  # fmt: skip
    console = console or Console(stderr=True)
    # in a terminal the bars vanish when done; elsewhere (a log file) their last state stays
    with Bar(*columns, console=console, transient=console.is_terminal) as bar:
        ids: dict[str, TaskID] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in ids:
                ids[phase] = bar.add_task(PHASES.get(phase, phase), total=max(total, 1))
            if phase in ("schedule", "start") or done % 16 == 0 or done == total:
                bar.update(ids[phase], completed=done, total=max(total, 1))

        yield report
