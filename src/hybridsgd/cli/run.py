"""``hybridsgd run``: train one config (or resume one) and write its run directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from hybridsgd.cli.common import EXIT_UNHEALTHY, LOG_HELP, _with_logs, _with_progress
from hybridsgd.cli.render import _print_summary
from hybridsgd.errors import ConfigError


def add(sub) -> None:
    """Add this module's command to the ``hybridsgd`` parser."""
    r = sub.add_parser("run", help="train one config and write a run directory")
    r.add_argument("config", nargs="?", help="TOML config file")
    r.add_argument(
        "--resume", metavar="DIR", help="continue the run whose checkpoint is in DIR (sim)"
    )
    r.add_argument(
        "--allow-change",
        action="append",
        default=[],
        metavar="SECTION.KEY",
        help="with --resume: a key of config.toml that may differ from the checkpoint's "
        "(only keys that do not change training: run.threads, run.checkpoint_every, "
        "run.eval_every, run.target_accuracy)",
    )
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, e.g. --set policy.name=sync (repeatable)",
    )
    r.add_argument("--backend", help="override run.backend (sim, local or ray)")
    r.add_argument("--out", help="run directory to write (default: runs/<config name>)")
    r.add_argument(
        "--force", action="store_true", help="overwrite a run directory that holds a run"
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar or summary table")
    r.add_argument("--log", action="append", default=[], metavar="KIND[:WHERE]", help=LOG_HELP)
    r.set_defaults(func=_run)


def _run(args: argparse.Namespace, err: Console) -> int:
    from hybridsgd.config import Config
    from hybridsgd.runner import CHECKPOINT, resume, run
    from hybridsgd.summary import notes_for

    if args.resume:
        if args.config or args.overrides or args.backend or args.out:
            raise ConfigError("--resume", "takes the run directory alone (its config.toml is used)")
        out = Path(args.resume)
        try:
            result = _with_progress(
                args,
                err,
                lambda progress: resume(out, progress=progress, allow_change=args.allow_change),
            )
        except ConfigError as exc:  # the API's argument names, as this command's flags
            flag = {"allow_change": "--allow-change", "run directory": "--resume"}
            raise ConfigError(flag.get(exc.field, exc.field), exc.message) from None
        return _finish(result.summary, out, args, err, [])
    if not args.config:
        raise ConfigError("config", "give a TOML config file, or --resume DIR")
    overrides = list(args.overrides)
    if args.backend:
        overrides.append(f"run.backend={args.backend}")
    cfg = Config.load(args.config, overrides)
    if args.log:
        cfg = Config.load(args.config, _with_logs(overrides, args.log, cfg.run.log))
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    for note in notes_for(cfg):
        err.print(f"[yellow]note:[/] {note}", soft_wrap=True)

    try:
        result = _with_progress(
            args, err, lambda progress: run(cfg, out=out, progress=progress, force=args.force)
        )
    except KeyboardInterrupt:
        if (out / CHECKPOINT).is_file():
            print(
                f"hybridsgd: interrupted; continue with: hybridsgd run --resume {out}",
                file=sys.stderr,
            )
            return 130
        raise
    return _finish(result.summary, out, args, err, notes_for(cfg))


def _finish(s: dict, out: Path, args: argparse.Namespace, err: Console, said: list[str]) -> int:
    """A finished run's warnings (before its table, so they are not missed), its table, and
    its exit status: 130/143 interrupted, 3 completed but unhealthy (diverged, or most
    gradients rejected), else 0."""
    for note in s["notes"][len(said) :]:  # those the run found
        err.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    for warning in s["warnings"]:
        err.print(f"[bold red]warning:[/] {warning}", soft_wrap=True)
    if not args.quiet:
        _print_summary(s, out)
    if s.get("interrupted"):
        from hybridsgd.rundir import CHECKPOINT

        by = s.get("signal") or "SIGINT"
        then = (
            f"; continue with: hybridsgd run --resume {out}" if (out / CHECKPOINT).is_file() else ""
        )
        print(
            f"hybridsgd: interrupted ({by}); the trace up to here is in {out}{then}",
            file=sys.stderr,
        )
        return 143 if by == "SIGTERM" else 130
    if not s.get("healthy", True):
        print(
            f"hybridsgd: the run completed but is not usable ({s['warnings'][0]}); "
            f"exit status {EXIT_UNHEALTHY}",
            file=sys.stderr,
        )
        return EXIT_UNHEALTHY
    return 0
