"""The compiled code of the scripts a warm process forks, kept from one task to the next.

Every task of an optimization runs the same script, and a script run as ``__main__`` has
no bytecode cache: `python script.py` compiles it each time, a few milliseconds a task.
The warm process compiles it once, before the fork, and its children inherit the code.
A kept code is used only while the file's identity, size and change time (in ns) are
the ones it was compiled from (stricter than Python's own .pyc check, seconds and size),
so an edited script is compiled again. Standard library only: the warm process imports
it.
"""

from __future__ import annotations

import os
import zipimport
from importlib.util import MAGIC_NUMBER

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every warm slot
if TYPE_CHECKING:
    from types import CodeType

# Scripts kept at most: an agent serves a few optimizations at a time.
_KEPT = 16


def read_code(path: str, filename: str) -> CodeType | None:
    """The code of the script at ``path`` as `python script.py` compiles it, under
    ``filename`` (the path the child runs it as: tracebacks and ``__file__`` show it);
    None for a compiled bytecode file or a zip archive (a zipapp, run by its
    ``__main__.py``): runpy runs those. Raises OSError, and SyntaxError (or ValueError,
    a NUL byte) as Python would report them."""
    with open(path, "rb") as f:
        source = f.read()
    if source.startswith(MAGIC_NUMBER) or _is_zip(path):
        return None
    # dont_inherit: not this module's __future__ imports (annotations) but the script's.
    return compile(source, filename, "exec", dont_inherit=True)


def _is_zip(path: str) -> bool:
    """Whether `python path` runs it as a zip archive: as runpy tells, by its import hook."""
    try:
        zipimport.zipimporter(path)
    except zipimport.ZipImportError:
        return False
    return True


class CompiledScripts:
    """The warm process's kept codes, by the path each was read from."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple[int, int, int, int], CodeType]] = {}

    def get(self, script: str, cwd: str) -> CodeType | None:
        """The code of ``script`` (a path as the child sees it, after its chdir to
        ``cwd``), compiled now or kept; None when the child must read it itself: a
        file that cannot be read or does not compile, whatever compile raises (it
        reports that as Python would), bytecode or a zip archive."""
        path = os.path.join(cwd, script)
        try:
            st = os.stat(path)
            # Taken before the read: a change after it shows as a new key next time.
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            kept = self._kept.get(path)
            if kept is not None and kept[0] == key:
                return kept[1]
            code = read_code(path, script)
        except Exception:  # MemoryError, RecursionError too: this process serves on
            return None
        if code is not None:
            if len(self._kept) >= _KEPT:
                self._kept.pop(next(iter(self._kept)))  # the oldest
            self._kept[path] = (key, code)
        return code
