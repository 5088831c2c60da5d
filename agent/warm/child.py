"""What a forked child does to become ``python script.py ARGS`` as a spawned script
would be: its own session, the task's descriptors, environment, working directory,
``sys.argv``, ``sys.path[0]``, default signal handlers, the script run as
``__main__``, and the exit status Python would give it."""

from __future__ import annotations

import io
import os
import pkgutil  # noqa: F401 - runpy.run_path imports it: once here, not in every task
import runpy
import signal
import socket
import sys
import types
from typing import Any, NoReturn

from hpo.agent.warm import proctitle, scripts
from hpo.agent.warm.program import exit_code, finish, reset_signals, set_environment

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType, TracebackType


def detach() -> None:
    """What a child does before it knows its task: its own session and process group
    (the agent kills the group), Python's start-up signal handlers."""
    os.setsid()
    reset_signals()


def become_script(sock: socket.socket, message: dict[str, Any], fds: list[int],
                  code: CodeType | None = None, *, detached: bool = False) -> NoReturn:
    """Never returns: the child ends with os._exit (or a signal). ``code``: the
    script's, compiled by the warm process (``scripts``); None: read here.
    ``detached``: ``detach()`` was done already (a spare child, ``spare.py``)."""
    sock.close()
    if not detached:
        detach()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    # Before anything else runs: the GPU variables are in it (CUDA reads them once).
    set_environment(message["env"])
    sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))
    argv = list(message["argv"])  # [script, *args], as sys.argv of `python script.py`
    proctitle.set_title(" ".join([message["python"], *argv]))
    try:
        os.chdir(message["cwd"])
    except OSError as exc:
        print(f"hpo-agent: cannot enter the working directory: {exc}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    sys.argv = argv
    script = argv[0]
    # `python script.py` puts the script's folder, links resolved, first on sys.path.
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    _reseed()
    _run(script, code)


def _reseed() -> None:
    """Fresh random state, as a new process has: ``random`` reseeds itself after a
    fork; NumPy's global generator, seeded once in the warm process, does not."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed()
        except Exception:
            pass


def _run(script: str, compiled: CodeType | None) -> NoReturn:
    """Run the script and end as Python ends after it, without tearing the interpreter
    down (tens of milliseconds with preloaded modules): non-daemon threads joined,
    atexit handlers run, the script's open files and stdio flushed, os._exit."""
    script_globals: dict[str, Any] | None = None
    interrupted = False
    try:
        script_globals = _run_main(script, compiled)
        code = 0
    except SystemExit as exc:
        script_globals = _globals_of(exc.__traceback__, script)
        code = exit_code(exc.code)
    except BaseException as exc:
        script_globals = _globals_of(exc.__traceback__, script)
        # A syntax error in the script: Python shows where, with no traceback.
        syntax = isinstance(exc, SyntaxError) and exc.filename == script
        tb = None if syntax else _from_script(exc.__traceback__, script)
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        code, interrupted = 1, isinstance(exc, KeyboardInterrupt)
    _finish(script_globals)
    if interrupted:  # Python dies of the SIGINT it did not handle (returncode -2)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _run_main(script: str, code: CodeType | None) -> dict[str, Any]:
    """Run the script as ``__main__`` as runpy.run_path(script, run_name="__main__")
    does (a fresh module, ``__spec__`` and ``__loader__`` None), from the warm process's
    compiled code, or from the file when there is none; the script's globals. A
    bytecode file or a zip archive is left to runpy."""
    if code is None:
        code = scripts.read_code(script, script)
        if code is None:
            return runpy.run_path(script, run_name="__main__")
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=script, __cached__=None, __loader__=None,
                           __package__="", __spec__=None)
    sys.modules["__main__"] = module  # as in `python script.py`, also for atexit handlers
    exec(code, module.__dict__)
    return module.__dict__


def _finish(script_globals: dict[str, Any] | None) -> None:
    # A file the script left open in a global is flushed by Python's teardown; here
    # by hand (files elsewhere are their module's: logging's atexit handler closes its).
    finish([value for value in (script_globals or {}).values()
            if isinstance(value, io.IOBase)])


def _globals_of(tb: TracebackType | None, script: str) -> dict[str, Any] | None:
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == script:
            return tb.tb_frame.f_globals
        tb = tb.tb_next
    return None


def _from_script(tb: TracebackType | None, script: str) -> TracebackType | None:
    """The traceback from the script's own frame on, as `python script.py` prints it
    (without runpy's frames); the whole of it when the script's frame is not in it
    (a syntax error)."""
    first = tb
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == script:
            return tb
        tb = tb.tb_next
    return first
