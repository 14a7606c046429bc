"""What every command shares: the parser class, exit statuses, shared flags, the console
and the sweep bar."""

from __future__ import annotations

import argparse
from typing import NoReturn, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

EXIT_USAGE = 2


T = TypeVar("T")


#: a run that completed, but diverged or had most of its gradients rejected (the warning
#: says which, before the summary table): a script checking $? notices
EXIT_UNHEALTHY = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not usage + traceback
        self.exit(EXIT_USAGE, f"hybridsgd: error: {message} (see `{self.prog} --help`)\n")


LOG_HELP = (
    "stream metrics to tensorboard[:DIR] or mlflow[:TRACKING_URI] (repeatable; adds to run.log)"
)


def _policy_table() -> str:
    """Every registered policy with its summary and its own keys, for --help."""
    import dataclasses

    from hybridsgd.policies import REGISTRY

    lines = ["policies (SPEC = name:key=value,...; docs/policies.md):"]
    for entry in REGISTRY.values():
        lines.append(f"  {entry.name}: {entry.summary}")
        for f in dataclasses.fields(entry.params) if entry.params else ():
            alias = [a for a, k in entry.aliases.items() if k == f.name]
            also = f" (or {', '.join(alias)})" if alias else ""
            need = ", required" if f.name in entry.required else ""
            lines.append(f"      {f.name}{also}: {f.metadata['help']}{need}")
    return "\n".join(lines)


def _policy_names() -> str:
    """The registered policies, for help texts (hybridsgd.policies.registry)."""
    from hybridsgd.policies import REGISTRY

    return ", ".join(REGISTRY)


def _with_logs(overrides: list[str], logs: list[str], base_logs: list[str]) -> list[str]:
    """--log entries added to the config's run.log, as one more override."""
    if not logs:
        return overrides
    import json

    return [*overrides, f"run.log={json.dumps([*base_logs, *logs])}"]


def _set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set SECTION.KEY=VALUE``, repeatable: an override of the config's values."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (repeatable)",
    )  # fmt: skip


def _noise_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--noise-scale", metavar="B|TASK",
        help="the task's gradient noise scale in samples (from `hybridsgd noise-scale`), or a "
        "task name to estimate it: an update of B samples then counts for less than a "
        "noiseless one, the less the smaller B is (McCandlish et al. 2018; docs/tasks.md)",
    )  # fmt: skip


def _bound_flags(p: argparse.ArgumentParser, whose: str) -> None:
    """--epsilon and the problem constants of Tyurin & Richtarik's optimal time."""
    p.add_argument(
        "--epsilon", type=float,
        help="target E||grad f||^2: also print Tyurin & Richtarik's optimal time for these "
        f"workers and {whose} relative to it (docs/analysis.md)",
    )  # fmt: skip
    p.add_argument(
        "--sigma2", type=float, default=1.0, help="gradient noise (with --epsilon; default 1)"
    )  # fmt: skip
    p.add_argument("--smoothness", type=float, default=1.0, help="L (with --epsilon; default 1)")
    p.add_argument(
        "--gap", type=float, default=1.0, help="f(x0) - inf f (with --epsilon; default 1)"
    )  # fmt: skip


def _console() -> Console:
    """stdout; at least 80 columns wide when it is not a terminal (a pipe, a file)."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 80))


class _sweep_bar:
    """One bar over a whole sweep: runs done of the total, elapsed and time left."""

    def __init__(self, err: Console, what: str, unit: str = "runs") -> None:
        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        )
        self.what = what
        self.task: TaskID | None = None
        self.started = False

    def __enter__(self):
        # the bar starts with the first progress: an error found while the sweep is
        # checked, before anything runs, is then one line with nothing printed before it
        def progress(done: int, total: int, phase: str = "") -> None:
            if not self.started:
                self.bar.__enter__()
                self.started = True
            if self.task is None:
                self.task = self.bar.add_task(self.what, total=max(total, 1))
            self.bar.update(self.task, completed=done, total=max(total, 1),
                            description=phase or self.what)  # fmt: skip

        return progress

    def __exit__(self, *exc) -> None:
        if self.started:
            self.bar.__exit__(*exc)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _with_progress(args: argparse.Namespace, err: Console, work):
    """Call ``work(progress)`` under a progress bar (none with --quiet)."""
    from hybridsgd.progress import progress_of

    with progress_of(None if args.quiet else "auto", err) as progress:
        return work(progress)
