"""When a task may run in its slot's warm process: the agent's own interpreter and the
same Python environment variables. A forked child cannot become another interpreter or
another virtual environment: its modules and sys.path are the warm process's."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping

# What Python reads from the environment at start-up only: a task that sets them
# differently from its warm process would not get them in a forked child.
_STARTUP = ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONNOUSERSITE",
            "PYTHONUSERBASE", "PYTHONHASHSEED", "PYTHONOPTIMIZE", "PYTHONIOENCODING",
            "PYTHONUTF8", "PYTHONWARNINGS", "PYTHONDEVMODE", "PYTHONPLATLIBDIR",
            "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONMALLOC", "PYTHONFAULTHANDLER",
            "PYTHONTRACEMALLOC", "PYTHONPYCACHEPREFIX", "PYTHONINTMAXSTRDIGITS",
            "VIRTUAL_ENV")


def same_interpreter(interpreter: str) -> bool:
    """The agent's own: the same executable in the same folder (a virtual environment's
    python links to its base interpreter: the same file, another environment)."""
    found = shutil.which(interpreter)
    if not found:
        return False
    own = os.path.abspath(sys.executable)
    found = os.path.abspath(found)
    return found == own or (os.path.dirname(found) == os.path.dirname(own)
                            and os.path.realpath(found) == os.path.realpath(own))


def python_differs(task_env: Mapping[str, str], warm_env: Mapping[str, str]) -> str | None:
    """The first start-up variable the task sets differently from its warm process."""
    for name in _STARTUP:
        if task_env.get(name) != warm_env.get(name):
            return f"${name}"
    return None
