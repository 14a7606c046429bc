"""Config values: TOML value syntax on the command line, and coercion to a field's type
with one clear error naming the field. Shared by the config and the policy registry."""

from __future__ import annotations

import math
import tomllib
import types
import typing
from typing import Any

from hybridsgd.errors import ConfigError


def parse_value(raw: str) -> Any:
    """TOML value syntax (``3``, ``0.5``, ``true``, ``[1, 2]``); anything else is a string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if type(None) in options and (value is None or value == "none"):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce(name, value, option)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(name, " or ".join(errors))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(name, f"must be true or false (got {value!r})")
    if hint is int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value != int(value)
        ):
            raise ConfigError(name, f"must be a whole number (got {value!r})")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(name, f"must be a number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(name, f"must be a string (got {value!r})")
        return value
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(name, f"must be a list (got {value!r})")
        return [coerce(f"{name}[{i}]", v, inner) for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(name, f"must be a table (got {value!r})")
        return dict(value)
    if hint is Any:
        return value
    raise TypeError(f"unsupported config type {hint} for {name}")  # a bug in this file
