"""Exact time to target: the first update that reaches the target, not the next evaluation.

A run evaluates every ``run.eval_every`` updates; reading the time to target off that grid
rounds it up to the next evaluation, by up to ``eval_every - 1`` updates, which penalises
exactly the policies that make few, long updates (the synchronous family). A
:class:`TargetSearch` keeps the parameters of every version since the last evaluation while
the target is not reached (at most ``eval_every - 1`` copies, reused); when an evaluation
reaches it, the kept versions are evaluated in order up to the first that reaches it, and
those evaluations join the run's :class:`~hybridsgd.record.Evals` in version order. The
first evaluation at or above the target is then the first update that reached it after the
last evaluation below it: what ``eval_every = 1`` gives, at ``eval_every - 1`` extra
evaluations once per run.

The search knows nothing of clocks or backends: a replay hands it each version's
parameters and the time that version appeared.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hybridsgd.record import Evals

Evaluate = Callable[[torch.Tensor], tuple[float, float]]


def reached(accuracy: float, target: float | None) -> bool:
    """Whether an evaluation's accuracy reaches ``target`` (never for no target, or NaN)."""
    return target is not None and accuracy >= target


class TargetSearch:
    """Finds the first version that reaches ``target`` between two evaluations.

    ``evaluate(params)`` returns (loss, accuracy) for a parameter vector that is not the
    server's (see :func:`evaluate_apart`). ``kept`` resumes a search from a checkpoint.
    """

    def __init__(
        self,
        target: float | None,
        evaluate: Evaluate,
        evals: Evals,
        kept: list[tuple[int, float, torch.Tensor]] | None = None,
    ) -> None:
        self.target, self.evaluate = target, evaluate
        # done once an evaluation so far reached the target (a resumed run may have one)
        self.active = target is not None and not any(reached(a, target) for a in evals.accuracy)
        self.kept: list[tuple[int, float, torch.Tensor]] = list(kept or []) if self.active else []
        self._pool: list[torch.Tensor] = []

    def keep(self, version: int, time: float, params: torch.Tensor) -> None:
        """Version ``version`` appeared at ``time`` and was not evaluated: keep a copy."""
        if not self.active:
            return
        buf = self._pool.pop() if self._pool else torch.empty_like(params)
        buf.copy_(params)
        self.kept.append((version, time, buf))

    def evaluated(self, evals: Evals) -> None:
        """An evaluation was just added to ``evals``. If it is the first to reach the
        target, evaluate the kept versions before it, in order, up to the first that
        reaches it, and insert those evaluations before it."""
        if not self.active:
            return
        if not reached(evals.accuracy[-1], self.target):
            self._release()
            return
        self.active = False
        found = Evals()
        for version, time, params in self.kept:
            loss, acc = self.evaluate(params)
            found.add(version, time, loss, acc)
            if reached(acc, self.target):
                break
        self.kept, self._pool = [], []
        at = len(evals.version) - 1
        for col in ("version", "time", "loss", "accuracy"):
            getattr(evals, col)[at:at] = getattr(found, col)

    def _release(self) -> None:
        self._pool.extend(p for _, _, p in self.kept)
        self.kept = []


def evaluate_apart(task) -> Evaluate:
    """``task.evaluate`` for a vector the task is not bound to, without writing into the
    storage it is bound to (a replay binds the task to the server's parameters)."""

    def evaluate(params: torch.Tensor) -> tuple[float, float]:
        with task.bound_to(params):
            return task.evaluate(params)

    return evaluate
