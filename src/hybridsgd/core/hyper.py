"""The learning rate and momentum of each update: a schedule over progress, the linear or
square-root scaling rule over the gradients an update holds, and the synchrony level's own
settings for hybrid and adaptive policies (docs/tuning.md).

The server asks :meth:`Hyper.at` before each step. Progress is counted in updates, in
training samples applied, or in the backend's time, which the caller passes in: the core
keeps no clock. For one update the lr is

    lr = base(level) * schedule(progress) * scale(n)

where ``base(level)`` runs geometrically from ``async_lr`` (level 0, one gradient per
update) to ``lr`` (level 1, synchronous), ``schedule`` is the factor of
:class:`LrSchedule`, and ``scale(n)`` is 1, ``n`` or ``sqrt(n)`` for the ``n`` gradients the
update applies. Momentum runs linearly from ``async_momentum`` to ``momentum`` with the
level. The optimizer's state (SGD's momentum buffer) is kept as it is when the lr or the
momentum changes, at a hybrid's switch too: only the coefficients change from that step on.

>>> h = Hyper(0.1, scale="linear"); h.at(0, n=4)
(0.4, None)
>>> s = LrSchedule("cosine", warmup=2, total=6, start=0.5)
>>> [round(s.factor(t), 3) for t in range(7)]
[0.5, 0.75, 1.0, 0.854, 0.5, 0.146, 0.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hybridsgd.errors import ConfigError
from hybridsgd.specs import parse_named

#: schedule kinds and their parameters with defaults (None: required)
KINDS: dict[str, dict[str, float | None]] = {
    "constant": {"warmup": 0.0, "start": 0.1},
    "cosine": {"warmup": 0.0, "start": 0.1, "total": 0.0, "final": 0.0},
    "linear": {"warmup": 0.0, "start": 0.1, "total": 0.0, "final": 0.0},
    "step": {"warmup": 0.0, "start": 0.1, "every": None, "gamma": 0.1},
}
UNITS = ("updates", "samples", "time")
SCALES = ("none", "linear", "sqrt")


@dataclass(frozen=True)
class LrSchedule:
    """A factor of the base lr over progress ``t``: a linear warm-up from ``start`` to 1
    over ``warmup``, then constant, cosine or linear decay to ``final`` at ``total``, or a
    step decay by ``gamma`` every ``every``. Each equals the torch scheduler that
    docs/tuning.md names (``LinearLR`` then ``CosineAnnealingLR``, ``LinearLR`` or
    ``StepLR``, chained by ``SequentialLR``) at every whole number of updates; between whole
    numbers (samples, time) it is the same formula."""

    kind: str = "constant"
    warmup: float = 0.0
    start: float = 0.1
    total: float = 0.0
    final: float = 0.0
    every: float = 0.0
    gamma: float = 0.1

    @property
    def constant(self) -> bool:
        return self.kind == "constant" and self.warmup == 0

    def factor(self, t: float) -> float:
        if t < self.warmup:
            return self.start + (1.0 - self.start) * t / self.warmup
        tau = t - self.warmup
        if self.kind == "constant":
            return 1.0
        if self.kind == "step":
            return float(self.gamma ** math.floor(tau / self.every))
        span = self.total - self.warmup
        done = min(tau, span) / span
        if self.kind == "cosine":
            return self.final + (1.0 - self.final) * (1.0 + math.cos(math.pi * done)) / 2.0
        return 1.0 + (self.final - 1.0) * done  # linear


def parse_schedule(spec: str, total: float | None = None, field: str = "optimizer.schedule"):
    """``kind`` or ``kind:key=value,...``; ``total=0`` (the default) means ``total``, the
    run's own length in the schedule's unit, when the caller knows it.

    >>> parse_schedule("step:every=100,gamma=0.5")
    LrSchedule(kind='step', warmup=0.0, start=0.1, total=0.0, final=0.0, every=100.0, gamma=0.5)
    """
    kind, p = parse_named(spec, KINDS, field, "schedule")
    if p["warmup"] < 0:
        raise ConfigError(field, f"{kind}: warmup must be >= 0 (got {p['warmup']:g})")
    if not 0 < p["start"] <= 1:
        raise ConfigError(field, f"{kind}: start (the warm-up's first factor) must be in (0, 1]")
    if kind in ("cosine", "linear"):
        if p["total"] == 0 and total is not None:
            p["total"] = float(total)
        if p["total"] == 0:
            raise ConfigError(
                field,
                f"{kind} needs total= (the run's length is not known in this unit): "
                f"e.g. {kind}:total=1000",
            )
        if p["total"] <= p["warmup"]:
            raise ConfigError(
                field, f"{kind}: total ({p['total']:g}) must exceed warmup ({p['warmup']:g})"
            )
        if not 0 <= p["final"] <= 1:
            raise ConfigError(field, f"{kind}: final (a fraction of the lr) must be in [0, 1]")
    if kind == "step":
        if p["every"] <= 0:
            raise ConfigError(field, f"step: every must be > 0 (got {p['every']:g})")
        if not 0 < p["gamma"] <= 1:
            raise ConfigError(field, f"step: gamma must be in (0, 1] (got {p['gamma']:g})")
    return LrSchedule(kind, **p)


@dataclass
class Hyper:
    """The lr and momentum of each update (see the module's docstring); ``samples`` counts
    the training samples applied so far (progress in samples)."""

    lr: float
    momentum: float | None = None  # None: leave the optimizer's momentum alone
    schedule: LrSchedule = field(default_factory=LrSchedule)
    unit: str = "updates"
    scale: str = "none"
    async_lr: float | None = None
    async_momentum: float | None = None
    batch_size: int = 1
    samples: int = 0

    def __post_init__(self) -> None:
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}")
        if self.scale not in SCALES:
            raise ValueError(f"scale must be one of {SCALES}")

    @property
    def constant(self) -> bool:
        """Whether every update gets the optimizer's own lr and momentum (nothing to set)."""
        return (
            self.schedule.constant
            and self.scale == "none"
            and self.async_lr is None
            and self.async_momentum is None
        )

    def at(
        self, version: int, n: int = 1, time: float = 0.0, level: float = 1.0
    ) -> tuple[float, float | None]:
        """The (lr, momentum) of the update made on ``version`` from ``n`` gradients, at the
        backend's ``time`` and synchrony ``level``; counts its samples as applied."""
        t = {"updates": float(version), "samples": float(self.samples), "time": time}[self.unit]
        self.samples += n * self.batch_size
        lr = self.lr if self.async_lr is None else self.async_lr ** (1 - level) * self.lr**level
        lr *= self.schedule.factor(t)
        if self.scale == "linear":
            lr *= n
        elif self.scale == "sqrt":
            lr *= math.sqrt(n)
        momentum = self.momentum
        if self.async_momentum is not None and momentum is not None:
            momentum = (1 - level) * self.async_momentum + level * momentum
        return lr, momentum

    def state(self) -> dict[str, Any]:
        return {"samples": self.samples}

    def load_state(self, state: dict[str, Any]) -> None:
        self.samples = int(state.get("samples", 0))
