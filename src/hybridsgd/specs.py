"""Compact specs, ``name:key=value,...``: timing models, threshold shapes, policies."""

from __future__ import annotations

import math

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
