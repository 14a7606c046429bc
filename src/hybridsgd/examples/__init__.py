"""The example configs and model file that ship with the package: ``hybridsgd examples``
lists them and ``hybridsgd examples --copy DIR`` copies them (``examples/`` by default), so
that every command of the README works from an installed wheel."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from hybridsgd.errors import ConfigError

#: what ships, in the order they are listed
FILES = (
    "digits-backup.toml",
    "digits-stragglers.toml",
    "diloco-slow-link.toml",
    "own-model.toml",
    "own_model.py",
)


def describe(name: str) -> str:
    """The first line of a shipped file's opening comment or docstring."""
    text = resources.files(__name__).joinpath(name).read_text()
    for line in text.splitlines():
        line = line.strip().lstrip("#").strip().strip('"').strip()
        if line:
            return line
    return ""


def copy(to: str | Path = "examples", force: bool = False) -> list[Path]:
    """Copy every shipped example into ``to``; an existing file is kept unless ``force``
    (ConfigError naming them, before anything is copied)."""
    to = Path(to)
    if to.exists() and not to.is_dir():
        raise ConfigError("--copy", f"{to} is a file; give a directory")
    there = [to / n for n in FILES if (to / n).exists()]
    if there and not force:
        raise ConfigError(
            "--copy", f"{', '.join(str(p) for p in there)} exist already; add --force to replace"
        )
    to.mkdir(parents=True, exist_ok=True)
    done = []
    for name in FILES:
        with resources.as_file(resources.files(__name__).joinpath(name)) as src:
            shutil.copyfile(src, to / name)
        done.append(to / name)
    return done
