"""The ``hybridsgd`` command. Bad input: one line naming the field and the fix, exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
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
from rich.table import Table

from hybridsgd import __version__
from hybridsgd.errors import ConfigError, HybridSGDError, NotSaved, WorkerLost

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


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="hybridsgd", description="Data-parallel SGD under any synchronization policy.")
    p.add_argument("--version", action="version", version=f"hybridsgd {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
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

    m = _sweep_command(
        sub,
        "compare",
        "run several policies on one config and build a report",
        "e.g. sync, backup:backups=2, hybrid:threshold=linear:start=0,end=500",
    )
    m.add_argument(
        "--seeds", type=int, default=1, help="seeds per policy: run.seed, +1, ... (default 1)"
    )
    m.add_argument("--backend", help="override run.backend (sim, local or ray)")
    m.add_argument("--log", action="append", default=[], metavar="KIND[:WHERE]", help=LOG_HELP)

    t = _sweep_command(
        sub,
        "tune",
        "tune each policy on its own (a grid on a validation split), then compare",
        "a policy to tune, e.g. sync, backup:backups=2",
    )
    t.add_argument(
        "--grid", action="append", default=[], metavar="SECTION.KEY=[V1,V2,...]",
        help="values to try, e.g. optimizer.lr=[0.01,0.03,0.1]; repeat for more keys "
        "(default: 7 learning rates, log-spaced over the optimizer's usual range)",
    )  # fmt: skip
    t.add_argument("--seeds", type=int, default=1, help="seeds per grid point (default 1)")
    t.add_argument(
        "--final-seeds", type=int, help="fresh seeds for each winner's test runs (default --seeds)"
    )
    t.add_argument(
        "--objective", default="final-loss", choices=("final-loss", "time-to-target"),
        help="what the grid minimises on the validation split (default final-loss)",
    )  # fmt: skip
    t.add_argument(
        "--validation", type=float, default=0.2,
        help="fraction of the training set held out to score the grid (default 0.2)",
    )  # fmt: skip
    t.add_argument(
        "--grouped", action="store_true",
        help="replay each policy's grid in one pass: faster for small models, but equal to "
        "separate runs only to float tolerance (docs/tuning.md)",
    )  # fmt: skip
    t.add_argument(
        "--studies", type=int, default=0, metavar="S",
        help="AlgoPerf's shape instead of a grid: S independent studies (each on its own "
        "seed) of --trials T quasi-random trials; a policy scores the median over studies "
        "of its best trial",
    )  # fmt: skip
    t.add_argument("--trials", type=int, default=0, metavar="T", help="trials per study")
    t.add_argument(
        "--space", action="append", default=[], metavar="SECTION.KEY=log|lin:LOW,HIGH",
        help="a dimension of the studies' search space, e.g. optimizer.lr=log:0.001,1 "
        "(default: lr log-uniform, SGD momentum in [0, 0.95], a hybrid's async_lr)",
    )  # fmt: skip

    pr = sub.add_parser(
        "profile",
        help="measure real workers (or read a real run) and fit a timing model to them",
        description="Runs CONFIG's task on a real backend with every worker computing back "
        "to back (async, no injected delay) for --minibatches jobs each, or reads a real "
        "run's gradients.csv (--from), writes OUT/profile.csv and prints each worker's job "
        "times; --fit fits speeds, slow episodes and the family (docs/fidelity.md).",
    )
    pr.add_argument("config", nargs="?", help="TOML config file (its task, model, workers)")
    _set_option(pr, "policy.workers=4")
    pr.add_argument("--backend", help="local or ray (default: the config's run.backend)")
    pr.add_argument(
        "--minibatches", type=int, default=200, help="jobs per worker to measure (default 200)"
    )
    pr.add_argument("--from", dest="source", metavar="RUN_DIR",
                    help="read a real run's gradients.csv instead of measuring")  # fmt: skip
    pr.add_argument("--fit", action="store_true", help="fit a timing model to the profile")
    pr.add_argument(
        "--out", default="profile",
        help="directory for profile.csv, timing.toml and fit.png (default profile)",
    )  # fmt: skip

    va = sub.add_parser(
        "validate",
        help="each policy simulated with a fitted timing against the same runs for real",
        description="Profiles CONFIG's workers on the real backend and fits a timing model "
        "(or takes --timing), then runs each --policy on seeds 0..S-1 both for real at "
        "natural timing and in the simulator, and prints throughput and time to "
        "run.target_accuracy, simulated against real, and whether the rankings agree "
        "(docs/fidelity.md).",
    )
    va.add_argument("config", help="TOML config file (task, workers, run.target_accuracy)")
    _set_option(va, "run.target_accuracy=0.9")
    va.add_argument(
        "--policy", dest="policies", action="append", default=[], metavar="SPEC",
        help="a policy to validate, e.g. sync, backup:backups=1 (repeatable)",
    )  # fmt: skip
    va.add_argument("--backend", help="local or ray (default: the config's run.backend)")
    va.add_argument("--seeds", type=int, default=3, help="seeds per policy (default 3)")
    va.add_argument(
        "--minibatches", type=int, default=200, help="profiled jobs per worker (default 200)"
    )
    va.add_argument("--timing", metavar="TOML",
                    help="a [timing] section to simulate with, instead of profiling")  # fmt: skip
    va.add_argument(
        "--out", default="validate", help="directory for the profile (default validate)"
    )

    pf = sub.add_parser(
        "perf-profile",
        help="performance profiles and geometric-mean speed-ups across tunings (workloads)",
        description="Reads each DIR's tune.json (hybridsgd tune) as one workload: each "
        "policy's tuned objective (lower is better; infinity when it diverged or never "
        "reached the target), then draws the performance profiles and prints each "
        "policy's geometric-mean speed-up over --baseline.",
    )
    pf.add_argument("dirs", nargs="+", metavar="DIR", help="directories written by tune")
    pf.add_argument("--baseline", help="the policy to compare with (default: the first)")
    pf.add_argument("--out", default="profile.png", help="the plot (default profile.png)")

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

    rp = sub.add_parser("report", help="rebuild a comparison's plots and report from its traces")
    rp.add_argument("dir", help="a directory written by `hybridsgd compare` (or `run`)")
    rp.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write every run's trace as TensorBoard events into DIR/<run>",
    )

    n = sub.add_parser(
        "noise-scale",
        help="estimate a task's gradient noise scale and critical batch size",
        description="The simple noise scale B_simple = tr(Sigma) / |G|^2 of McCandlish et al. "
        "2018 at the start and along a short simulated run of the config (docs/tasks.md).",
    )
    n.add_argument("config", help="TOML config file (its task, and the run to follow)")
    _set_option(n, "task.name=teacher")
    n.add_argument(
        "--updates", type=int, default=100, help="length of the run followed (default 100)"
    )
    n.add_argument(
        "--points", type=int, default=5,
        help="estimates, evenly spaced from update 0 to --updates (default 5)",
    )  # fmt: skip
    n.add_argument(
        "--minibatches", type=int, default=64,
        help="independent minibatch gradients per estimate (default 64)",
    )  # fmt: skip
    n.add_argument(
        "--hessian", action="store_true",
        help="also B_noise = tr(H Sigma) / G'HG with Hessian-vector products (about 3x the "
        "cost): the noise scale predict and recommend want",
    )  # fmt: skip
    n.add_argument("--json", action="store_true", help="print the estimates as one JSON object")

    q = sub.add_parser(
        "predict",
        help="predict time per update, staleness and stability",
        epilog=_policy_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    q.add_argument(
        "--policy",
        required=True,
        help=f"e.g. async, backup:backups=2, k_sync:k=12, ssp:s=0 (policies: {_policy_names()})",
    )
    q.add_argument("--workers", type=int, required=True, help="W, workers running")
    q.add_argument("--compute", required=True, help="timing model, e.g. shifted-exp:delta=1,mu=2")
    q.add_argument("--comm", default="constant:value=0", help="time per message (default 0)")
    q.add_argument("--speed", default="", help='per-worker time multipliers, e.g. "1x30,3x2"')
    q.add_argument("--batch", type=int, default=32, help="minibatch per worker (for throughput)")
    q.add_argument("--lr", type=float, help="learning rate (with --curvature: stability)")
    q.add_argument(
        "--curvature", help="largest Hessian eigenvalue h, or a task name to estimate it"
    )
    q.add_argument("--validate", action="store_true", help="also simulate and compare")
    q.add_argument(
        "--updates",
        type=int,
        default=20000,
        help="updates simulated by --validate, and hybrid's horizon (default 20000)",
    )
    q.add_argument(
        "--train-samples",
        type=int,
        help="training set size (hybrid with progress = epochs: gradients per epoch)",
    )
    q.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed: simulations, Monte Carlo, the curvature estimate (default 0)",
    )
    q.add_argument("--json", action="store_true", help="print the prediction as one JSON object")
    _noise_flag(q)
    _bound_flags(q, "this policy's time")

    c = sub.add_parser("recommend", help="rank policies by predicted convergence time")
    c.add_argument("--workers", type=int, required=True, help="W, the worker budget")
    c.add_argument("--compute", required=True, help="timing model, e.g. lognormal:mu=0,sigma=1")
    c.add_argument("--comm", default="constant:value=0", help="time per message (default 0)")
    c.add_argument("--speed", default="", help='per-worker time multipliers, e.g. "1x30,3x2"')
    c.add_argument(
        "--batch", type=int, default=32, help="minibatch per worker (for throughput; default 32)"
    )
    c.add_argument(
        "--lr", type=float,
        help="rank every policy at this one lr (default: each at its own best lr, which "
        "needs --noise-scale or a task name as --curvature)",
    )  # fmt: skip
    c.add_argument("--curvature", required=True, help="largest Hessian eigenvalue, or a task name")
    c.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed: Monte Carlo, the curvature estimate (default 0)",
    )
    c.add_argument("--json", action="store_true", help="print the ranking as JSON")
    c.add_argument(
        "--check", type=int, default=0, metavar="N",
        help="tune the top N in the simulator (time to --target on a validation split, "
        "7 lrs each) and print predicted against simulated rank",
    )  # fmt: skip
    c.add_argument(
        "--task", help="the task --check trains (default: --curvature when it names a task)"
    )
    c.add_argument(
        "--target", type=float, default=0.9, help="--check's target accuracy (default 0.9)"
    )
    c.add_argument(
        "--check-time", type=float, default=150.0,
        help="--check's run.time per run, in the timing model's units (default 150)",
    )  # fmt: skip
    c.add_argument(
        "--check-out", default="recommend-check",
        help="directory for --check's tuning and report (default recommend-check)",
    )  # fmt: skip
    _noise_flag(c)
    _bound_flags(c, "each candidate's time")
    return p


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


def _set_option(parser: argparse.ArgumentParser, example: str) -> None:
    """``--set SECTION.KEY=VALUE``, repeatable: an override of the config's values."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help=f"override a config value, e.g. --set {example} (repeatable)",
    )  # fmt: skip


