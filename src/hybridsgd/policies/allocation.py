"""ATA, Adaptive Task Allocation (Maranjyan, Saad & Richtárik, ICML 2025; named in "First
Provably Optimal Asynchronous SGD", arXiv 2601.02523): a bandit learns each worker's time
per minibatch and, every round, allocates the B minibatches of the round to the workers so
as to finish soonest.

A round: the server allocates ``b_i`` minibatches to worker i (``sum b_i = B``); each worker
computes its share on the current parameters, one after another, and then waits; when all B
have arrived the server steps with their mean, updates its estimates and allocates the next
round. A worker given nothing stays idle for the round.

The allocation follows the authors' simulator (``ATA``, ``harmonia`` and ``discordia`` in
github.com/vectozavr/ringmaster-lmo, ``src/asynchronous/algorithm.py``):

* each worker's **score** is a lower confidence bound of its mean time per minibatch,
  ``mean_i - 4 e alpha_i (sqrt(ln(2 k^2) / n_i) + ln(2 k^2) / n_i)`` after round k with
  n_i minibatches seen; ``alpha_i`` is ``alpha``, or ``2 mean_i`` (``alpha = "empirical"``);
  a worker never seen has score -inf;
* **allocation**: every worker never seen gets one minibatch first (the lowest first when
  B is smaller; the authors' code draws them at random); then, if some score was <= 0,
  only workers with negative scores take part in the rest; the scores are shifted to be
  positive (minus twice the smallest) when some are negative; and the minibatches go one
  at a time to the worker that would then finish soonest (``score_i * (b_i + 1)``
  smallest, counting only what this step gave it; ties to the lowest worker, where the
  authors' code draws among equals at random, and the same when nobody may take one).

A round lasts the maximum over workers of the sum of their b_i draws. With equal times
and B = W every round gives each worker one minibatch: it is ``sync``, bit for bit
(tested). Against the authors' simulator fed the same times, the iterates agree to 1e-10
(B = W, where its first round draws nothing at random).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridsgd.errors import ConfigError
from hybridsgd.policies.base import Decision, Fate, Policy, Update
from hybridsgd.policies.optimal_time import batch_param
from hybridsgd.policies.registry import PolicyConfig, Registered, param, register


def allocate(scores: list[float], batch: int) -> list[int]:
    """The minibatches of a round per worker, from the workers' scores (module doc)."""
    W = len(scores)
    out = [0] * W
    s = list(scores)
    optimistic = any(v <= 0 for v in s)  # discordia, as against harmonia
    fresh = [i for i in range(W) if s[i] == -math.inf]
    for i in fresh[:batch]:  # every worker never seen: one minibatch first
        out[i] += 1
        s[i] = math.inf
    left = batch - min(batch, len(fresh))
    if optimistic:  # only the workers whose bound is still negative take the rest
        s = [v if v < 0 else math.inf for v in s]
    low = min(s)
    if low < 0:
        s = [v - 2 * low for v in s]
    taken = [0] * W  # what this greedy step gives (the fresh workers' score is now inf)
    for _ in range(left):  # one at a time, to the worker that would then finish soonest
        finish = [s[i] * (taken[i] + 1) for i in range(W)]
        best = min(range(W), key=lambda i: (finish[i], i))
        if math.isinf(finish[best]):  # nobody to prefer (the authors' code draws one)
            best = min(range(W), key=lambda i: (out[i] + taken[i], i))
        taken[best] += 1
    return [a + b for a, b in zip(out, taken, strict=True)]


def score(mean: float, n: int, k: int, alpha: float | str) -> float:
    """A worker's lower confidence bound after round k, from the mean of its n times
    (-inf while it has none): ``mean - 4 e alpha (sqrt(ln(2 k^2) / n) + ln(2 k^2) / n)``,
    alpha = 2 mean when ``"empirical"``."""
    if n == 0:
        return -math.inf
    a = 2.0 * mean if alpha == "empirical" else float(alpha)
    log = math.log(2.0 * k * k)
    return mean - 4.0 * math.e * a * (math.sqrt(log / n) + log / n)


