"""Compact specs, ``name:key=value,...``: timing models, threshold shapes, policies."""

from __future__ import annotations

import math
from collections.abc import Mapping

from hybridsgd.errors import ConfigError


def parse_params(name: str, rest: str, keys: tuple[str, ...], field: str) -> dict[str, float]:
    """The ``key=value,...`` part of a spec: exactly ``keys``, each a finite number.

    >>> parse_params("exp", "mu=2", ("mu",), "timing.compute")
    {'mu': 2.0}
    """
    params: dict[str, float] = {}
    for part in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = part.partition("=")
        key = key.strip()
        if key not in keys or not eq:
            takes = ", ".join(k + "=..." for k in keys)
            raise ConfigError(field, f"{name} takes {takes} (got {part!r})")
        try:
            params[key] = float(value)
        except ValueError:
            raise ConfigError(
                field, f"{name}: {key} must be a number (got {value.strip()!r})"
            ) from None
    missing = [k for k in keys if k not in params]
    if missing:
        example = ",".join(f"{k}=..." for k in keys)
        raise ConfigError(field, f"{name} needs {', '.join(missing)}: write {name}:{example}")
    if not all(math.isfinite(v) for v in params.values()):
        raise ConfigError(field, f"{name}: parameters must be finite")
    return params


def parse_named(
    spec: str, table: Mapping[str, Mapping[str, float | None]], field: str, what: str
) -> tuple[str, dict[str, float]]:
    """``name`` or ``name:key=value,...`` where ``table[name]`` gives the keys and their
    defaults (``None``: required). Returns the name and every parameter.

    >>> parse_named("scale:factor=-4", {"scale": {"factor": None}}, "faults.attack", "attack")
    ('scale', {'factor': -4.0})
    """
    from hybridsgd.errors import lookup

    name, _, rest = spec.strip().partition(":")
    defaults = lookup(table, name, field, what)
    given: dict[str, float] = {}
    for part in filter(None, (x.strip() for x in rest.split(","))):
        key = part.partition("=")[0].strip()
        if key not in defaults:
            takes = ", ".join(f"{k}=..." for k in defaults) or "no parameters"
            raise ConfigError(field, f"{name} takes {takes} (got {part!r})")
        given |= parse_params(name, part, (key,), field)
    params = {**defaults, **given}
    missing = [k for k, v in params.items() if v is None]
    if missing:
        raise ConfigError(field, f"{name} needs {missing[0]}: e.g. {name}:{missing[0]}=4")
    return name, {k: v for k, v in params.items() if v is not None}  # none is missing