def _sweep_command(sub, name: str, what: str, policy_help: str) -> argparse.ArgumentParser:
    """A command that runs a sweep of policies (compare, tune): the options they share."""
    p = sub.add_parser(
        name,
        help=what,
        epilog=_policy_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "config", nargs="?",
        help="TOML config file (its [policy] is the base of every --policy)",
    )  # fmt: skip
    p.add_argument(
        "--policy", dest="policies", action="append", default=[], metavar="SPEC",
        help=f"{policy_help} (policies: {_policy_names()})",
    )  # fmt: skip
    _set_option(p, "run.time=300")
    p.add_argument("--out", help="directory for the runs and the report")
    p.add_argument("--force", action="store_true", help="replace the comparison a directory holds")
    p.add_argument(
        "--resume", metavar="DIR",
        help=f"go on with the interrupted {name} in DIR: run only what is missing, then report",
    )  # fmt: skip
    p.add_argument(
        "--jobs", type=int, metavar="N",
        help="simulated runs side by side (default: every core; real backends run one at a time)",
    )  # fmt: skip
    p.add_argument(
        "--ray-address", default="", metavar="ADDRESS",
        help='run each run as a Ray task on this cluster ("auto", "host:port")',
    )  # fmt: skip
    p.add_argument(
        "--validate", choices=("local", "ray"), metavar="BACKEND",
        help="then run each policy (a tuning: with its chosen settings) on this real backend "
        "and in the simulator with a timing fitted to it, and print predicted against "
        "measured (as `hybridsgd validate`; needs run.target_accuracy)",
    )  # fmt: skip
    return p


