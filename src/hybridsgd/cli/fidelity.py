"""``hybridsgd profile``, ``validate`` and ``perf-profile``: real workers measured, the
simulator checked against them, tunings compared across workloads."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hybridsgd.cli.common import _console, _set_option, _sweep_bar
from hybridsgd.cli.render import _print_validation
from hybridsgd.errors import ConfigError


def add(sub) -> None:
    """Add this module's commands to the ``hybridsgd`` parser."""
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
        "--cores", default="auto", metavar="auto|C",
        help="processors the workers and the server share (timing.cores): auto, when "
        "measuring, this machine's, with worker 0 timed alone and the server's work per "
        "gradient (timing.server); 0: a processor each (a cluster of machines); with --from "
        "none unless given, and the times are then taken back to work (docs/fidelity.md)",
    )  # fmt: skip
    pr.add_argument(
        "--out", default="profile",
        help="directory for profile.csv, timing.toml and fit.png (default profile)",
    )  # fmt: skip
    pr.set_defaults(func=lambda args, err: _profile(args))
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
    va.add_argument(
        "--cores", default="auto", metavar="auto|C",
        help="processors the workers and the server share: auto calibrates the effective "
        "ones on this machine; 0: a processor each (as profile --cores)",
    )  # fmt: skip
    va.set_defaults(func=lambda args, err: _validate(args))
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
    pf.set_defaults(func=lambda args, err: _perf_profile(args))


def _profile(args: argparse.Namespace) -> int:
    """``profile``: measure real workers or read a real run; ``--fit`` a timing model."""
    from hybridsgd import profiling
    from hybridsgd.config import Config

    out = Path(args.out)
    cfg = None
    if args.source and args.config:
        raise ConfigError("--from", "give a config to measure, or --from RUN_DIR, not both")
    if args.source:
        table = profiling.read_run(args.source)
        out.mkdir(parents=True, exist_ok=True)
        table.to_csv(out / "profile.csv", index=False)
    elif args.config:
        overrides = list(args.overrides) + ([f"run.backend={args.backend}"] if args.backend else [])
        cfg = Config.load(args.config, overrides)
        _cores_flag(args.cores)
        table = profiling.measure(cfg, args.minibatches, out)
    else:
        raise ConfigError("config", "give a TOML config file to measure, or --from RUN_DIR")
    stats = profiling.per_worker(table)
    cols = ["mean", "p50", "p90", "p99"]
    cols += [c for c in ("pull_p50", "pull_p90", "push_p50", "push_p90") if c in stats]
    timed = " (pull, push: the job's messages, inside its time)" if len(cols) > 4 else ""
    t = Table(title=f"job times per worker, ms{timed} ({out / 'profile.csv'}: seconds)")
    for col in ("worker", "jobs", *(c.replace("_", " ") for c in cols)):
        t.add_column(col, justify="right")
    for w, r in stats.iterrows():
        t.add_row(str(w), str(int(r.jobs)), *(f"{r[c] * 1e3:.3g}" for c in cols))
    console = _console()
    console.print(t)
    if args.fit:
        fit, plotted = profiling.fit_profile(
            table,
            str(out / "profile.csv"),
            cfg=cfg,
            minibatches=args.minibatches,
            out=out,
            cores=_cores_flag(args.cores),
        )
        for line in profiling.describe(fit):
            console.print(line, markup=False, highlight=False)
        (out / "timing.toml").write_text(fit.toml())
        profiling.plot_fit(plotted, fit, out / "fit.png")
        console.print(fit.toml(), markup=False, highlight=False)
        console.print(f"wrote {out / 'timing.toml'} and {out / 'fit.png'}", markup=False,
                      highlight=False)  # fmt: skip
    return 0


def _cores_flag(text: str) -> float | None:
    """``--cores``: None for auto, else a number of processors >= 0."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value < float("inf")):
        raise ConfigError("--cores", f"write auto, or a number of processors >= 0 (got {text!r})")
    return value


def _validate(args: argparse.Namespace) -> int:
    """``validate``: the simulator with a fitted timing against real runs, per policy."""
    import tomllib

    from hybridsgd import profiling
    from hybridsgd.config import Config

    if not args.policies:
        raise ConfigError("--policy", "give at least one, e.g. --policy sync --policy async")
    if args.seeds < 1:
        raise ConfigError("--seeds", f"must be >= 1 (got {args.seeds})")
    cores = _cores_flag(args.cores)
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
                                        timing=timing, cores=cores)  # fmt: skip
        bar(len(args.policies), len(args.policies))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "validate.csv", index=False)
    table.attrs["runs"].to_csv(out / "validate-runs.csv", index=False)  # every run, per seed
    _print_validation(table, fit, args.seeds)
    return 0


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
