"""``hybridsgd compare`` and ``hybridsgd tune``: sweeps of policies, their report and
``--validate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hybridsgd.cli.common import (
    LOG_HELP,
    _console,
    _policy_names,
    _policy_table,
    _set_option,
    _sweep_bar,
    _with_logs,
)
from hybridsgd.cli.render import _print_validation
from hybridsgd.cli.reports import _report
from hybridsgd.errors import ConfigError


def add(sub) -> None:
    """Add this module's commands to the ``hybridsgd`` parser."""
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
    m.set_defaults(func=_compare)
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
    t.set_defaults(func=_tune)


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
    from hybridsgd.app.compare import resume_compare
    from hybridsgd.config import Config

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
    """--ray-address, or run.ray.address for simulated runs (a Ray backend's runs use it
    themselves)."""
    if args.ray_address:
        return args.ray_address
    return base.run.ray.address if base.run.backend == "sim" else ""


def _tune(args: argparse.Namespace, err: Console) -> int:
    from hybridsgd import api
    from hybridsgd.app.tuning import parse_grid, resumed_plan, tune
    from hybridsgd.config import Config

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
        from hybridsgd.app.inputs import label_of
        from hybridsgd.app.tuning import _override

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
    table.attrs["runs"].to_csv(out / "validate" / "validate-runs.csv", index=False)
    _print_validation(table, fit, seeds)