def _holding_ctrl_c(build: Callable[[], T]) -> T:
    """``build()`` with Ctrl-C held until it returns, then raised. Building the parser
    imports the policies and so torch, and a SIGINT that lands inside torch's import can
    abort the process (a KeyboardInterrupt raised in pybind11 code ends in std::terminate:
    exit -6, seen in a full test run and 1 of 24 tries at 0.2-1.8 s)."""
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
        if args.command == "predict":
            return _predict(args)
        if args.command == "recommend":
            return _recommend(args)
        if args.command == "noise-scale":
            return _noise_scale(args)
        if args.command == "compare":
            return _compare(args, err)
        if args.command == "tune":
            return _tune(args, err)
        if args.command == "profile":
            return _profile(args)
        if args.command == "validate":
            return _validate(args)
        if args.command == "perf-profile":
            return _perf_profile(args)
        if args.command == "examples":
            return _examples(args)
        if args.command == "report":
            if args.tensorboard:
                return _export(Path(args.dir), Path(args.tensorboard))
            return _report(Path(args.dir))
        return _run(args, err) if args.command == "run" else EXIT_USAGE
    except (WorkerLost, NotSaved) as exc:  # not bad input: the run itself failed
        print(f"hybridsgd: error: {exc}", file=sys.stderr)
        return 1
    except (ConfigError, HybridSGDError) as exc:
        print(f"hybridsgd: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("hybridsgd: interrupted", file=sys.stderr)
        return 130


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


def _with_progress(args: argparse.Namespace, err: Console, work):
    """Call ``work(progress)`` under a progress bar (none with --quiet)."""
    from hybridsgd.progress import progress_of

    with progress_of(None if args.quiet else "auto", err) as progress:
        return work(progress)


def _print_summary(s: dict, out: Path) -> None:
    import math

    stale_policy = s["policy"].split(":")[0].split("(")[0] in ("ssp", "psp")
    table = Table(
        title=f"{s['policy']} on {s['task']} ({s['backend']}, seed {s['seed']})",
        show_header=False,
    )
    table.add_column(overflow="fold")
    table.add_column(overflow="fold")
    g = s["gradients"]
    acc = s["final_accuracy"]
    rows = [
        ("updates", f"{s['updates']}"),
        ("virtual time" if s.get("clock") == "virtual" else "seconds", f"{s['end_time']:.4g}"),
        ("final loss / accuracy", f"{s['final_loss']:.4f} / {acc:.4f}")
        if acc is not None and not math.isnan(acc)
        else ("final loss", f"{s['final_loss']:.4f}"),
        *((f"final {k}", f"{v:.4g}") for k, v in s.get("final_from_loss", {}).items()),
        (
            "gradients applied / dropped / cancelled / rejected",
            f"{g['applied']} / {g['dropped']} / {g['cancelled']} / {g['rejected']}",
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
    _console().print(table)
    if stale_policy:
        print(
            "staleness counts versions; ssp's and psp's bound s counts clock ticks between workers"
        )
    print(f"wrote {out}/ (summary.json, gradients.csv, updates.csv, evals.csv, config.toml)")


def _predict(args: argparse.Namespace) -> int:
    import json

    from hybridsgd.config import Config
    from hybridsgd.forecast import predict_config, simulated
    from hybridsgd.policies import parse_spec

    _, overrides = parse_spec(args.policy)
    cfg = Config.from_dict(
        {},
        [
            *overrides,
            f"policy.workers={args.workers}",
            f"timing.compute={args.compute}",
            f"timing.comm={args.comm}",
            f"task.batch_size={args.batch}",
            f"run.seed={args.seed}",
        ]
        + ([f"timing.speed={args.speed}"] if args.speed else []),
    )
    if (args.lr is None) != (args.curvature is None):
        raise ConfigError("--lr", "stability needs both --lr and --curvature")
    if args.updates < 1:
        raise ConfigError("--updates", f"must be >= 1 (got {args.updates})")
    h = _curvature(args) if args.curvature is not None else None
    pred = predict_config(
        cfg, updates=args.updates, lr=args.lr, curvature=h, train_samples=args.train_samples
    )
    measured = simulated(cfg, args.updates, args.train_samples) if args.validate else None
    bound = _optimal(args, cfg, pred) if args.epsilon is not None else None
    noise = _noise(args, pred, h) if args.noise_scale is not None else None
    if args.json:
        out = pred.to_dict()
        if noise:
            out["noise"] = noise
        if h is not None:
            out["curvature"] = h
        if measured:
            out["measured"] = measured
        if bound:
            out["optimal"] = bound
        from hybridsgd.trace import json_safe

        print(json.dumps(json_safe(out)))
        return 0
    _print_prediction(pred, h, measured)
    if noise:
        _console().print(
            f"  noise scale {noise['noise_scale']:.4g} samples: an update applies "
            f"{noise['samples_per_update']:.4g}, so it needs {noise['updates_factor']:.3g}x the "
            f"updates of noiseless descent ({noise['model']}); time to a target, per update "
            f"noiseless descent would need: {noise['time_factor']:.4g}",
            markup=False, highlight=False,
        )  # fmt: skip
    if bound:
        _print_optimal(bound)
    return 0


def _noise(args: argparse.Namespace, pred, h: float | None) -> dict:
    """What the task's noise scale makes of a predicted time per update (docs/tasks.md);
    ``h`` is the curvature already estimated for --lr, if any."""
    from hybridsgd.analysis.noise_scale import updates_factor
    from hybridsgd.forecast import noise_scale_of

    b = noise_scale_of(args.noise_scale, args.batch, args.seed)
    samples = pred.quorum * args.batch
    lr_h = args.lr * h if args.lr is not None and h is not None else None
    factor = updates_factor(b, samples, lr_h)
    return {
        "noise_scale": b,
        "samples_per_update": samples,
        "updates_factor": factor,
        "time_factor": factor * pred.mean_update_time,
        "model": "at the given lr (McCandlish et al. eq. 2.6)"
        if lr_h is not None
        else "each at its best lr (McCandlish et al. eq. 2.11)",
    }


def _optimal(args: argparse.Namespace, cfg, pred) -> dict:
    """Tyurin & Richtarik's optimal time for the workers' mean times per gradient, and the
    policy's predicted time where it applies fresh gradients only."""
    best = _optimum(args, cfg)
    ratio = _vs_optimum(args, pred, best)
    return best | ({"policy_time": ratio * best["optimal_time"], "ratio": ratio} if ratio else {})


def _optimum(args: argparse.Namespace, cfg) -> dict:
    from hybridsgd.analysis.optimal import Problem, optimal_time
    from hybridsgd.analysis.prediction import worker_cycles
    from hybridsgd.runner import build_cluster

    problem = Problem(args.smoothness, args.gap, args.sigma2, args.epsilon)
    cluster = build_cluster(cfg)
    taus, _ = worker_cycles(cluster.compute, cluster.comm, cfg.policy.workers, cluster.speeds)
    best, m = optimal_time(taus, problem)
    return {"optimal_time": best, "fastest_workers_used": m, "sigma2_over_epsilon": problem.batch}


def _vs_optimum(args: argparse.Namespace, pred, best: dict) -> float | None:
    """A fresh-gradient policy's predicted time over the optimum (None: stale gradients)."""
    from hybridsgd.analysis.optimal import Problem, fresh_policy_time

    if pred is None or pred.mean_staleness != 0 or pred.regimes:
        return None
    problem = Problem(args.smoothness, args.gap, args.sigma2, args.epsilon)
    mine = fresh_policy_time(pred.mean_update_time, pred.quorum, problem)
    return mine / best["optimal_time"]


def _print_optimal(bound: dict, per_policy: bool = True) -> None:
    console = _console()
    console.print(
        f"  optimal time (Tyurin & Richtarik 2023, up to a constant): {bound['optimal_time']:.4g},"
        f" with the {bound['fastest_workers_used']} fastest workers "
        f"(sigma^2 / epsilon = {bound['sigma2_over_epsilon']:.4g})",
        markup=False, highlight=False,
    )  # fmt: skip
    if not per_policy:
        return
    if "ratio" in bound:
        console.print(
            f"  this policy, same constants: {bound['policy_time']:.4g} = "
            f"{bound['ratio']:.3g}x the optimum",
            markup=False, highlight=False,
        )  # fmt: skip
    else:
        console.print(
            "  this policy applies stale gradients: no iteration count here to compare with",
            markup=False, highlight=False,
        )  # fmt: skip


def _sweep_args(args: argparse.Namespace, extra: tuple[str, ...] = ()) -> Path | None:
    """The sweep's directory to resume (``--resume DIR``, which takes nothing else that
    plans the sweep), or None for a new sweep (which needs a config and --out)."""
    if args.resume:
        given = [
            flag
            for flag, value in (("config", args.config), ("--policy", args.policies),
                                ("--set", args.overrides), ("--out", args.out),
                                ("--force", args.force))
            + tuple((f"--{k.replace('_', '-')}", getattr(args, k)) for k in extra)
            if value
        ]  # fmt: skip
        if given:
            raise ConfigError(
                "--resume", f"takes the directory alone (its plan is used), not {given[0]}"
            )
        return Path(args.resume)
    if not args.config:
        raise ConfigError("config", "give a TOML config file, or --resume DIR")
    if not args.out:
        raise ConfigError("--out", "give the directory for the runs and the report")
    return None


def _compare(args: argparse.Namespace, err: Console) -> int:
    from hybridsgd.api import compare
    from hybridsgd.config import Config
    from hybridsgd.report.compare import resume_compare

    resume = _sweep_args(args, ("backend", "log"))
    if resume is not None:
        with _sweep_bar(err, "comparing") as progress:
            resume_compare(resume, progress, jobs=args.jobs, ray_address=args.ray_address)
        return _report(resume)
    overrides = list(args.overrides) + ([f"run.backend={args.backend}"] if args.backend else [])
    base = Config.load(args.config, overrides)
    if args.log:
        base = Config.load(args.config, _with_logs(overrides, args.log, base.run.log))
    _check_validate(args, base)
    with _sweep_bar(err, "comparing") as progress:
        result = compare(
            base,
            args.policies,
            out=args.out,
            seeds=args.seeds,
            jobs=args.jobs,
            ray_address=_ray_address(args, base),
            force=args.force,
            progress=progress,
        )
    code = _report(result.out, built=result)
    if args.validate:
        _validate_sweep(base, args.policies, {}, args.validate, args.seeds, result.out)
    return code


def _ray_address(args: argparse.Namespace, base) -> str:
    """--ray-address, or run.ray_address for simulated runs (a Ray backend's runs use it
    themselves)."""
    if args.ray_address:
        return args.ray_address
    return base.run.ray_address if base.run.backend == "sim" else ""


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


def _tune(args: argparse.Namespace, err: Console) -> int:
    from hybridsgd import api
    from hybridsgd.config import Config
    from hybridsgd.tuning import parse_grid, resumed_plan, tune

    resume = _sweep_args(args, ("grid", "final_seeds", "grouped", "studies", "trials", "space"))
    built = None
    if resume is not None:
        p = resumed_plan(resume)
        with _sweep_bar(err, "tuning") as progress:
            tuned = tune(
                p, resume, jobs=args.jobs, ray_address=_ray_address(args, p.base),
                progress=progress, resume=True,
            )  # fmt: skip
        out, chosen, warnings = resume, tuned.chosen, tuned.warnings
        studies, objective = p.studies, p.objective
        validate_base, specs, final_seeds = p.base, p.specs, p.final_seeds
    else:
        base = Config.load(args.config, list(args.overrides))
        _check_validate(args, base)
        with _sweep_bar(err, "tuning") as progress:
            built = api.tune(
                base,
                args.policies,
                parse_grid(args.grid),
                out=args.out,
                seeds=args.seeds,
                final_seeds=args.final_seeds,
                objective=args.objective,
                validation=args.validation,
                grouped=args.grouped,
                studies=args.studies,
                trials=args.trials,
                space=args.space,
                jobs=args.jobs,
                ray_address=_ray_address(args, base),
                force=args.force,
                progress=progress,
            )
        out, chosen, warnings = built.out, built.chosen, built.warnings
        studies, objective = args.studies, args.objective
        validate_base, specs = base, list(args.policies)
        final_seeds = args.final_seeds if args.final_seeds is not None else args.seeds
    t = Table(title=f"each policy tuned on its own ({objective} on the validation split)")
    t.add_column("policy", overflow="fold")
    t.add_column("chosen", overflow="fold")
    t.add_column("median of best" if studies else "objective", justify="right", no_wrap=True)
    if studies:
        t.add_column("best per study", overflow="fold")
    for label, c in chosen.items():
        settings = ", ".join(
            f"{k.split('.')[-1]}={v:g}" if isinstance(v, float) else f"{k.split('.')[-1]}={v}"
            for k, v in c["settings"].items()
        )
        value = "diverged" if c["diverged"] else f"{c['objective']:.4g}"
        if studies:
            each = ", ".join(f"{v:.4g}" for v in c["best_per_study"])
            t.add_row(label, f"{settings} (study {c['study']})", value, each)
        else:
            t.add_row(label, settings, value)

    def choices() -> None:  # after the verdict, before the results table
        _console().print(t)
        for warning in warnings:
            err.print(f"[bold red]warning:[/] {warning}", soft_wrap=True)

    code = _report(out, choices, built=built)
    if args.validate:
        from hybridsgd.report.compare import label_of
        from hybridsgd.tuning import _override

        per_spec = {
            s: [_override(k, v) for k, v in chosen[label_of(s)]["settings"].items()] for s in specs
        }
        _validate_sweep(validate_base, specs, per_spec, args.validate, final_seeds, out)
    return code


def _check_validate(args: argparse.Namespace, base) -> None:
    """--validate needs a target (validate compares times to it): said before anything runs."""
    if args.validate and base.run.target_accuracy is None:
        raise ConfigError(
            "--validate", "compares times to a target: set run.target_accuracy (e.g. 0.9)"
        )


def _validate_sweep(base, specs, settings, backend: str, seeds: int, out: Path) -> None:
    """``--validate BACKEND`` after a comparison or a tuning: each policy (with its
    settings) real and simulated, as ``hybridsgd validate``; written to out/validate/."""
    from hybridsgd import profiling

    cfg = base.replace(f"run.backend={backend}")
    with _sweep_bar(Console(stderr=True), "validating", unit="policies") as bar:
        bar(0, len(specs))
        table, fit = profiling.validate(
            cfg, list(specs), seeds=seeds, out=out / "validate", settings=settings
        )
        bar(len(specs), len(specs))
    table.to_csv(out / "validate" / "validate.csv", index=False)
    _print_validation(table, fit, seeds)


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


def _profile(args: argparse.Namespace) -> int:
    """``profile``: measure real workers or read a real run; ``--fit`` a timing model."""
    from hybridsgd import profiling
    from hybridsgd.config import Config
    from hybridsgd.timing.fit import fit_timing

    out = Path(args.out)
    if args.source and args.config:
        raise ConfigError("--from", "give a config to measure, or --from RUN_DIR, not both")
    if args.source:
        table = profiling.read_run(args.source)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "profile.csv", index=False)
    elif args.config:
        overrides = list(args.overrides) + ([f"run.backend={args.backend}"] if args.backend else [])
        cfg = Config.load(args.config, overrides)
        table = profiling.measure(cfg, args.minibatches, out)
    else:
        raise ConfigError("config", "give a TOML config file to measure, or --from RUN_DIR")
    stats = profiling.per_worker(table)
    t = Table(title=f"job times per worker, seconds ({out / 'profile.csv'})")
    for col in ("worker", "jobs", "mean", "p50", "p90", "p99"):
        t.add_column(col, justify="right")
    for w, r in stats.iterrows():
        t.add_row(str(w), str(int(r.jobs)), *(f"{r[c]:.4g}" for c in ("mean", "p50", "p90", "p99")))
    console = _console()
    console.print(t)
    if args.fit:
        fit = fit_timing(table, str(out / "profile.csv"))
        for line in profiling.describe(fit):
            console.print(line, markup=False, highlight=False)
        (out / "timing.toml").write_text(fit.toml())
        profiling.plot_fit(table, fit, out / "fit.png")
        console.print(fit.toml(), markup=False, highlight=False)
        console.print(f"wrote {out / 'timing.toml'} and {out / 'fit.png'}", markup=False,
                      highlight=False)  # fmt: skip
    return 0


def _validate(args: argparse.Namespace) -> int:
    """``validate``: the simulator with a fitted timing against real runs, per policy."""
    import tomllib

    from hybridsgd import profiling
    from hybridsgd.config import Config

    if not args.policies:
        raise ConfigError("--policy", "give at least one, e.g. --policy sync --policy async")
    if args.seeds < 1:
        raise ConfigError("--seeds", f"must be >= 1 (got {args.seeds})")
    overrides = list(args.overrides) + ([f"run.backend={args.backend}"] if args.backend else [])
    cfg = Config.load(args.config, overrides)
    timing = None
    if args.timing:
        try:
            timing = tomllib.loads(Path(args.timing).read_text())["timing"]
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                "--timing", f"{args.timing}: no [timing] section read ({exc})"
            ) from None
    with _sweep_bar(Console(stderr=True), "validating", unit="policies") as bar:
        bar(0, len(args.policies))
        table, fit = profiling.validate(cfg, list(args.policies), seeds=args.seeds,
                                        minibatches=args.minibatches, out=Path(args.out),
                                        timing=timing)  # fmt: skip
        bar(len(args.policies), len(args.policies))
    _print_validation(table, fit, args.seeds)
    return 0


def _print_validation(table, fit, seeds: int) -> None:
    """The table of ``validate`` (and ``--validate``): simulated against real per policy."""
    import math

    from hybridsgd import profiling

    console = _console()
    if fit is not None:
        for line in profiling.describe(fit):
            console.print(line, markup=False, highlight=False)
    t = Table(title=f"simulated (fitted timing) against real, {seeds} seed(s), means")
    for col in ("policy", "updates/s sim", "real", "error", "time to target sim", "real", "error"):
        t.add_column(col, justify="left" if col == "policy" else "right", overflow="fold")
    for r in table.itertuples():
        err = "-" if math.isnan(r.time_to_target_error) else f"{r.time_to_target_error:+.1%}"
        t.add_row(r.policy, f"{r.throughput_sim:.4g}", f"{r.throughput_real:.4g}",
                  f"{r.throughput_error:+.1%}", f"{r.time_to_target_sim:.4g}",
                  f"{r.time_to_target_real:.4g}", err)  # fmt: skip
    console.print(t)
    agree = table.attrs["places_agree"]
    console.print(
        f"rankings by time to target agree in {agree} of {len(table)} places "
        f"(simulated: {', '.join(table.attrs['ranking_sim'])}; real: "
        f"{', '.join(table.attrs['ranking_real'])})",
        markup=False, highlight=False,
    )  # fmt: skip


def _perf_profile(args: argparse.Namespace) -> int:
    """``perf-profile DIR...``: performance profiles across tunings, one workload each."""
    import json

    import pandas as pd

    from hybridsgd.report import profiles

    rows = {}
    for d in args.dirs:
        path = Path(d) / "tune.json"
        try:
            record = json.loads(path.read_text())
            rows[str(d)] = {p: float(c["objective"]) for p, c in record["chosen"].items()}
        except FileNotFoundError:
            raise ConfigError(
                "perf-profile",
                f"{d} holds no tuning ({path} is missing): give directories of hybridsgd tune",
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                "perf-profile", f"{path} cannot be read ({exc}): rerun hybridsgd tune"
            ) from None
    scores = pd.DataFrame.from_dict(rows, orient="index")
    if scores.isna().any().any():
        missing = [
            f"{p} in {w}" for w in scores.index for p in scores.columns if pd.isna(scores.at[w, p])
        ]
        raise ConfigError(
            "perf-profile", f"every tuning needs the same policies; missing: {', '.join(missing)}"
        )
    base = args.baseline or str(scores.columns[0])
    if base not in scores.columns:
        raise ConfigError(
            "--baseline",
            f"{base!r} is not a policy of these tunings; use one of: {', '.join(scores.columns)}",
        )
    profiles.plot(scores, args.out, title="performance profiles", problems="workloads")
    t = Table(title=f"geometric-mean speed-up over {base} across {len(scores)} workload(s)")
    t.add_column("policy", overflow="fold")
    t.add_column("speed-up", justify="right")
    t.add_column("workloads both finished", justify="right")
    t.add_column("wins", justify="right")
    wins = profiles.profile(scores, [1.0]).iloc[0]
    for p, (s, n) in profiles.geomean_speedup(scores, base).items():
        t.add_row(p, "-" if n == 0 else f"{s:.3g}x", str(n), f"{wins[p] * len(scores):.0f}")
    _console().print(t)
    print(f"wrote {args.out}")
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


def _console() -> Console:
    """stdout; at least 80 columns wide when it is not a terminal (a pipe, a file)."""
    console = Console()
    return console if console.is_terminal else Console(width=max(console.width, 80))


#: what the comparison table's columns mean (printed under it, and in the README)
COLUMNS = {
    "loss": "final test loss",
    "acc": "final test accuracy",
    "reached": "seeds that reached the target accuracy",
    "time": "mean time to the target over the seeds that reached it",
    "stale": "mean staleness of applied gradients, in versions",
    "idle": "share of worker time spent waiting",
}


def report_table(summary, out: Path) -> tuple[Table, str]:
    """The mean over seeds per policy, with short headers explained in the caption: a
    policy label wraps instead of being cut, and columns a run has no values for (accuracy
    on a task without it, the target columns without a target) are left out."""
    import math

    from hybridsgd.report.build import mean_table

    table = mean_table(summary)
    seeds = summary.groupby("policy", sort=False).seed.count()
    has_acc = bool(table.final_accuracy.notna().any())
    target = summary["target_accuracy"].max() if "target_accuracy" in summary else math.nan
    has_target = not math.isnan(target) or bool((table.reached > 0).any())
    cols = ["loss"] + (["acc"] if has_acc else []) + (["reached", "time"] if has_target else [])
    cols += ["stale", "idle"]
    words = dict(COLUMNS)
    if not math.isnan(target):
        words["reached"] = f"seeds that reached {target:.0%} test accuracy"
    if any(str(p).startswith(("ssp", "psp")) for p in table.index):
        words["stale"] += (
            " (ssp's and psp's bound s counts clock ticks between workers, not versions, "
            "so staleness may exceed it)"
        )
    caption = "; ".join(f"{c}: {words[c]}" for c in cols)
    t = Table(title=f"mean over seeds ({out})")
    t.add_column("policy", overflow="fold")
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    for name, r in table.iterrows():
        cells = {
            "loss": f"{r.final_loss:.4g}",
            "acc": f"{r.final_accuracy:.3f}",
            "reached": f"{int(r.reached)}/{seeds[name]}",
            "time": "-" if math.isnan(r.time_to_target) else f"{r.time_to_target:.4g}",
            "stale": f"{r.mean_staleness:.2f}",
            "idle": f"{r.idle_fraction:.2f}",
        }
        t.add_row(str(name), *(cells[c] for c in cols))
    return t, caption


def _curvature(args: argparse.Namespace) -> float:
    """--curvature for recommend (with --lr)."""
    from hybridsgd.forecast import curvature_of

    h = curvature_of(args.curvature, args.seed)
    if args.lr is not None and not args.lr > 0:
        raise ConfigError("--lr", f"must be > 0 (got {args.lr})")
    return h


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _recommend(args: argparse.Namespace) -> int:
    import json
    import math

    from hybridsgd.analysis.recommend import recommend
    from hybridsgd.config import Config
    from hybridsgd.runner import build_cluster

    sets = [
        f"policy.workers={args.workers}",
        f"timing.compute={args.compute}",
        f"timing.comm={args.comm}",
        f"task.batch_size={args.batch}",
    ]
    cfg = Config.from_dict({}, sets + ([f"timing.speed={args.speed}"] if args.speed else []))
    h = _curvature(args)
    cluster = build_cluster(cfg)
    speeds = None if (cluster.speeds == 1).all() else cluster.speeds
    noise = None
    from hybridsgd.forecast import noise_scale_of

    if args.noise_scale is not None:
        noise = noise_scale_of(args.noise_scale, args.batch, args.seed)
    elif args.lr is None and not _is_number(args.curvature):
        noise = noise_scale_of(args.curvature, args.batch, args.seed)  # the same task's
    with _sweep_bar(Console(stderr=True), "predicting", unit="candidates") as bar:
        ranked = recommend(args.workers, cluster.compute, args.lr, h, cluster.comm, speeds,
                           args.batch, progress=bar, noise_scale=noise)  # fmt: skip
    best = _optimum(args, cfg) if args.epsilon is not None else None
    vs = [_vs_optimum(args, c.prediction, best) if best else None for c in ranked]
    if args.json:
        rows = [
            {"policy": c.spec, "lr": c.lr, "time_to_1000x": c.time_to_1000x, "reason": c.reason}
            | ({"vs_optimal": r} if best else {})
            for c, r in zip(ranked, vs, strict=True)
        ]
        from hybridsgd.trace import json_safe

        extra = ({"optimal": best} if best else {}) | (
            {"noise_scale": noise} if noise is not None else {}
        )
        print(json.dumps(json_safe({"curvature": h, "ranking": rows} | extra)))
        return 0
    at = f"lr {args.lr:g}" if args.lr is not None else "each policy at its own best lr"
    t = Table(
        title=f"W = {args.workers}, {args.compute}, {at}, curvature {h:.4g}"
        + (f", noise scale {noise:.4g}" if noise is not None else "")
    )
    t.add_column("#", justify="right", no_wrap=True)
    t.add_column("policy", overflow="fold")
    t.add_column("lr", justify="right", no_wrap=True)
    t.add_column("time", justify="right", no_wrap=True)
    if best:
        t.add_column("vs opt", justify="right", no_wrap=True)
    t.add_column("why", overflow="fold")
    for i, (c, r) in enumerate(zip(ranked, vs, strict=True), 1):
        when = (
            ("no progress" if c.reason.startswith("noise-dominated") else "diverges")
            if math.isinf(c.time_to_1000x) and c.prediction
            else ("-" if math.isinf(c.time_to_1000x) else f"{c.time_to_1000x:.4g}")
        )
        ratio = [f"{r:.3g}x" if r else "-"] if best else []
        t.add_row(str(i), c.spec, f"{c.lr:.3g}" if c.lr else "-", when, *ratio, c.reason)
    console = _console()
    console.print(t)
    console.print(
        "time: predicted time until the loss falls 1000-fold along the curvature; model: "
        "linearised delay model stepped from the initial point with each candidate's "
        + (
            "staleness, each update's count scaled by 1 + B_noise / (samples it applies) "
            "(McCandlish et al. 2018; docs/analysis.md)"
            if noise is not None
            else "staleness, no gradient noise (docs/analysis.md; add --noise-scale)"
        ),
        markup=False,
        highlight=False,
    )
    if best:
        _print_optimal(best, per_policy=False)
        console.print(
            "  vs opt: a fresh-gradient policy's time to epsilon over that optimum, same "
            "constants; - for policies with stale gradients",
            markup=False, highlight=False,
        )  # fmt: skip
    # the answer on a line of its own, never wrapped or cut: it is meant to be copied
    console.print(f"recommended: --policy {ranked[0].spec}", markup=False, soft_wrap=True,
                  highlight=False)  # fmt: skip
    if not args.check:
        console.print(
            "how far to trust it: its #1 was within 20% of the tuned best in 3 of 6 held-out "
            "cases (docs/analysis.md); --check N tunes the top N in the simulator",
            markup=False, highlight=False,
        )  # fmt: skip
    if args.check:
        _check(args, cfg, ranked, console)
    return 0


def _check(args: argparse.Namespace, cfg, ranked, console) -> None:
    """``recommend --check N``: the top N tuned in the simulator, against the prediction."""
    import math

    from hybridsgd.tuning import check_ranking

    top = [c for c in ranked if math.isfinite(c.time_to_1000x)][: args.check]
    task = args.task or (None if _is_number(args.curvature) else args.curvature)
    if task is None:
        raise ConfigError("--task", "--check trains a task: name it (e.g. --task mlp-digits)")
    base = cfg.replace(
        f"task.name={task}", f"run.time={args.check_time}", "run.updates=3000",
        f"run.target_accuracy={args.target}", f"run.seed={args.seed}",
    )  # fmt: skip
    with _sweep_bar(Console(stderr=True), "checking") as bar:
        table = check_ranking(base, [c.spec for c in top], [c.time_to_1000x for c in top],
                              Path(args.check_out), progress=bar)  # fmt: skip
    t = Table(title=f"--check: the top {len(top)} tuned in the simulator ({args.check_out})")
    for col in ("policy", "predicted #", "predicted time", "simulated #", "tuned lr",
                f"time to {args.target:g}"):  # fmt: skip
        t.add_column(col, justify="left" if col == "policy" else "right", overflow="fold")
    for r in table.itertuples():
        t.add_row(r.policy, str(r.predicted_rank), f"{r.predicted_time:.4g}",
                  str(r.simulated_rank), f"{r.tuned_lr:g}",
                  f"{r.tuned_time:.4g}" if math.isfinite(r.tuned_time) else "never")  # fmt: skip
    console.print(t)
    within = table.attrs["first_within_20"]
    console.print(
        f"agreement: Spearman rank correlation {table.attrs['spearman']:.2f}; the predicted "
        f"#1 is {'within' if within else 'NOT within'} 20% of the tuned best"
        + ("" if within else ": trust the simulated ranking, not the predicted one"),
        markup=False, highlight=False,
    )  # fmt: skip


def _noise_scale(args: argparse.Namespace) -> int:
    import json
    import math

    from hybridsgd.analysis.noise_scale import updates_factor
    from hybridsgd.config import Config
    from hybridsgd.forecast import check_along_run, noise_scale_along_run
    from hybridsgd.policies import REGISTRY

    cfg = Config.load(args.config, args.overrides)
    check_along_run(args.updates, args.points, args.minibatches)
    with _sweep_bar(Console(stderr=True), "estimating", unit="points") as bar:
        points = noise_scale_along_run(
            cfg, args.updates, args.points, args.minibatches, bar, hessian=args.hessian
        )
    entry = REGISTRY[cfg.policy.name]
    per_update = cfg.task.batch_size * (
        entry.min_gradients(cfg.policy) if entry.family == "sync" else 1
    )
    if args.json:
        from hybridsgd.trace import json_safe

        print(json.dumps(json_safe({"task": cfg.task.name, "points": points,
                                    "samples_per_update": per_update})))  # fmt: skip
        return 0

    def span(low: float, high: float) -> str:
        return f"{low:.3g} - " + ("inf" if math.isinf(high) else f"{high:.3g}")

    t = Table(title=f"gradient noise scale of {cfg.task.name} along {cfg.policy.name}")
    cols = ["update", "loss", "B_simple", "95% interval"]
    cols += ["B_noise", "95% interval"] if args.hessian else ["|G|^2", "tr Sigma"]
    for col in cols:
        t.add_column(col, justify="right", no_wrap=True)
    for p in points:
        cells = [str(p["update"]), f"{p['loss']:.4g}", f"{p['b_simple']:.4g}",
                 span(p["low"], p["high"])]  # fmt: skip
        if args.hessian:
            cells += [f"{p['b_noise']:.4g}", span(p["noise_low"], p["noise_high"])]
        else:
            cells += [f"{p['grad_norm2']:.3g}", f"{p['trace_sigma']:.3g}"]
        t.add_row(*cells)
    console = _console()
    console.print(t)
    # B_noise when measured (what the models take), else its Hessian-free proxy B_simple
    name, key, lo, hi = (
        ("B_noise", "b_noise", "noise_low", "noise_high")
        if args.hessian
        else ("B_simple", "b_simple", "low", "high")
    )
    start = points[0]
    lines = [
        f"critical batch size ~ {name} = {start[key]:.4g} samples at the start (95%: "
        f"{span(start[lo], start[hi])}; McCandlish et al. 2018)"
        + ("" if args.hessian else "; B_simple equals B_noise when the Hessian is close to a "
           "multiple of the identity, and --hessian measures B_noise itself"),
    ]  # fmt: skip
    if len(points) > 1:
        end = points[-1]
        lines.append(
            f"after {end['update']} updates: {end[key]:.4g} (95%: {span(end[lo], end[hi])})"
        )
    lines += [
        f"this config's update applies {per_update} samples: it needs "
        f"{updates_factor(start[key], per_update):.3g}x the updates of an infinite "
        "batch at the start (1 + B_noise / B)",
        f"pass it on: hybridsgd predict/recommend --noise-scale N, with N the {name} near the "
        "loss you train to",
    ]
    seen = args.minibatches * cfg.task.batch_size
    if any(p[key] > seen / 2 for p in points):
        lines.append(
            f"note: an estimate above half the {seen} samples an estimate sees is poorly "
            "resolved; raise --minibatches"
        )
    for line in lines:
        console.print(line, markup=False, highlight=False)
    return 0


def _print_prediction(pred, h, measured) -> None:
    console = Console()
    t = Table(title=f"{pred.policy}, W = {pred.workers}: predicted", show_header=bool(measured))
    cols = ["quantity", "predicted"] + (["simulated", "error"] if measured else [])
    for col in cols:
        t.add_column(col)

    def row(label: str, value: float, key: str | None = None, fmt: str = ".4g") -> None:
        cells = [label, format(value, fmt)]
        if measured and key in measured:
            m = measured[key]
            err = (value - m) / m if m else value - m
            cells += [format(m, fmt), f"{err:+.1%}"]
        elif measured:
            cells += ["", ""]
        t.add_row(*cells)

    q = ", ".join(f"{k} {v:.4g}" for k, v in pred.update_time_quantiles.items())
    row(
        "mean time per update" + (f" ({q})" if q else ""), pred.mean_update_time, "mean_update_time"
    )
    row("gradients per update", pred.quorum)
    row("throughput (samples / unit time)", pred.throughput, "throughput")
    row("wasted fraction of started work", pred.wasted_fraction, "wasted_fraction", ".3f")
    sq = ", ".join(f"{k} {v:g}" for k, v in pred.staleness_quantiles.items())
    row(f"mean staleness ({sq})", pred.mean_staleness, "mean_staleness")
    if measured:  # a whole run's mean is low under heavy tails: its slowest are still in flight
        row(
            "  in steady state (reads 5-50% in)",
            pred.mean_staleness,
            "steady_state_staleness",
        )
    console.print(t)
    if pred.regimes:
        r = Table(title="per regime")
        for col in ("regime", "updates", "time per update", "gradients per update", "staleness"):
            r.add_column(col, justify="right")
        for row_ in pred.regimes:
            r.add_row(
                row_["regime"],
                f"{row_['updates']:,}",
                f"{row_['mean_update_time']:.4g}",
                f"{row_['gradients_per_update']:.3g}",
                f"{row_['mean_staleness']:.3g}",
            )
        console.print(r)
    for key, how in pred.method.items():
        console.print(f"  {key}: {how}", markup=False, highlight=False)
    for a in pred.assumptions:
        console.print(f"  assumes: {a}", markup=False, highlight=False)
    st = pred.stability
    if st is not None:
        s = Table(title=f"stability at curvature h = {h:.4g} ({st.model} model)", show_header=False)
        s.add_row("stable", "yes" if st.stable else "NO: diverges")
        s.add_row("convergence rate (per unit time)", f"{st.convergence_rate:.4g}")
        s.add_row("largest stable learning rate", f"{st.max_stable_lr:.4g}")
        if st.best_workers is not None:
            s.add_row("fastest worker count (up to 2W)", str(st.best_workers))
            s.add_row("adding workers slows training from", str(st.workers_stop_helping or "-"))
            s.add_row("diverges from", str(st.workers_unstable or "-"))
        if st.continuous:
            c = st.continuous
            s.add_row(
                "continuous model (Yu, Chen & Poor)",
                f"{'stable' if c['stable'] else 'unstable'}, rate {c['convergence_rate']:.4g}, "
                f"largest stable lr {c['max_stable_lr']:.4g}",
            )
        console.print(s)


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


if __name__ == "__main__":
    entry()
