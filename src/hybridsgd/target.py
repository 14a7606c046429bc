"""Exact time to target: the first update that reaches the target, not the next evaluation.

A run evaluates every ``run.eval_every`` updates; reading the time to target off that grid
rounds it up to the next evaluation, by up to ``eval_every - 1`` updates, which penalises
exactly the policies that make few, long updates (the synchronous family). A
:class:`TargetSearch` keeps the parameters of every version since the last evaluation while
the target is not reached (at most ``eval_every - 1`` copies, reused), and at each
evaluation evaluates them in order, up to the first that reaches the target; the
evaluations of the interval that holds it join the run's :class:`~hybridsgd.record.Evals`
in version order, so the first evaluation at or above the target is the first update that
reached it. ``run.target_search`` chooses how much is searched:

* ``"exact"`` (default): every interval, so the answer is what ``eval_every = 1`` gives,
  also when the accuracy crosses the target and falls back between two evaluations (async
  near its target does; measured on docs/reproductions.md's Chen setup). It costs one
  evaluation per update until the target is reached.
* ``"interval"``: only the interval before the first evaluation that reaches the target,
  at most ``eval_every - 1`` extra evaluations once per run; exact when the accuracy does
  not cross and fall back between two evaluations.

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


#: run.target_search values
SEARCHES = ("exact", "interval")


class TargetSearch:
    """Finds the first version that reaches ``target`` (see the module doc for ``search``).

    ``evaluate(params)`` returns (loss, accuracy) for a parameter vector that is not the
    server's (see :func:`evaluate_apart`). ``kept`` resumes a search from a checkpoint.
    """

    def __init__(
        self,
        target: float | None,
        evaluate: Evaluate,
        evals: Evals,
        kept: list[tuple[int, float, torch.Tensor]] | None = None,
        search: str = "exact",
    ) -> None:
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES} (got {search!r})")
        self.target, self.evaluate, self.every = target, evaluate, search == "exact"
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
        """An evaluation was just added to ``evals``: search the kept versions before it
        (all of them with ``"exact"``; with ``"interval"`` only when it reaches the target)
        and insert the evaluations up to the first that reaches the target before it."""
        if not self.active:
            return
        if not self.every and not reached(evals.accuracy[-1], self.target):
            self._release()
            return
        found = Evals()
        for version, time, params in self.kept:
            loss, acc = self.evaluate(params)
            found.add(version, time, loss, acc)
            if reached(acc, self.target):
                break
        hit = bool(found.version) and reached(found.accuracy[-1], self.target)
        if hit or reached(evals.accuracy[-1], self.target):
            self.active = False
            self.kept, self._pool = [], []
            at = len(evals.version) - 1
            for col in ("version", "time", "loss", "accuracy"):
                getattr(evals, col)[at:at] = getattr(found, col)
        else:  # every version of the interval is below the target: its evaluations go
            self._release()

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
