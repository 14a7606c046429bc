"""A user's own task named in a config: ``task.name = "path/to/file.py:build"`` or
``"package.module:build"``.

``build`` makes the task from the ``[task]`` section (a :class:`~hybridsgd.config.TaskConfig`
whose ``options`` hold every key of the section that hybridsgd does not know itself):

.. code-block:: python

    def build(cfg, seed):            # seed is optional: the model is initialised from it
        model = SmallCNN(width=cfg.options.get("width", 8))
        return h.Task.from_module(model, (x, y), F.cross_entropy, test=(xt, yt))

It returns an :class:`~hybridsgd.tasks.base.Task`, or ``(model, train, loss[, test])``, or a
dict of :meth:`Task.from_module`'s arguments. It runs under ``torch.manual_seed(run.seed)``
(the caller's random state is left as it was), so a config and a seed determine the model.

A file is imported as the module ``hybridsgd.userfiles.f<hex of its absolute path>``: a
finder installed by :mod:`hybridsgd.userfiles` imports it again under that name in any
process that unpickles one of its objects (the local backend's workers, a sweep's pool,
Ray), so classes defined in the file pickle by reference as usual. Its directory is put on
``sys.path``, as Python does for a script, so it may import its neighbours.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from hybridsgd.errors import ConfigError
from hybridsgd.tasks.base import Task

FIELD = "task.name"
EXPECTED = (
    "return an h.Task, (model, (x, y), loss_fn[, (x_test, y_test)]), "
    "or a dict of h.Task.from_module's arguments"
)


def is_user_spec(name: str) -> bool:
    """``name`` names a user's function (``FILE.py:FUNC`` or ``module:FUNC``), not a
    built-in task."""
    return ":" in name


def split_spec(name: str) -> tuple[str, str, bool]:
    """``(where, function, is_file)`` of ``FILE.py:FUNC`` or ``module.path:FUNC``."""
    where, _, func = name.rpartition(":")
    if not where or not func or not func.isidentifier():
        raise ConfigError(
            FIELD,
            f"{name!r}: write FILE.py:FUNCTION or package.module:FUNCTION, "
            'e.g. task.name = "mymodel.py:build"',
        )
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    if not is_file and not all(part.isidentifier() for part in where.split(".")):
        raise ConfigError(FIELD, f"{where!r} is neither a .py file nor a module name")
    return where, func, is_file


def absolute(name: str, base: Path | None = None) -> str:
    """``name`` with a relative file made absolute against ``base`` (default: the current
    directory), so that the spec means the same file from any directory or process."""
    if not is_user_spec(name):
        return name
    where, func, is_file = split_spec(name)
    if not is_file:
        return name
    p = Path(where).expanduser()
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return f"{p.resolve()}:{func}"


def module_of(name: str) -> Any:
    """Import the module of a spec (one line naming it on any failure)."""
    where, _, is_file = split_spec(name)
    if is_file:
        from hybridsgd.userfiles import module_name

        path = Path(where)
        if not path.is_file():
            raise ConfigError(FIELD, f"no such file: {path}")
        modname = module_name(path)
        shown = path.name
    else:
        modname, shown = where, where
    try:
        return importlib.import_module(modname)
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        if not is_file and exc.name == where.split(".")[0]:
            raise ConfigError(
                FIELD,
                f"no module named {where!r}: install it or put it on PYTHONPATH, "
                f"or name a file: path/to/{where.split('.')[-1]}.py:FUNCTION",
            ) from None
        raise ConfigError(FIELD, f"importing {shown} failed: {_one_line(exc)}") from None
    except (Exception, SystemExit) as exc:  # a user's file may raise anything on import
        raise ConfigError(FIELD, f"importing {shown} failed: {_one_line(exc)}") from None


def function_of(name: str) -> Callable[..., Any]:
    """The ``build`` function a spec names."""
    where, func, is_file = split_spec(name)
    module = module_of(name)
    shown = Path(where).name if is_file else where
    fn = getattr(module, func, None)
    if fn is None:
        own = sorted(
            n for n, v in vars(module).items()
            if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_")
        )  # fmt: skip
        defined = f" (it defines: {', '.join(own)})" if own else ""
        raise ConfigError(FIELD, f"{shown} has no function {func!r}{defined}")
    if not callable(fn):
        raise ConfigError(FIELD, f"{shown}:{func} is a {type(fn).__name__}, not a function")
    return fn


def check(name: str) -> None:
    """A spec whose file or module imports and defines the function (nothing is built)."""
    function_of(name)


def build(cfg: Any, seed: int) -> Task:
    """The task ``cfg.name`` builds, its model initialised under ``torch.manual_seed(seed)``."""
    fn = function_of(cfg.name)
    where, func, is_file = split_spec(cfg.name)
    shown = f"{Path(where).name if is_file else where}:{func}"
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    kwargs = {"seed": seed} if "seed" in params else {}
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            made = fn(cfg, **kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(FIELD, f"{shown} raised {_one_line(exc)}") from None
    task = _as_task(made, shown)
    task.name = shown
    return task


def _as_task(made: Any, shown: str) -> Task:
    if isinstance(made, Task):
        return made
    try:
        if isinstance(made, dict):
            return Task.from_module(**made)
        if isinstance(made, tuple | list) and len(made) in (3, 4):
            return Task.from_module(*made)
    except ConfigError as exc:
        raise ConfigError(FIELD, f"{shown} returned a task that does not work: {exc}") from None
    except TypeError as exc:
        raise ConfigError(FIELD, f"{shown} returned {_one_line(exc)}; {EXPECTED}") from None
    raise ConfigError(FIELD, f"{shown} returned {type(made).__name__}; {EXPECTED}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
