"""``hybridsgd report`` and ``examples``: a comparison's report rebuilt, its TensorBoard
export, the example configs that ship with hybridsgd."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from hybridsgd.cli.common import _console
from hybridsgd.cli.render import report_table
from hybridsgd.errors import ConfigError


def add(sub) -> None:
    """Add this module's commands to the ``hybridsgd`` parser."""
    ex = sub.add_parser(
        "examples",
        help="list the example configs that ship with hybridsgd, or copy them",
        description="The README's commands name examples/*.toml: `hybridsgd examples --copy` "
        "puts them into ./examples, so that they work from an installed package.",
    )
    ex.add_argument(
        "--copy", nargs="?", const="examples", metavar="DIR",
        help="copy them into DIR (default ./examples)",
    )  # fmt: skip
    ex.add_argument("--force", action="store_true", help="replace files already there")
    ex.set_defaults(func=lambda args, err: _examples(args))
    rp = sub.add_parser("report", help="rebuild a comparison's plots and report from its traces")
    rp.add_argument("dir", help="a directory written by `hybridsgd compare` (or `run`)")
    rp.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write every run's trace as TensorBoard events into DIR/<run>",
    )
    rp.set_defaults(func=_report_command)


def _report_command(args: argparse.Namespace, err: Console) -> int:
    if args.tensorboard:
        return _export(Path(args.dir), Path(args.tensorboard))
    return _report(Path(args.dir))


def _examples(args: argparse.Namespace) -> int:
    from hybridsgd import examples

    if args.copy is None:
        if args.force:
            raise ConfigError("--force", "replaces files that --copy would write: add --copy")
        for name in examples.FILES:
            print(f"{name:24} {examples.describe(name)}")
        print("hybridsgd examples --copy [DIR] copies them (default ./examples)")
        return 0
    for path in examples.copy(args.copy, force=args.force):
        print(f"wrote {path}")
    return 0


def _export(src: Path, dest: Path) -> int:
    """``report DIR --tensorboard OUT``: each run's trace as TensorBoard events."""
    from hybridsgd.logs import TensorBoardSink, export, parse
    from hybridsgd.trace import Trace

    parse(["tensorboard"], "--tensorboard")  # installed?
    if not src.is_dir():
        raise ConfigError("report", f"no such directory: {src}")
    runs = [src] if (src / "summary.json").is_file() else sorted(
        d for d in (src / "runs").glob("*") if (d / "summary.json").is_file()
    )  # fmt: skip
    if not runs:
        raise ConfigError("report", f"{src} holds no run (no summary.json, nor runs/*/)")
    for d in runs:
        export(Trace.read(d), [TensorBoardSink(dest / d.name)])
    print(f"wrote TensorBoard events of {len(runs)} run(s) into {dest}")
    return 0


def _report(out: Path, then: Callable[[], None] | None = None, built=None) -> int:
    """Build the report of ``out`` (unless ``built``, the :class:`~hybridsgd.api.SweepResult`
    that built it) and print its verdict first, then ``then()`` (a tuning's choices), then
    the table of results."""
    from hybridsgd.api import read_result
    from hybridsgd.report import build_report

    if built is None:
        if not out.is_dir():
            raise ConfigError("report", f"no such directory: {out}")
        built = read_result(out, build_report(out))
    out, html_path, summary = built.out, built.report, built.summary
    table, caption = report_table(summary, out)
    console = _console()
    console.print(built.verdict, markup=False, highlight=False)
    if then is not None:
        then()
    console.print(table)
    console.print(caption, markup=False, highlight=False)
    print(f"wrote {html_path}, summary.csv and {len(list(out.glob('*.png')))} plots")
    return 0
