"""Distributions of compute and communication time, written as compact strings.

``name:key=value,...`` — for example ``shifted-exp:delta=1,mu=2`` or ``pareto:alpha=1.5,scale=1``;
a bare number ``0.5`` means ``constant:value=0.5``.

=============  ======================  =====================================
name           parameters              time
=============  ======================  =====================================
constant       value                   value
exp            mu                      Exp(mu), mean 1/mu
shifted-exp    delta, mu               delta + Exp(mu)
pareto         alpha, scale            scale * U^(-1/alpha) (classic Pareto)
lognormal      mu, sigma               exp(N(mu, sigma^2))
uniform        low, high               U(low, high)
gamma          shape, scale            Gamma(shape, scale)
empirical      path                    resampled from a file of measured times
trace          path, mode, block       each worker's own measured series (a profile.csv)
link (comm)    latency, bandwidth      latency + model bytes / bandwidth
=============  ======================  =====================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hybridsgd.errors import ConfigError
from hybridsgd.specs import parse_params


@dataclass(frozen=True)
class TimingModel:
    """A non-negative random time. Subclasses define ``sample`` and ``mean``."""

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        raise NotImplementedError

    def mean(self) -> float:
        raise NotImplementedError

    @property
    def is_constant(self) -> bool:
        return False

    def for_worker(self, worker: int) -> TimingModel:
        """The model of one worker's times (every worker draws from the same model, but a
        trace replays each worker's own series)."""
        return self

    def draw(self, rng: np.random.Generator, size: int, offset: int) -> np.ndarray:
        """The worker's values ``offset`` to ``offset + size`` of its stream (i.i.d. models
        ignore ``offset``; a series in order needs it)."""
        return self.sample(rng, size)


@dataclass(frozen=True)
class Constant(TimingModel):
    value: float

    def sample(self, rng, size):
        return np.full(size, self.value)

    def mean(self):
        return self.value

    @property
    def is_constant(self):
        return True


@dataclass(frozen=True)
class Exponential(TimingModel):
    mu: float

    def sample(self, rng, size):
        return rng.standard_exponential(size) / self.mu

    def mean(self):
        return 1.0 / self.mu


@dataclass(frozen=True)
class ShiftedExponential(TimingModel):
    delta: float
    mu: float

    def sample(self, rng, size):
        return self.delta + rng.standard_exponential(size) / self.mu

    def mean(self):
        return self.delta + 1.0 / self.mu


@dataclass(frozen=True)
class Pareto(TimingModel):
    alpha: float
    scale: float

    def sample(self, rng, size):
        # numpy's pareto is Lomax (Pareto II); shifting by one gives the classic Pareto.
        return self.scale * (1.0 + rng.pareto(self.alpha, size))

    def mean(self):
        return self.alpha * self.scale / (self.alpha - 1) if self.alpha > 1 else math.inf


@dataclass(frozen=True)
class LogNormal(TimingModel):
    mu: float
    sigma: float

    def sample(self, rng, size):
        return rng.lognormal(self.mu, self.sigma, size)

    def mean(self):
        return math.exp(self.mu + self.sigma**2 / 2)


@dataclass(frozen=True)
class Uniform(TimingModel):
    low: float
    high: float

    def sample(self, rng, size):
        return rng.uniform(self.low, self.high, size)

    def mean(self):
        return (self.low + self.high) / 2


@dataclass(frozen=True)
class Gamma(TimingModel):
    shape: float
    scale: float

    def sample(self, rng, size):
        return rng.gamma(self.shape, self.scale, size)

    def mean(self):
        return self.shape * self.scale


@dataclass(frozen=True)
class Empirical(TimingModel):
    """Times resampled uniformly (with replacement) from measured values."""

    path: str
    values: tuple[float, ...]

    def sample(self, rng, size):
        return np.asarray(self.values)[rng.integers(0, len(self.values), size)]

    def mean(self):
        return float(np.mean(self.values))


