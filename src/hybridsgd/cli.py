"""The ``hybridsgd`` command. Bad input: one line naming the field and the fix, exit 2."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hybridsgd import __version__
from hybridsgd.errors import ConfigError, HybridSGDError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + traceback
        self.exit(EXIT_USAGE, f"hybridsgd: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hybridsgd", description="Data-parallel SGD under any synchronization policy.")
    p.add_argument("--version", action="version", version=f"hybridsgd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="train one config and write a run directory")
    r.add_argument("config", help="TOML config file")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set policy.name=sync (repeatable)",
    )
    r.add_argument("--backend", help="override run.backend (sim)")
    r.add_argument("--out", help="run directory to write (default: runs/<config name>)")
    r.add_argument(
        "--force", action="store_true", help="overwrite a run directory that holds a run"
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    err = Console(stderr=True)
    try:
        return _run(args, err) if args.command == "run" else EXIT_USAGE
    except (ConfigError, HybridSGDError) as exc:
        print(f"hybridsgd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hybridsgd: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace, err: Console) -> int:
    from hybridsgd.config import Config
    from hybridsgd.runner import notes_for, run

    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"run.backend={args.backend}")
    cfg = Config.load(args.config, overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if (out / "summary.json").exists() and not args.force:
        raise ConfigError(
            "--out", f"{out} already holds a run; pass another --out or --force to overwrite it"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} is a file, not a directory")
    for note in notes_for(cfg):
        err.print(f"[yellow]note:[/] {note}")

    if args.quiet:
        result = run(cfg, out=out)
    else:
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, transient=True) as bar:
            ids: dict[str, int] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in ids:
                    label = "simulating schedule" if phase == "schedule" else "training"
                    ids[phase] = bar.add_task(label, total=max(total, 1))
                if phase == "schedule" or done % 16 == 0 or done == total:
                    bar.update(ids[phase], completed=done, total=max(total, 1))

            result = run(cfg, out=out, progress=progress)
        _print_summary(result.summary, out)
    return 0


def _print_summary(s: dict, out: Path) -> None:
    table = Table(
        title=f"{s['policy']} on {s['task']} ({s['backend']}, seed {s['seed']})", show_header=False
    )
    g = s["gradients"]
    rows = [
        ("updates", f"{s['updates']}"),
        ("simulated time", f"{s['simulated_time']:.4g}"),
        ("final loss / accuracy", f"{s['final_loss']:.4f} / {s['final_accuracy']:.4f}"),
        (
            "gradients applied / dropped / cancelled",
            f"{g['applied']} / {g['dropped']} / {g['cancelled']}",
        ),
        ("mean staleness (momentum)", f"{s['mean_staleness']:.2f} ({s['momentum']})"),
    ]
    if s["target_accuracy"] is not None:
        hit = s["time_to_target"]
        rows.append(
            (f"time to {s['target_accuracy']:.0%}", "not reached" if hit is None else f"{hit:.4g}")
        )
    rows.append(("wall time", f"{s['wall_time_s']:.2f} s"))
    for k, v in rows:
        table.add_row(k, v)
    Console().print(table)
    print(f"wrote {out}/ (summary.json, gradients.csv, updates.csv, evals.csv, config.toml)")


if __name__ == "__main__":
    sys.exit(main())
