"""Users' own files, imported by path under names that any process can import again.

``module_name(path)`` is ``hybridsgd.userfiles.f<hex of the absolute path>``. Importing this
package installs a finder for those names, so a process that unpickles an object of a class
defined in such a file (a local worker, a sweep's pool process, a Ray worker on the same
file system) imports the file again by itself: pickle finds the class by module and name,
as for any installed module. See :mod:`hybridsgd.tasks.user`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

PREFIX = __name__ + ".f"


def module_name(path: str | Path) -> str:
    """The module name a user's file is imported under."""
    return PREFIX + str(Path(path).resolve()).encode().hex()


def path_of(name: str) -> Path | None:
    """The file a :func:`module_name` stands for (``None`` for any other name)."""
    if not name.startswith(PREFIX):
        return None
    try:
        return Path(bytes.fromhex(name[len(PREFIX) :]).decode())
    except ValueError:
        return None


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001, ANN201
        file = path_of(fullname)
        if file is None:
            return None
        if not file.is_file():
            raise ModuleNotFoundError(f"no such file: {file}", name=fullname)
        # the file's own directory is searched too, as for a script, so that it may import
        # its neighbours (last, so that it never hides an installed module)
        folder = str(file.parent)
        if folder not in sys.path:
            sys.path.append(folder)
        loader = importlib.machinery.SourceFileLoader(fullname, str(file))
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.append(_Finder())
