"""Record a public reference's iterates for hybridsgd's tests: the authors' simulator of
Rennala, Malenia, Ringmaster, IA²SGD and Ringleader (github.com/vectozavr/ringmaster-lmo,
``src/asynchronous/algorithm.py``), fed hybridsgd's own drawn compute times, on a quadratic
whose data differs from worker to worker.

    git clone https://github.com/vectozavr/ringmaster-lmo /tmp/ringmaster-lmo
    python examples/reference_ringmaster_lmo.py /tmp/ringmaster-lmo \\
        --out tests/data/ringmaster-lmo.json

The reference's code is imported from that checkout, never copied here. Its transport
(``RandomDelayedAsynchronousTransport``) is used as it is, with zero fixed delays and a
"noise" that hands out, per worker, the times hybridsgd's :class:`~hybridsgd.timing.Cluster`
draws for that worker's successive jobs. Gradients are exact (no sampling noise): worker
w's objective is 0.5 (x - c_w)' diag(a_w) (x - c_w). The fixture holds the setup, the
commit it came from, and each method's iterates and times after each update (after each
cycle of W updates for Ringleader, whose ``step`` runs a whole cycle).
``tests/policies/test_reference.py`` replays hybridsgd's schedules on the same setup in
float64 and compares; docs/policies.md lists every difference found and whose reading of
the paper it follows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from hybridsgd.timing import Cluster, parse_model

W, DIM, LR = 4, 5, 0.2
SETUPS = {
    # random, heavy-ish times: the draws line up job for job with hybridsgd's
    "random": {"compute": "lognormal:mu=0,sigma=0.5", "speeds": [1.0, 1.5, 2.5, 4.0], "seed": 3},
    # the fixed-computation model of the papers: each worker always takes its own time
    "fixed": {"compute": "constant:value=1", "speeds": [1.0, 1.7, 2.9, 4.3], "seed": 0},
}
#: (name in the fixture, reference class, its keyword arguments, setup, reference steps)
METHODS = [
    ("async", "AsynchronousSGD", {}, "random", 40),
    ("ringmaster:R=3,stops=true", "RingmasterASGD", {"max_delay": 3}, "random", 40),
    ("ia2sgd:first_update=after", "IAASGD", {}, "random", 40),
    ("ringleader", "RingleaderASGD", {}, "random", 10),
    ("rennala:batch=6", "RennalaSGD", {"batch_size": 6}, "fixed", 25),
    ("malenia", "MaleniaSGD", {}, "fixed", 25),
    ("ata:batch=4,alpha=empirical", "ATA", {"batch_size": 4, "alpha": "empirical"}, "random", 25),
    ("ata:batch=4,alpha=0.05", "ATA", {"batch_size": 4, "alpha": 0.05}, "random", 40),
]


def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-worker curvatures a [W, d], centres c [W, d], and the start x0 [d]."""
    rng = np.random.default_rng(7)
    return rng.uniform(0.5, 2.0, (W, DIM)), rng.normal(0, 1, (W, DIM)), rng.normal(0, 1, DIM)


def draws(setup: dict, n: int = 4000) -> list[list[float]]:
    """Each worker's first ``n`` job times, as hybridsgd's simulator draws them."""
    cluster = Cluster(parse_model(setup["compute"]), W, seed=setup["seed"], speeds=setup["speeds"])
    return [cluster.delays(w, n).tolist() for w in range(W)]


class Quadratic:
    """Worker w's objective, with the methods the reference's nodes call."""

    def __init__(self, a: np.ndarray, c: np.ndarray) -> None:
        self.a, self.c = a, c

    def stochastic_gradient(self, point):
        return self.a * (point - self.c)

    def gradient(self, point):
        return self.a * (point - self.c)

    def value(self, point):
        return 0.5 * float(np.sum(self.a * (point - self.c) ** 2))


def record(checkout: Path, commit: str = "") -> dict:
    sys.path.insert(0, str(checkout))
    from src.asynchronous import algorithm as ref  # the reference, from its checkout

    if not hasattr(np, "infty"):  # its ATA names np.infty, which numpy 2 removed
        np.infty = np.inf
    from src.asynchronous.asynchronous_transport import RandomDelayedAsynchronousTransport
    from src.signature import Signature

    a, c, x0 = problem()
    out: dict = {
        "reference": "github.com/vectozavr/ringmaster-lmo",
        "commit": commit
        or subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        or "unknown (not a git checkout: give --commit)",
        "workers": W,
        "lr": LR,
        "a": a.tolist(),
        "c": c.tolist(),
        "x0": x0.tolist(),
        "setups": SETUPS,
        "methods": {},
    }
    for spec, cls_name, kwargs, setup_name, steps in METHODS:
        times = draws(SETUPS[setup_name])
        feed = [iter(t) for t in times]
        nodes = [Signature(ref.AsynchronousSGDNode, Quadratic(a[w], c[w])) for w in range(W)]
        transport = RandomDelayedAsynchronousTransport(
            nodes, [0.0] * W, lambda w, feed=feed: next(feed[w]), is_independent=True
        )
        method = getattr(ref, cls_name)(transport, x0.copy(), gamma=LR, **kwargs)
        iterates, clock = [], []
        # IAASGD's step takes up to W arrivals by default; one update per step here
        step_args = {"max_events": 1} if cls_name == "IAASGD" else {}
        for _ in range(steps):
            method.step(**step_args)
            iterates.append(np.asarray(method.get_point(), dtype=float).tolist())
            clock.append(float(method.get_time()))
        out["methods"][spec] = {
            "class": cls_name,
            "setup": setup_name,
            "updates_per_step": W if cls_name == "RingleaderASGD" else 1,
            "iterates": iterates,
            "times": clock,
        }
        print(f"{spec:28s} {cls_name:16s} {steps} steps, time {clock[-1]:.4f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a checkout of vectozavr/ringmaster-lmo")
    parser.add_argument("--out", type=Path, default=Path("tests/data/ringmaster-lmo.json"))
    parser.add_argument("--commit", default="", help="the checkout's commit, if not a git one")
    args = parser.parse_args()
    args.out.write_text(json.dumps(record(args.checkout, args.commit), indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
