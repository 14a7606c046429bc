"""``hybridsgd recommend``: policies ranked by predicted time, ``--check`` against tuned runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hybridsgd.cli.common import _bound_flags, _console, _is_number, _noise_flag, _sweep_bar
from hybridsgd.cli.predict import _curvature, _optimum, _sized, _vs_optimum
from hybridsgd.cli.render import _print_optimal
from hybridsgd.errors import ConfigError


def add(sub) -> None:
    """Add this module's command to the ``hybridsgd`` parser."""
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
        "--steps", default="1", metavar="H,H,...",
        help="local steps a job to rank too, e.g. 1,4,16,64: every policy but the hybrid "
        "as Local SGD with H inner SGD steps (default 1: none)",
    )  # fmt: skip
    c.add_argument(
        "--params", metavar="N|TASK",
        help="the model the messages carry: its parameter count, or a task name (needed "
        "with a link: its time depends on the bytes)",
    )  # fmt: skip
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
    c.set_defaults(func=lambda args, err: _recommend(args))


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
    steps = _steps(args.steps)
    if args.check and max(steps) > 1:
        raise ConfigError(
            "--check",
            "tunes policies at one step a job; rank H without --check, and tune it with "
            "`hybridsgd tune CONFIG --grid worker.steps=[...]`",
        )
    _sized(args)
    h = _curvature(args)
    from hybridsgd.forecast import message_bytes_of

    cluster = build_cluster(cfg, message_bytes_of(cfg, args.params) or 0)
    speeds = None if (cluster.speeds == 1).all() else cluster.speeds
    noise = None
    from hybridsgd.forecast import noise_scale_of

    if args.noise_scale is not None:
        noise = noise_scale_of(args.noise_scale, args.batch, args.seed)
    elif args.lr is None and not _is_number(args.curvature):
        noise = noise_scale_of(args.curvature, args.batch, args.seed)  # the same task's
    with _sweep_bar(Console(stderr=True), "predicting", unit="candidates") as bar:
        ranked = recommend(args.workers, cluster.compute, args.lr, h, cluster.comm, speeds,
                           args.batch, progress=bar, noise_scale=noise, steps=steps,
                           seed=args.seed)  # fmt: skip
    best = _optimum(args, cfg) if args.epsilon is not None else None
    vs = [_vs_optimum(args, c.prediction, best) if best else None for c in ranked]
    if args.json:
        rows = [
            {
                "policy": c.spec,
                "steps": c.steps,
                "lr": c.lr,
                "time_to_1000x": c.time_to_1000x,
                "reason": c.reason,
            }
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
        t.add_row(str(i), c.label, f"{c.lr:.3g}" if c.lr else "-", when, *ratio, c.reason)
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
    first = ranked[0]
    local = f" --steps {first.steps}" if first.steps > 1 else ""
    console.print(f"recommended: --policy {first.spec}{local}", markup=False, soft_wrap=True,
                  highlight=False)  # fmt: skip
    if max(steps) > 1:
        console.print(
            "  H > 1: Local SGD, inner SGD at the lr shown, the server's SGD at lr 1 "
            "([worker] steps = H, lr = that lr; [optimizer] lr = 1; docs/local-steps.md)",
            markup=False, highlight=False,
        )  # fmt: skip
    if not args.check:
        console.print(
            "how far to trust it: its #1 was within 20% of the tuned best in 3 of 6 held-out "
            "cases (docs/analysis.md); --check N tunes the top N in the simulator",
            markup=False, highlight=False,
        )  # fmt: skip
    if args.check:
        _check(args, cfg, ranked, console)
    return 0


def _steps(text: str) -> list[int]:
    """``--steps 1,4,16``: the H values to rank."""
    try:
        steps = [int(v) for v in text.split(",")]
    except ValueError:
        steps = []
    if not steps or min(steps) < 1:
        raise ConfigError("--steps", f"must be whole numbers >= 1, e.g. 1,4,16 (got {text!r})")
    return steps


def _check(args: argparse.Namespace, cfg, ranked, console) -> None:
    """``recommend --check N``: the top N tuned in the simulator, against the prediction."""
    import math

    from hybridsgd.app.tuning import check_ranking

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
