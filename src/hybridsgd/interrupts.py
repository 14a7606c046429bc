"""How a real run meets SIGINT and SIGTERM (no torch here: the command loads this first)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Interrupts:
    """The first SIGINT or SIGTERM stops a real run (as Ctrl-C: KeyboardInterrupt in the
    training loop); later ones are ignored until the partial trace is written, so a second
    Ctrl-C cannot lose it. ``name`` is the signal that stopped the run, if any.

    A program that exits once a run is interrupted (the CLI) sets ``hold_after_stop``: the
    signals then stay ignored after the run, so one landing while it exits cannot kill it;
    otherwise (a notebook) the previous handlers come back."""

    hold_after_stop = False

    def __init__(self, cooperative: bool = False) -> None:
        self.name: str | None = None
        #: the loop asks (``stopped``) between steps instead of being interrupted anywhere:
        #: the simulator's replay, which then writes the trace up to the last whole update
        self.cooperative = cooperative

    @property
    def stopped(self) -> bool:
        return self.name is not None

    def _handle(self, signum, frame) -> None:
        if self.name is None:
            self.name = signal.Signals(signum).name
            if not self.cooperative:
                raise KeyboardInterrupt
        # a second signal while the run is stopping: the trace is being saved

    @contextlib.contextmanager
    def deferred(self) -> Iterator[Interrupts]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers belong to the main thread
            return
        # a process that ignores SIGINT (a sweep's worker, a background job) goes on
        # ignoring it: its parent, or the shell, handles Ctrl-C
        caught = [signal.SIGTERM]
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            caught.append(signal.SIGINT)
        before = {s: signal.signal(s, self._handle) for s in caught}
        try:
            yield self
        finally:
            for s, handler in before.items():
                held = self.name is not None and self.hold_after_stop
                signal.signal(s, signal.SIG_IGN if held else handler)
