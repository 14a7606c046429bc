"""The ``hybridsgd`` command. Bad input: one line naming the field and the fix, exit 2.

One module per command family (``run``, ``sweeps``: compare and tune, ``fidelity``:
profile, validate and perf-profile, ``predict``: predict and noise-scale, ``recommend``,
``reports``: report and examples), each adding its subcommands with
``set_defaults(func=...)``; ``render`` prints the tables, ``common`` holds what they share.
Every module imports torch only inside its handlers: ``hybridsgd --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from rich.console import Console

from hybridsgd import __version__
from hybridsgd.cli import fidelity, predict, recommend, reports, run, sweeps
from hybridsgd.cli.common import EXIT_UNHEALTHY, EXIT_USAGE, T, _Parser
from hybridsgd.errors import ConfigError, HybridSGDError, NotSaved, WorkerLost

__all__ = ["EXIT_UNHEALTHY", "EXIT_USAGE", "entry", "main"]


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hybridsgd", description="Data-parallel SGD under any synchronization policy.")
    p.add_argument("--version", action="version", version=f"hybridsgd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in (run, sweeps, fidelity, reports, predict, recommend):
        command.add(sub)
    return p


#: the commands that train or predict, and so import torch (1-2 s): its import runs with
#: Ctrl-C held (see _holding_ctrl_c), before the command's own work
TORCH_COMMANDS = frozenset(
    ("run", "compare", "tune", "profile", "validate", "noise-scale", "predict", "recommend")
)


def _holding_ctrl_c(build: Callable[[], T]) -> T:
    """``build()`` with Ctrl-C held until it returns, then raised. A SIGINT that lands
    inside torch's import can abort the process (a KeyboardInterrupt raised in pybind11
    code ends in std::terminate: exit -6, seen in a full test run and 1 of 24 tries at
    0.2-1.8 s; again in CI once the parser no longer imported torch and the command's
    own import of it was not held)."""
    import signal
    import threading

    held: list[int] = []
    before = signal.getsignal(signal.SIGINT)
    hold = threading.current_thread() is threading.main_thread() and before is not signal.SIG_IGN
    if hold:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        built = build()
    finally:
        if hold:
            signal.signal(signal.SIGINT, before)
    if held:
        raise KeyboardInterrupt
    return built


def main(argv: list[str] | None = None) -> int:
    err = Console(stderr=True)
    try:
        # inside the try: building the parser imports the policy registry (its help lists
        # the policies), and a Ctrl-C during that import is one line too
        args = _holding_ctrl_c(_parser).parse_args(argv)
        if args.command in TORCH_COMMANDS:  # torch's import, the longest, under the hold too
            _holding_ctrl_c(lambda: importlib.import_module("torch"))
        return args.func(args, err)
    except (WorkerLost, NotSaved) as exc:  # not bad input: the run itself failed
        print(f"hybridsgd: error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, HybridSGDError) as exc:
        print(f"hybridsgd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hybridsgd: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``hybridsgd`` command: :func:`main` in a process that ends with it, so signals
    after an interrupted run stay ignored while it exits (see ``runner.Interrupts``)."""
    from hybridsgd.interrupts import Interrupts

    Interrupts.hold_after_stop = True
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:  # `hybridsgd predict --json | head`: the reader has gone
        # no traceback, and none at exit either: later writes go nowhere
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, as a tool killed by the signal would
    if code in (130, 143):
        # A Ctrl-C that lands inside an extension's import (torch's) can leave CPython's
        # process-wide "unhandled KeyboardInterrupt" mark set although main() caught it; at
        # exit the interpreter would then kill itself by SIGINT (status -2), not return 130.
        # Every run has cleaned up by now (workers stopped, files written): leave directly.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