class ATA(Policy):
    """Rounds of B minibatches allocated by a bandit over the workers' times (module doc)."""

    name = "ata"

    def __init__(self, workers: int, batch: int, alpha: float | str = "empirical") -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.workers, self.batch, self.alpha = workers, batch, alpha
        self.version = 0
        self.n = [0] * workers  # minibatch times seen per worker
        self.mean = [0.0] * workers
        self.scores = [-math.inf] * workers
        self.quota = allocate(self.scores, batch)
        self.round = 1  # the round under way (k)
        self.started = [0] * workers  # this round's jobs each worker began
        self.clock = [0.0] * workers  # when each worker's current job began
        self._in_flight = [-1] * workers
        self._buffer: list[tuple[int, int]] = []  # (gid, staleness)
        self._waiting: set[int] = set()
        self.now = 0.0

    def request(self, worker: int) -> int | None:
        if self.started[worker] >= self.quota[worker]:
            self._waiting.add(worker)
            return None
        self.started[worker] += 1
        self._in_flight[worker] = self.version
        return self.version

    def push(self, worker: int, read_version: int, gid: int, now: float = 0.0) -> Decision:
        self.now = now
        staleness = self.version - read_version
        if self._in_flight[worker] != read_version:
            return Decision(Fate.CANCELLED, staleness, reason="cancelled")
        self._in_flight[worker] = -1
        took = now - self.clock[worker]  # jobs run back to back from the round's start
        self.clock[worker] = now
        n = self.n[worker]  # the running mean as the authors' code computes it
        self.mean[worker] = (n * self.mean[worker] + took) / (n + 1)
        self.n[worker] = n + 1
        self._buffer.append((gid, staleness))
        if len(self._buffer) < self.batch:
            return Decision(Fate.BUFFERED, staleness)
        members, self._buffer = self._buffer, []
        self.version += 1
        update = Update(self.version, [g for g, _ in members], [s for _, s in members], 1.0)
        self._score()
        self.round += 1
        self.quota = allocate(self.scores, self.batch)
        self.started = [0] * self.workers
        self.clock = [now] * self.workers
        release = sorted(self._waiting)  # every worker but the pusher waits by now
        self._waiting.clear()
        return Decision(Fate.APPLIED, staleness, update, release=release)

    def _score(self) -> None:
        """Each worker's lower confidence bound of its time per minibatch, after round k."""
        k = self.round
        self.scores = [score(self.mean[i], self.n[i], k, self.alpha) for i in range(self.workers)]

    def pending(self) -> list[int]:
        return [g for g, _ in self._buffer]

    def describe(self) -> str:
        return f"ata(W={self.workers}, B={self.batch})"


def _check_alpha(value: float | str, p: PolicyConfig) -> None:
    if value == "empirical":
        return
    if isinstance(value, str) or not (value > 0 and math.isfinite(value)):
        raise ConfigError("policy.alpha", f"must be a number > 0 or 'empirical' (got {value!r})")


@dataclass(frozen=True)
class ATAParams:
    batch: int | None = batch_param()
    alpha: float | str = param(
        "empirical",
        "the confidence bound's scale: a number > 0, or empirical (twice each worker's mean)",
        check=_check_alpha,
    )


register(
    Registered(
        "ata",
        "rounds of B minibatches allocated to the workers by a bandit over their times "
        "(Maranjyan, Saad & Richtárik 2025)",
        build=lambda c, ctx: ATA(c.workers, c.batch, c.alpha),
        params=ATAParams,
        required=("batch",),
        aliases={"B": "batch"},
        min_gradients=lambda c: c.batch or 1,
        examples=("ata:batch=6",),
        colour="#6b6ecf",
        family="sync",
        predictor="bandit-rounds",
    )
)