@dataclass(frozen=True)
class Series(TimingModel):
    """One worker's measured times: in ``order`` (value k for its k-th job, around again at
    the end), or in ``blocks`` of ``block`` consecutive values starting at random places
    (the order within a block, and so slow episodes shorter than it, survive)."""

    values: tuple[float, ...]
    mode: str = "order"
    block: int = 20

    def draw(self, rng, size, offset):
        v = np.asarray(self.values)
        n = len(v)
        if self.mode == "order":
            return v[(offset + np.arange(size)) % n]
        b = min(self.block, n)
        starts = rng.integers(0, n - b + 1, -(-size // b))
        return np.concatenate([v[s : s + b] for s in starts])[:size]

    def sample(self, rng, size):
        return self.draw(rng, size, 0)

    def mean(self):
        return float(np.mean(self.values))


@dataclass(frozen=True)
class Trace(TimingModel):
    """Each worker's own measured series from a profile (``hybridsgd profile``'s
    profile.csv, or a real run's gradients.csv): simulated worker w replays the profile's
    w-th worker (around again when there are more workers than in the profile). Pooled,
    as the analysis sees it, it is the empirical distribution of every time."""

    path: str
    series: tuple[tuple[float, ...], ...]
    mode: str = "order"
    block: int = 20

    def for_worker(self, worker):
        return Series(self.series[worker % len(self.series)], self.mode, self.block)

    def sample(self, rng, size):
        pooled = np.concatenate([np.asarray(s) for s in self.series])
        return pooled[rng.integers(0, len(pooled), size)]

    def mean(self):
        return float(np.mean(np.concatenate([np.asarray(s) for s in self.series])))


def load_trace(spec: str, rest: str, field: str) -> Trace:
    """``trace:path=profile.csv[,mode=order|blocks][,block=20]``."""
    import pandas as pd

    from hybridsgd.timing.fit import job_times

    items = dict(part.strip().partition("=")[::2] for part in rest.split(",") if part.strip())
    unknown = sorted(set(items) - {"path", "mode", "block"})
    fix = "write trace:path=profile.csv[,mode=order|blocks][,block=N]"
    if unknown or not items.get("path"):
        raise ConfigError(field, f"{fix} (got {spec!r})")
    mode = items.get("mode", "order")
    if mode not in ("order", "blocks"):
        raise ConfigError(field, f"trace mode is order or blocks (got {mode!r})")
    try:
        block = int(items.get("block", "20"))
    except ValueError:
        block = 0
    if block < 1:
        raise ConfigError(
            field, f"trace block must be a whole number >= 1 (got {items.get('block')!r})"
        )
    path = items["path"]
    if not Path(path).is_file():
        raise ConfigError(field, f"trace file not found: {path}")
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(field, f"{path} cannot be read ({exc})") from None
    times = job_times(table, f"{field} ({path})")
    return Trace(path, tuple(tuple(times[w].tolist()) for w in sorted(times)), mode, block)


@dataclass(frozen=True)
class Link(TimingModel):
    """Communication over a link: ``latency + bytes / bandwidth``; bound to a model size."""

    latency: float
    bandwidth: float

    def bind(self, nbytes: float) -> Constant:
        return Constant(self.latency + nbytes / self.bandwidth)


def load_empirical(path: str, field: str) -> Empirical:
    """Read measured times: one number per line (first column of a CSV), ``#`` comments."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(field, f"empirical trace file not found: {path}")
    values: list[float] = []
    for lineno, line in enumerate(p.read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        first = text.split(",")[0].strip()
        try:
            v = float(first)
        except ValueError:
            if not values and lineno == 1:  # a CSV header
                continue
            raise ConfigError(field, f"{path}:{lineno}: not a number: {first!r}") from None
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(field, f"{path}:{lineno}: times must be finite and >= 0 (got {v})")
        values.append(v)
    if not values:
        raise ConfigError(field, f"{path}: no times found (one number per line)")
    return Empirical(path, tuple(values))


# name -> (class, parameter names, check(params) -> error message or "")
_MODELS = {
    "constant": (Constant, ("value",), lambda p: "" if p["value"] >= 0 else "value must be >= 0"),
    "exp": (Exponential, ("mu",), lambda p: "" if p["mu"] > 0 else "mu must be > 0"),
    "shifted-exp": (
        ShiftedExponential,
        ("delta", "mu"),
        lambda p: "" if p["mu"] > 0 and p["delta"] >= 0 else "need delta >= 0 and mu > 0",
    ),
    "pareto": (
        Pareto,
        ("alpha", "scale"),
        lambda p: "" if p["alpha"] > 0 and p["scale"] > 0 else "need alpha > 0 and scale > 0",
    ),
    "lognormal": (
        LogNormal,
        ("mu", "sigma"),
        lambda p: "" if p["sigma"] >= 0 else "sigma must be >= 0",
    ),
    "uniform": (
        Uniform,
        ("low", "high"),
        lambda p: "" if 0 <= p["low"] <= p["high"] else "need 0 <= low <= high",
    ),
    "gamma": (
        Gamma,
        ("shape", "scale"),
        lambda p: "" if p["shape"] > 0 and p["scale"] > 0 else "need shape > 0 and scale > 0",
    ),
    "link": (
        Link,
        ("latency", "bandwidth"),
        lambda p: (
            ""
            if p["latency"] >= 0 and p["bandwidth"] > 0
            else "need latency >= 0 and bandwidth > 0"
        ),
    ),
}
_ALIASES = {"exponential": "exp", "shifted-exponential": "shifted-exp", "log-normal": "lognormal"}


def parse_model(spec: str, field: str = "timing", allow_link: bool = False) -> TimingModel:
    """Parse ``name:key=value,...`` into a :class:`TimingModel`.

    >>> parse_model("shifted-exp:delta=1,mu=2").mean()
    1.5
    """
    text = spec.strip()
    try:
        number = float(text)
    except ValueError:
        number = None
    if number is not None:
        return Constant(_nonneg(number, field))
    name, _, rest = text.partition(":")
    name = _ALIASES.get(name.strip().lower(), name.strip().lower())
    known = [n for n in _MODELS if allow_link or n != "link"] + ["empirical", "trace"]
    if name == "trace":
        return load_trace(spec, rest, field)
    if name == "empirical":
        key, eq, path = rest.partition("=")
        if key.strip() != "path" or not eq or not path.strip():
            raise ConfigError(field, f"write empirical:path=FILE (got {spec!r})")
        return load_empirical(path.strip(), field)
    if name not in _MODELS or (name == "link" and not allow_link):
        raise ConfigError(field, f"unknown timing model {name!r}; use one of: {', '.join(known)}")
    cls, keys, check = _MODELS[name]
    params = parse_params(name, rest, keys, field)
    problem = check(params)
    if problem:
        raise ConfigError(field, f"{name}: {problem}")
    return cls(**params)


def _nonneg(value: float, field: str) -> float:
    if not (value >= 0 and math.isfinite(value)):
        raise ConfigError(field, f"a constant time must be finite and >= 0 (got {value})")
    return value
