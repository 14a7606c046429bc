"""A job of H local steps for the analytical models (``[worker]``, docs/local-steps.md).

A job's compute time is the sum of H independent draws of the compute model; its two
messages are paid once. Every model of :mod:`hybridsgd.analysis` takes a job's time as
its "compute" model, so a local-step run is predicted by giving them the H-fold sum:

* exponential(mu): Erlang(H, mu), a gamma of shape H (exact);
* gamma(k, theta): gamma(k H, theta) (exact); constant c: constant H c (exact);
* any other model: :class:`SumOfSteps`, a sorted Monte Carlo sample of the sum
  (:data:`DRAWS` sums), its mean the exact H times the model's mean.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hybridsgd.timing.models import Constant, Exponential, Gamma, TimingModel

#: sums drawn for a model whose H-fold sum has no closed form
DRAWS = 200_000


@dataclass(frozen=True, eq=False)
class SumOfSteps(TimingModel):
    """The sum of ``steps`` draws of ``base``: its distribution is ``sums`` (sorted)."""

    base: TimingModel
    steps: int
    sums: np.ndarray = field(repr=False)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return self.base.sample(rng, size * self.steps).reshape(size, self.steps).sum(axis=1)

    def mean(self) -> float:
        return self.steps * self.base.mean()


def job_model(compute: TimingModel, steps: int, seed: int = 0) -> tuple[TimingModel, str]:
    """The compute time of a job of ``steps`` minibatches, and how it was obtained."""
    if steps == 1:
        return compute, "one minibatch a job"
    if isinstance(compute, Exponential):
        return Gamma(float(steps), 1.0 / compute.mu), f"Erlang({steps}): exact"
    if isinstance(compute, Gamma):
        return Gamma(compute.shape * steps, compute.scale), f"gamma, shape x {steps}: exact"
    if isinstance(compute, Constant):
        return Constant(compute.value * steps), f"{steps} x constant: exact"
    draws = compute.sample(np.random.default_rng(seed), DRAWS * steps)
    sums = np.sort(draws.reshape(DRAWS, steps).sum(axis=1))
    return SumOfSteps(compute, steps, sums), f"Monte Carlo: {DRAWS:,} sums of {steps} draws"
