"""Threshold functions for ``hybrid``: progress -> degree of synchrony in [0, 1].

Written like timing models, ``shape:key=value,...``. Progress is counted in updates, time or
epochs (``policy.progress``); 0 means asynchronous, 1 synchronous.

===========  =============================  ===============================================
shape        parameters                     level at progress p
===========  =============================  ===============================================
constant     value                          value
step         at                             0 before ``at``, 1 from it on
linear       start, end                     0 before start, rising linearly to 1 at end
exponential  rate                           1 - exp(-rate * p)
sigmoid      mid, width                     1 / (1 + exp(-(p - mid) / width))
cosine       start, end                     (1 - cos(pi * x)) / 2, x the linear ramp
cyclic       async, sync                    0 for ``async`` units, then 1 for ``sync``
                                            units, repeating
===========  =============================  ===============================================

Any Python callable ``f(p) -> float`` works through the API (values are clipped to [0, 1]).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from hybridsgd.errors import ConfigError
from hybridsgd.specs import parse_params

Threshold = Callable[[float], float]


@dataclass(frozen=True)
class Shape:
    """A named threshold function with its parameters (printable, comparable)."""

    name: str
    params: tuple[tuple[str, float], ...]
    fn: Threshold

    def __call__(self, progress: float) -> float:
        return self.fn(progress)

    def __str__(self) -> str:
        return f"{self.name}:" + ",".join(f"{k}={v:g}" for k, v in self.params)


def _ramp(p: float, start: float, end: float) -> float:
    return min(1.0, max(0.0, (p - start) / (end - start)))


_SHAPES: dict[str, tuple[tuple[str, ...], Callable[..., Threshold], Callable[..., str]]] = {
    "constant": (
        ("value",),
        lambda value: lambda p: value,
        lambda value: "" if 0 <= value <= 1 else "value must be in [0, 1]",
    ),
    "step": (
        ("at",),
        lambda at: lambda p: 1.0 if p >= at else 0.0,
        lambda at: "" if at >= 0 else "at must be >= 0",
    ),
    "linear": (
        ("start", "end"),
        lambda start, end: lambda p: _ramp(p, start, end),
        lambda start, end: "" if 0 <= start < end else "need 0 <= start < end",
    ),
    "exponential": (
        ("rate",),
        lambda rate: lambda p: 1.0 - math.exp(-rate * p),
        lambda rate: "" if rate > 0 else "rate must be > 0",
    ),
    "sigmoid": (
        ("mid", "width"),
        lambda mid, width: (
            lambda p: 1.0 / (1.0 + math.exp(-max(-700.0, min(700.0, (p - mid) / width))))
        ),
        lambda mid, width: "" if width > 0 else "width must be > 0",
    ),
    "cosine": (
        ("start", "end"),
        lambda start, end: lambda p: (1.0 - math.cos(math.pi * _ramp(p, start, end))) / 2,
        lambda start, end: "" if 0 <= start < end else "need 0 <= start < end",
    ),
    "cyclic": (
        ("async", "sync"),
        lambda a, s: lambda p: 0.0 if (p % (a + s)) < a else 1.0,
        lambda a, s: "" if a > 0 and s > 0 else "async and sync phase lengths must be > 0",
    ),
}


def parse_threshold(spec: str, field: str = "policy.threshold") -> Shape:
    """Parse ``shape:key=value,...``.

    >>> f = parse_threshold("linear:start=100,end=300"); f(50), f(200), f(400)
    (0.0, 0.5, 1.0)
    """
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in _SHAPES:
        raise ConfigError(
            field, f"unknown threshold shape {name!r}; use one of: {', '.join(_SHAPES)}"
        )
    keys, make, check = _SHAPES[name]
    values = parse_params(name, rest, keys, field)
    args = [values[k] for k in keys]
    problem = check(*args)
    if problem:
        raise ConfigError(field, f"{name}: {problem}")
    return Shape(name, tuple((k, values[k]) for k in keys), make(*args))
