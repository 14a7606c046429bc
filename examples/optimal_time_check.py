"""Measured time to an epsilon-stationary point against Tyurin & Richtárik's optimal time
(docs/reproductions.md, sections 6 and 7).

W = 16 workers of four speed classes (1x, 2x, 8x and 32x the fastest's mean time) run
each policy in the simulator, on two tasks:

* ``quadratic``: least squares, whose smoothness L, gap Delta and gradient noise sigma^2
  are computed exactly in float64;
* ``teacher``: a teacher-student stream (a two-layer MLP student), whose L is estimated by
  power iteration at x0, sigma^2 from 256 minibatch gradients at x0, and Delta bounded by
  f(x0) (cross-entropy is >= 0).

A policy's time is the first update time at which ||grad f(x)||^2 <= epsilon, with the
gradient of the whole loss (the quadratic's 4,000 training samples; for the teacher, an
unbiased estimate over 16,384 test samples, see GradNorm) at the server's parameters after
every update: the example replaces the task's evaluation by that squared norm, so the time
is exact, not rounded to an evaluation grid. Rennala's B and Ringmaster's R are
sigma^2 / epsilon, and m_sync's m is the bound's m*, as the papers set them.

The protocol (docs/tuning.md's, for an optimisation claim): each policy picks its own lr
from a grid, per epsilon, on a tuning seed (run.seed = 0). The chosen lr then runs on 3
fresh seeds (1000-1002: other minibatches and other timing draws), which give the table's
mean and spread. Cells are compared with a 95% interval paired by seed
(hybridsgd.report.verdict); "tie" when it covers zero. A run that has not crossed by
``cap`` x T_opt counts as missed.

The bound holds up to a constant factor, so what can be compared is measured / T_opt across
policies and across epsilon: a method that attains the bound keeps the ratio flat as
epsilon shrinks, and one that does not drifts away from it.

    python examples/optimal_time_check.py                 # both tasks, about 11 minutes
    python examples/optimal_time_check.py quadratic       # one task
    python examples/optimal_time_check.py --quick --out DIR   # a check (about 12 s)

``--out DIR`` writes results.json and results.md (the tables of docs/reproductions.md).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import hybridsgd as h
from hybridsgd.analysis import largest_eigenvalue
from hybridsgd.analysis.noise_scale import estimate
from hybridsgd.analysis.optimal import Problem, optimal_time
from hybridsgd.analysis.prediction import worker_cycles
from hybridsgd.report.verdict import verdict
from hybridsgd.runner import build_cluster
from hybridsgd.tasks import build_task
from hybridsgd.tasks.stream import TEST_BASE

SPEEDS = "1x4,2x4,8x4,32x4"  # time multipliers: the slowest workers are 32x the fastest
TUNING_SEED = 0
SEEDS = (1000, 1001, 1002)
SETTINGS = {
    # task: (lr grid, epsilons as fractions of ||grad f(x0)||^2, time cap as a fraction of
    # T_opt)
    "quadratic": ([0.03, 0.1, 0.3, 1.0], [1 / 100, 1 / 300, 1 / 1000], 0.4),
    "teacher": ([0.03, 0.1, 0.3, 1.0], [1 / 2, 1 / 4], 0.4),
}
QUICK = {"quadratic": ([0.1, 0.3], [1 / 100], 0.4)}
SYNC, ASYNC, M_SYNC, RENNALA = "sync", "async", "m_sync, m = m*", "rennala, B = s2/eps"
RINGMASTER, STOPS = "ringmaster, R = s2/eps", "ringmaster, R = s2/eps, stops"
# the pairs the docs' verdicts rest on: many small updates against the bound's method,
# Ringmaster against async, and m-Synchronous against Rennala (section 7)
PAIRS = [(ASYNC, RENNALA), (RINGMASTER, ASYNC), (M_SYNC, RENNALA)]


def base(task: str, policy: dict, lr: float, until: float, seed: int = TUNING_SEED) -> h.Config:
    return h.Config.from_dict(
        {
            "task": {"name": task, "batch_size": 32},
            "policy": {"workers": 16, **policy},
            "optimizer": {"lr": lr},
            "timing": {"compute": "exp:mu=1", "speed": SPEEDS},
            "run": {"time": until, "eval_every": 1, "seed": seed},
        }
    )


class GradNorm:
    """||grad f||^2 over a fixed sample set, in float64 where the loss allows it.

    On a sample (the teacher's), the squared norm of the sample's mean gradient is biased
    up by tr(Sigma) / n (0.0017 at x0 for n = 16,384, 6-12% of the epsilons here). The
    product of the gradients of the sample's two halves is unbiased, and is what is
    returned."""

    def __init__(self, task, x: torch.Tensor, y: torch.Tensor, exact: bool) -> None:
        self.task, self.x, self.y, self.exact = task, x, y, exact
        self.a, self.b = x.double(), y.double()

    def __call__(self, params: torch.Tensor) -> float:
        if self.exact:  # least squares: A^T (A x - b) / n in float64
            g = self.a.T @ (self.a @ params.double() - self.b) / len(self.a)
            return float(g @ g)
        half = len(self.x) // 2
        g1 = self.task.grad(params, self.x[:half], self.y[:half])[0].double()
        g2 = self.task.grad(params, self.x[half:], self.y[half:])[0].double()
        return float(g1 @ g2)

    def loss(self, params: torch.Tensor) -> float:
        model = self.task.load(params)
        with torch.no_grad():
            return float(self.task.loss_fn(model(self.x), self.y))


def constants(name: str, task) -> tuple[float, float, float, GradNorm]:
    """L, Delta, sigma^2 (of one worker's batch-32 gradient at x0) and the gradient norm."""
    x0 = task.initial_params()
    if name == "quadratic":
        a, b = task.x_train.double(), task.y_train.double()
        n = len(a)
        hess = a.T @ a / n
        x_star = torch.linalg.solve(hess, a.T @ b / n)

        def f(x):
            return float(0.5 * ((a @ x - b) ** 2).mean())

        per = a * (a @ x0.double() - b)[:, None]
        sigma2 = float(((per - per.mean(0)) ** 2).sum(1).mean()) / 32
        L = float(torch.linalg.eigvalsh(hess).max())
        norm = GradNorm(task, task.x_train, task.y_train, True)
        return L, f(x0.double()) - f(x_star), sigma2, norm
    x, y = task._draw(TEST_BASE + np.arange(16_384))  # the test stream, extended
    norm = GradNorm(task, x, y, False)
    sigma2 = estimate(task, x0, 32, minibatches=256).trace / 32
    return largest_eigenvalue(task), norm.loss(x0), sigma2, norm


def crossings(cfg: h.Config, task, epsilons: list[float]) -> list[float]:
    """The first update time at which ||grad f||^2 <= each epsilon (inf if never)."""
    r = h.run(cfg, task=task, progress=False)
    ev = r.trace.evals
    out = []
    for eps in epsilons:
        hit = ev.time[ev.loss <= eps]
        out.append(float(hit.iloc[0]) if len(hit) else math.inf)
    return out


def first_times(
    name: str, task, spec: dict, lr: float, seed: int, targets: list[float], limit: float
) -> list[float]:
    """Each target's first crossing, from runs of doubling length (limit / 1024 first) until
    every target is crossed or the run reaches ``limit``: runs are deterministic, so a
    shorter run is a longer one's prefix."""
    until = limit / 1024
    while True:
        ts = crossings(base(name, spec, lr, until, seed), task, targets)
        if all(math.isfinite(t) for t in ts) or until >= limit:
            return ts
        until = min(2 * until, limit)


@dataclass
class Row:
    """One policy: its lr and, per seed, time / T_opt (inf: missed) for each epsilon."""

    label: str
    lr: list[float]
    ratio: list[list[float]] = field(default_factory=list)


@dataclass
class Survey:
    name: str
    lrs: list[float]
    epsilons: list[float]
    bounds: list[tuple[float, int]]  # (T_opt, m*) per epsilon
    cap: float
    seeds: tuple[int, ...]
    task: object
    constants: dict[str, float] = field(default_factory=dict)  # L, delta, sigma2, g0
    rows: dict[str, Row] = field(default_factory=dict)

    def run(self, label: str, spec: dict, which: list[int]) -> None:
        """Tune the lr on the tuning seed for the epsilons ``which`` (per epsilon, the lr of
        the first crossing; an lr's runs stop once they pass the best time so far), then
        run each chosen lr on the fresh seeds."""
        limit = self.cap * max(self.bounds[i][0] for i in which)
        targets = [self.epsilons[i] for i in which]
        best, best_lr = [math.inf] * len(which), [math.nan] * len(which)
        for lr in self.lrs:
            stop = min(limit, max(best))
            ts = first_times(self.name, self.task, spec, lr, TUNING_SEED, targets, stop)
            for j, t in enumerate(ts):
                if t < best[j]:
                    best[j], best_lr[j] = t, lr
        n = len(self.epsilons)
        row = self.rows.setdefault(label, Row(label, [math.nan] * n, [[] for _ in range(n)]))
        for lr in sorted(set(v for v in best_lr if math.isfinite(v))):
            mine = [j for j, v in enumerate(best_lr) if v == lr]
            cells = [which[j] for j in mine]
            lim = self.cap * max(self.bounds[i][0] for i in cells)
            for seed in self.seeds:
                ts = first_times(
                    self.name, self.task, spec, lr, seed, [targets[j] for j in mine], lim
                )
                for i, t in zip(cells, ts, strict=True):
                    t_opt = self.bounds[i][0]
                    row.ratio[i].append(t / t_opt if t <= self.cap * t_opt else math.inf)
        for j, i in enumerate(which):
            row.lr[i] = best_lr[j]
            if not math.isfinite(best_lr[j]):  # no lr crossed on the tuning seed: missed
                row.ratio[i] = [math.inf] * len(self.seeds)


def survey(name: str, settings: tuple, seeds: tuple[int, ...]) -> Survey:
    lrs, fractions, cap = settings
    task = build_task(base(name, {}, 1, 1).task, 0)
    L, delta, sigma2, norm = constants(name, task)
    task.evaluate = lambda params: (norm(params), math.nan)  # what the trace records
    cluster = build_cluster(base(name, {"name": "sync"}, 1, 1))
    taus, _ = worker_cycles(cluster.compute, cluster.comm, 16, cluster.speeds)
    g0 = norm(task.initial_params())
    print(f"\n== {name}: L {L:.4g}, Delta {delta:.4g}, sigma^2 {sigma2:.4g} (batch 32), "
          f"||grad f(x0)||^2 {g0:.4g}")  # fmt: skip
    epsilons = [g0 * f for f in fractions]
    bounds = [optimal_time(taus, Problem(L, delta, sigma2, e)) for e in epsilons]
    for e, (t_opt, m) in zip(epsilons, bounds, strict=True):
        print(f"   epsilon {e:.4g}: sigma^2/epsilon {sigma2 / e:.1f}, T_opt {t_opt:.4g}, m* {m}")
    s = Survey(name, lrs, epsilons, bounds, cap, seeds, task)
    s.constants = {"L": L, "delta": delta, "sigma2": sigma2, "g0": g0}
    start = time.perf_counter()
    every_eps = list(range(len(epsilons)))
    s.run(SYNC, {"name": "sync"}, every_eps)  # sync and async do not depend on epsilon
    s.run(ASYNC, {"name": "async"}, every_eps)
    for i, (e, (_, m)) in enumerate(zip(epsilons, bounds, strict=True)):
        b = max(1, math.ceil(sigma2 / e))
        s.run(M_SYNC, {"name": "m_sync", "m": m}, [i])
        s.run(RENNALA, {"name": "rennala", "batch": b}, [i])
        s.run(RINGMASTER, {"name": "ringmaster", "delay_threshold": b}, [i])
        s.run(STOPS, {"name": "ringmaster", "delay_threshold": b, "stops": True}, [i])
    print(f"   ({time.perf_counter() - start:.0f} s)")
    return s


def cell(ratios: list[float]) -> str:
    hit = [r for r in ratios if math.isfinite(r)]
    if not hit:
        return f"> cap (0/{len(ratios)})"
    sd = f" ± {np.std(hit, ddof=1):.2g}" if len(hit) > 1 else ""
    return f"{np.mean(hit):.3g}{sd} ({len(hit)}/{len(ratios)})"


def compare(s: Survey, i: int, labels: list[str]) -> str:
    """The verdict of ``labels`` at epsilon i, on time / T_opt paired by seed."""
    frame = pd.DataFrame(
        [
            {"policy": lab, "seed": seed, "time_to_target": r if math.isfinite(r) else math.nan}
            for lab in labels
            for seed, r in zip(s.seeds, s.rows[lab].ratio[i], strict=True)
        ]
    )
    v = verdict(frame, "time-to-target")
    if v is None:
        return "none reached"
    if v.runner_up is None:
        return f"only {v.winner} reached"
    if v.reached is not None and v.reached[0] != v.reached[1]:
        a, b, n = v.reached
        return f"{v.winner} (reached on {a}/{n} seeds) over {v.runner_up} ({b}/{n})"
    ci = f"margin {v.margin:.3g} [{v.low:.3g}, {v.high:.3g}]"
    if v.tie:
        return f"tie: {v.winner} {v.winner_value:.3g}, {v.runner_up} {v.runner_up_value:.3g} ({ci})"
    return f"{v.winner} {v.winner_value:.3g} over {v.runner_up} {v.runner_up_value:.3g} ({ci})"


def tables(s: Survey) -> str:
    """Markdown: the ratio table (mean ± sd over the fresh seeds, seeds reached, the lr),
    then the verdicts per epsilon."""
    heads = [f"eps = g0/{s.constants['g0'] / e:.0f}" for e in s.epsilons]
    lines = [f"### {s.name}", "", "| policy | " + " | ".join(heads) + " |"]
    lines.append("|---" * (len(heads) + 1) + "|")
    lines.append("| T_opt (m*) | " + " | ".join(f"{t:,.4g} ({m})" for t, m in s.bounds) + " |")
    for row in s.rows.values():
        cells = [f"{cell(r)}, lr {lr:g}" if math.isfinite(lr) else cell(r)
                 for r, lr in zip(row.ratio, row.lr, strict=True)]  # fmt: skip
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    lines.append("")
    for i, head in enumerate(heads):
        lines.append(f"- {head}, first: {compare(s, i, list(s.rows))}")
        for a, b in PAIRS:
            lines.append(
                f"  - {a.split(',')[0]} against {b.split(',')[0]}: {compare(s, i, [a, b])}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tasks", nargs="*", help="quadratic, teacher (default: both)")
    parser.add_argument(
        "--quick", action="store_true", help="quadratic, one epsilon, 2 lrs, 2 seeds"
    )
    parser.add_argument("--out", type=Path, help="write results.json and results.md here")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else SETTINGS
    seeds = SEEDS[:2] if args.quick else SEEDS
    surveys = [survey(n, settings[n], seeds) for n in args.tasks or list(settings)]
    text = "\n\n".join(tables(s) for s in surveys)
    print("\n" + text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.md").write_text(text + "\n")
        data = {
            s.name: {
                **s.constants,
                "cap": s.cap,
                "epsilons": s.epsilons,
                "bounds": s.bounds,
                "seeds": list(s.seeds),
                "rows": [{"label": r.label, "lr": r.lr, "ratio": r.ratio} for r in s.rows.values()],
            }
            for s in surveys
        }
        (args.out / "results.json").write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
