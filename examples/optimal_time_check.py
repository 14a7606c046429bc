"""Measured time to an epsilon-stationary point against Tyurin & Richtárik's optimal time
(docs/reproductions.md, section 6, "the optimal time, measured").

W = 16 workers of four speed classes (1x, 2x, 8x and 32x the fastest's mean time) run
each policy in the simulator, on two tasks:

* ``quadratic``: least squares, whose smoothness L, gap Delta and gradient noise sigma^2
  are computed exactly in float64;
* ``teacher``: a teacher-student stream (a two-layer MLP student), whose L is estimated by
  power iteration at x0, sigma^2 from 256 minibatch gradients at x0, and Delta bounded by
  f(x0) (cross-entropy is >= 0).

A policy's time is the first update time at which ||grad f(x)||^2 <= epsilon, with the
gradient of the whole loss (the quadratic's 4,000 training samples; for the teacher, an
unbiased estimate over 16,384 test samples, see GradNorm) at the server's parameters every
``eval_every`` updates: the example replaces the task's evaluation by that squared norm.
Each policy's lr is the best of a grid, its own. Rennala's B and Ringmaster's R are
sigma^2 / epsilon, and m_sync's m is the bound's m*, as the papers set them.

The bound holds up to a constant factor, so what can be compared is measured / T_opt across
policies and across epsilon: a method that attains the bound keeps the ratio flat as
epsilon shrinks, and one that does not drifts away from it.

    python examples/optimal_time_check.py            # both tasks, about 3.5 minutes
    python examples/optimal_time_check.py quadratic  # about 1.5 minutes
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch

import hybridsgd as h
from hybridsgd.analysis import largest_eigenvalue
from hybridsgd.analysis.noise_scale import estimate
from hybridsgd.analysis.optimal import Problem, optimal_time
from hybridsgd.analysis.prediction import worker_cycles
from hybridsgd.runner import build_cluster
from hybridsgd.tasks import build_task
from hybridsgd.tasks.stream import TEST_BASE

SPEEDS = "1x4,2x4,8x4,32x4"  # time multipliers: the slowest workers are 32x the fastest
SETTINGS = {
    # task: (lr grid, epsilons as fractions of ||grad f(x0)||^2, time cap as a fraction of
    # T_opt, eval_every)
    "quadratic": ([0.03, 0.1, 0.3, 1.0], [1 / 100, 1 / 300, 1 / 1000], 0.4, 1),
    "teacher": ([0.03, 0.1, 0.3, 1.0], [1 / 2, 1 / 4], 0.4, 10),
}


def base(task: str, policy: dict, lr: float, until: float, eval_every: int) -> h.Config:
    return h.Config.from_dict(
        {
            "task": {"name": task, "batch_size": 32},
            "policy": {"workers": 16, **policy},
            "optimizer": {"lr": lr},
            "timing": {"compute": "exp:mu=1", "speed": SPEEDS},
            "run": {"time": until, "eval_every": eval_every},
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


def survey(name: str) -> None:
    lrs, fractions, cap, every = SETTINGS[name]
    task = build_task(base(name, {}, 1, 1, 1).task, 0)
    L, delta, sigma2, norm = constants(name, task)
    task.evaluate = lambda params: (norm(params), math.nan)  # what the trace records
    cluster = build_cluster(base(name, {"name": "sync"}, 1, 1, 1))
    taus, _ = worker_cycles(cluster.compute, cluster.comm, 16, cluster.speeds)
    g0 = norm(task.initial_params())
    print(f"\n== {name}: L {L:.4g}, Delta {delta:.4g}, sigma^2 {sigma2:.4g} (batch 32), "
          f"||grad f(x0)||^2 {g0:.4g}")  # fmt: skip
    epsilons = [g0 * f for f in fractions]
    bounds = [optimal_time(taus, Problem(L, delta, sigma2, e)) for e in epsilons]
    for e, (t_opt, m) in zip(epsilons, bounds, strict=True):
        print(f"   epsilon {e:.4g}: sigma^2/epsilon {sigma2 / e:.1f}, T_opt {t_opt:.4g}, m* {m}")
    # (label, policy) per epsilon; sync and async do not depend on epsilon
    rows: dict[str, list[float]] = {}
    lr_of: dict[str, list[float]] = {}

    def tune(label: str, spec: dict, which: list[int]) -> None:
        """The best lr's crossing times. Each lr runs for doubling lengths of time, until it
        crosses every epsilon, or passes the best time so far, or the cap: runs are
        deterministic, so a shorter run is a longer one's prefix."""
        limit = cap * max(bounds[i][0] for i in which)
        best = [math.inf] * len(which)
        best_lr = [math.nan] * len(which)
        targets = [epsilons[i] for i in which]
        for lr in lrs:
            until = limit / 1024
            while True:
                ts = crossings(base(name, spec, lr, until, every), task, targets)
                stop = min(limit, max(best))
                if all(math.isfinite(t) for t in ts) or until >= stop:
                    break
                until = min(2 * until, stop)
            for j, t in enumerate(ts):
                if t < best[j]:
                    best[j], best_lr[j] = t, lr
        for j, i in enumerate(which):
            rows.setdefault(label, [math.nan] * len(epsilons))[i] = best[j]
            lr_of.setdefault(label, [math.nan] * len(epsilons))[i] = best_lr[j]

    start = time.perf_counter()
    every_eps = list(range(len(epsilons)))
    tune("sync", {"name": "sync"}, every_eps)
    tune("async", {"name": "async"}, every_eps)
    for i, (e, (_, m)) in enumerate(zip(epsilons, bounds, strict=True)):
        s = max(1, math.ceil(sigma2 / e))
        tune("m_sync, m = m*", {"name": "m_sync", "m": m}, [i])
        tune("rennala, B = s2/eps", {"name": "rennala", "batch": s}, [i])
        tune("ringmaster, R = s2/eps", {"name": "ringmaster", "delay_threshold": s}, [i])
        tune(
            "ringmaster, R = s2/eps, stops",
            {"name": "ringmaster", "delay_threshold": s, "stops": True},
            [i],
        )
    head = "".join(f"  eps/{1 / f:<5.0f} (lr)" for f in fractions)
    print(f"   measured time / T_opt ({time.perf_counter() - start:.0f} s)\n"
          f"   {'policy':<31}{head}")  # fmt: skip
    for label, ts in rows.items():
        cells = "".join(
            f"  {t / b[0]:>7.3g} ({lr_of[label][i]:<4g})"
            if math.isfinite(t)
            else f"  {'>cap':>7} {'':6}"
            for i, (t, b) in enumerate(zip(ts, bounds, strict=True))
        )
        print(f"   {label:<31}{cells}")


def main() -> None:
    for name in sys.argv[1:] or list(SETTINGS):
        survey(name)


if __name__ == "__main__":
    main()
