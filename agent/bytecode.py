"""hpo's bytecode cache, written once by the agent so that no task compiles it again.

Every task's script imports hpo. An editable install (the README's set-up) keeps hpo's
source in the checkout, and with ``PYTHONDONTWRITEBYTECODE`` set (Docker images and many
shells set it) Python never writes its ``__pycache__``: each task then compiled hpo anew,
about 20 ms of every trial. Python still reads a cache that exists, so the agent writes
it once at start; explicit compilation is not held back by that variable.
"""

from __future__ import annotations

import compileall
import importlib.util
import logging
import threading
from pathlib import Path

log = logging.getLogger("hpo.agent")


def write_cache_in_background() -> threading.Thread:
    """Compile hpo's modules in a daemon thread (serving does not wait for it)."""
    thread = threading.Thread(target=write_cache, name="hpo-bytecode", daemon=True)
    thread.start()
    return thread


def write_cache() -> bool:
    """Write the missing or stale ``.pyc`` files of hpo's packages (``hpo``, and the
    agent's own, which the warm processes import: an editable install maps them from
    folders of their own); False when one is not writable (an install owned by another
    user: tasks compile as before)."""
    folders = {Path(folder) for name in ("hpo", "hpo.agent", "hpo.controller",
                                          "hpo.strategies")
               if (spec := importlib.util.find_spec(name)) is not None
               for folder in spec.submodule_search_locations or ()}
    done = True
    for folder in sorted(folders):
        try:
            done = bool(compileall.compile_dir(folder, quiet=2)) and done
        except OSError as exc:
            done = False
            log.debug("cannot write hpo's bytecode cache in %s: %s", folder, exc)
    return done
