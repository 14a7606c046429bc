"""Where a tuning searches: grids (``--grid section.key=[v1, v2, ...]``, every combination
in order) and search spaces (``--space section.key=log:LOW,HIGH``, drawn quasi-randomly by
a scrambled Sobol sequence), and their defaults for the configured optimizer."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hybridsgd.config import Config
from hybridsgd.errors import ConfigError
from hybridsgd.policies import REGISTRY, parse_spec
from hybridsgd.values import parse_value

#: the default grid: 7 learning rates, log-spaced over the optimizer's usual range
DEFAULT_LRS = {
    "sgd": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0],
    "adaptive-lr": [1e-4, 3e-4, 0.001, 0.003, 0.01, 0.03, 0.1],  # adam, rmsprop, adagrad, ...
}
#: the default search space's momentum range (SGD)
MOMENTUM_RANGE = (0.0, 0.95)


@dataclass(frozen=True)
class Dim:
    """One dimension of a search space: ``key`` drawn log-uniformly (``log``) or uniformly
    (``lin``) from [low, high]."""

    key: str
    kind: str
    low: float
    high: float

    def at(self, u: float) -> float:
        """The value at ``u`` in [0, 1), to 4 significant digits (readable in tune.csv)."""
        if self.kind == "log":
            v = self.low * (self.high / self.low) ** u
        else:
            v = self.low + u * (self.high - self.low)
        return float(f"{v:.4g}")

    def spec(self) -> str:
        return f"{self.key}={self.kind}:{self.low:g},{self.high:g}"


def parse_space(items: Sequence[str]) -> list[Dim]:
    """``--space section.key=log:LOW,HIGH`` (or ``lin:LOW,HIGH``) into a search space.

    >>> parse_space(["optimizer.lr=log:0.001,1"])
    [Dim(key='optimizer.lr', kind='log', low=0.001, high=1.0)]
    """
    dims: list[Dim] = []
    for item in items:
        key, sep, rest = item.partition("=")
        kind, sep2, bounds = rest.partition(":")
        lo_hi = bounds.split(",")
        fix = "give section.key=log:LOW,HIGH or section.key=lin:LOW,HIGH"
        if not sep or not sep2 or kind not in ("log", "lin") or len(lo_hi) != 2:
            raise ConfigError("--space", f"{item!r}: {fix}")
        try:
            low, high = float(lo_hi[0]), float(lo_hi[1])
        except ValueError:
            raise ConfigError("--space", f"{item!r}: LOW and HIGH must be numbers; {fix}") from None
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ConfigError("--space", f"{item!r}: needs finite LOW < HIGH")
        if kind == "log" and low <= 0:
            raise ConfigError("--space", f"{item!r}: a log range needs LOW > 0")
        if any(d.key == key.strip() for d in dims):
            raise ConfigError("--space", f"{key.strip()} is given twice")
        dims.append(Dim(key.strip(), kind, low, high))
    return dims


def default_space(cfg: Config, spec: str) -> list[Dim]:
    """With no ``--space``: the lr log-uniform over the default grid's range; for SGD the
    momentum in [0, 0.95]; and the keys the policy's registry entry names (``tuned_keys``:
    a hybrid's asynchronous lr, ``async_lr``), over the lr's range."""
    kind = "sgd" if cfg.optimizer.name.lower() == "sgd" else "adaptive-lr"
    low, high = DEFAULT_LRS[kind][0], DEFAULT_LRS[kind][-1]
    dims = [Dim("optimizer.lr", "log", low, high)]
    if kind == "sgd":
        dims.append(Dim("optimizer.momentum", "lin", *MOMENTUM_RANGE))
    for key in REGISTRY[parse_spec(spec)[0]].tuned_keys:
        dims.append(Dim(key, "log", low, high))
    return dims


def sobol_points(dims: Sequence[Dim], n: int, seed: int) -> list[dict[str, float]]:
    """``n`` points of the space, the first ``n`` of a scrambled Sobol sequence seeded by
    ``seed`` (scipy.stats.qmc)."""
    from scipy.stats import qmc

    m = max(0, math.ceil(math.log2(n)))  # whole powers of two keep Sobol's balance
    u = qmc.Sobol(d=len(dims), scramble=True, seed=seed).random_base2(m)[:n]
    return [{d.key: d.at(float(x)) for d, x in zip(dims, row, strict=True)} for row in u]


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """``--grid section.key=[v1, v2, ...]`` (a TOML array, or one value) into a grid.

    >>> parse_grid(["optimizer.lr=[0.01, 0.1]", "optimizer.momentum=0.9"])
    {'optimizer.lr': [0.01, 0.1], 'optimizer.momentum': [0.9]}
    """
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq or "." not in key:
            raise ConfigError(
                "--grid",
                f"expected section.key=[values], got {item!r} (e.g. optimizer.lr=[0.01,0.1])",
            )
        value = parse_value(raw.strip())
        if isinstance(value, str) and "," in value:  # 0.1,0.3: a list without its brackets
            raise ConfigError(
                "--grid", f"{key}: write several values as a list in brackets: "
                f"--grid {key}=[{raw.strip()}]",
            )  # fmt: skip
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ConfigError("--grid", f"{key} has an empty list of values; give at least one")
        if key in grid:
            raise ConfigError("--grid", f"{key} is given twice; put all its values in one list")
        grid[key] = values
    return grid


def default_grid(cfg: Config) -> dict[str, list[Any]]:
    """With no ``--grid``: a log grid of learning rates for the configured optimizer."""
    kind = "sgd" if cfg.optimizer.name.lower() == "sgd" else "adaptive-lr"
    return {"optimizer.lr": list(DEFAULT_LRS[kind])}


def points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in order (the last key varies fastest)."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value)}"  # JSON scalars and arrays are TOML values too
