"""The shape of the source: no module grows past a size a reader can hold (issue 35's bar;
ruff's C901 holds functions to complexity 20, pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

MAX_LINES = 600


def test_no_module_in_src_is_longer_than_600_lines():
    src = Path(__file__).parents[1] / "src" / "hybridsgd"
    long = {
        str(p.relative_to(src)): n
        for p in src.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules where their parts are: {long}"


def test_no_package_init_grows_past_200_lines():
    """A package's __init__ says what it holds and re-exports; its code lives in modules.
    (A loose guard: the backends' __init__ files held 242 and 501 lines of code before.)"""
    src = Path(__file__).parents[1] / "src" / "hybridsgd"
    heavy = {
        str(p.relative_to(src)): n
        for p in src.rglob("__init__.py")
        if (n := len(p.read_text().splitlines())) > 200
    }
    assert not heavy, heavy
