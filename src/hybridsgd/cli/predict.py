"""``hybridsgd predict`` and ``noise-scale``: closed-form predictions before anything runs."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from hybridsgd.cli.common import (
    _bound_flags,
    _console,
    _noise_flag,
    _policy_names,
    _policy_table,
    _set_option,
    _sweep_bar,
)
from hybridsgd.cli.render import _print_optimal, _print_prediction
from hybridsgd.errors import ConfigError


def add(sub) -> None:
    """Add this module's commands to the ``hybridsgd`` parser."""
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
    n.set_defaults(func=lambda args, err: _noise_scale(args))
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
    q.add_argument(
        "--steps", type=int, default=1,
        help="local steps: minibatches a job computes before it sends (worker.steps)",
    )  # fmt: skip
    q.add_argument(
        "--params",
        metavar="N|TASK",
        help="the model the messages carry: its parameter count, or a task name (a link's "
        "time and the bytes per sample depend on it)",
    )
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
    q.set_defaults(func=lambda args, err: _predict(args))


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
        + ([f"worker.steps={args.steps}"] if args.steps != 1 else [])
        + ([f"timing.speed={args.speed}"] if args.speed else []),
    )
    if (args.lr is None) != (args.curvature is None):
        raise ConfigError("--lr", "stability needs both --lr and --curvature")
    if args.updates < 1:
        raise ConfigError("--updates", f"must be >= 1 (got {args.updates})")
    h = _curvature(args) if args.curvature is not None else None
    _sized(args)
    pred = predict_config(
        cfg,
        updates=args.updates,
        lr=args.lr,
        curvature=h,
        train_samples=args.train_samples,
        params=args.params,
    )
    measured = (
        simulated(cfg, args.updates, args.train_samples, args.params) if args.validate else None
    )
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


def _sized(args: argparse.Namespace) -> None:
    """A link's time needs the size of the model its messages carry (``--params``)."""
    from hybridsgd.forecast import on_link

    if args.params is None and on_link(args.comm, "--comm"):
        raise ConfigError(
            "--params",
            "a link's time depends on the message size: give the model's parameter count "
            "or a task name (e.g. --params 4810 or --params mlp-digits)",
        )


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


def _noise_scale(args: argparse.Namespace) -> int:
    import json
    import math

    from hybridsgd.analysis.noise_scale import updates_factor
    from hybridsgd.config import Config
    from hybridsgd.forecast import check_along_run, noise_scale_along_run
    from hybridsgd.policies import REGISTRY
    from hybridsgd.policies.registry import SYNC

    cfg = Config.load(args.config, args.overrides)
    check_along_run(args.updates, args.points, args.minibatches)
    with _sweep_bar(Console(stderr=True), "estimating", unit="points") as bar:
        points = noise_scale_along_run(
            cfg, args.updates, args.points, args.minibatches, bar, hessian=args.hessian
        )
    entry = REGISTRY[cfg.policy.name]
    per_update = cfg.task.batch_size * (
        entry.min_gradients(cfg.policy) if entry.family == SYNC else 1
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


def _curvature(args: argparse.Namespace) -> float:
    """--curvature for recommend (with --lr)."""
    from hybridsgd.forecast import curvature_of

    h = curvature_of(args.curvature, args.seed)
    if args.lr is not None and not args.lr > 0:
        raise ConfigError("--lr", f"must be > 0 (got {args.lr})")
    return h
