"""What a forked child does to become ``python script.py ARGS`` as a spawned script
would be: its own session, the task's descriptors, environment, working directory,
``sys.argv``, ``sys.path[0]``, default signal handlers, the script run as
``__main__``, and the exit status Python would give it."""

from __future__ import annotations

import atexit
import io
import os
import pkgutil  # noqa: F401 - runpy.run_path imports it: once here, not in every task
import runpy
import signal
import socket
import sys
import threading
from typing import Any, NoReturn

from hpo.agent.warm import proctitle

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType

# Python's own start-up handlers (Python/pylifecycle.c): SIGINT raises
# KeyboardInterrupt, SIGPIPE and SIGXFSZ are ignored; every other signal is default.
_PYTHON_HANDLERS: dict[signal.Signals, Any] = {signal.SIGINT: signal.default_int_handler,
                    signal.SIGPIPE: signal.SIG_IGN, signal.SIGXFSZ: signal.SIG_IGN}


def become_script(sock: socket.socket, message: dict[str, Any], fds: list[int]) -> NoReturn:
    """Never returns: the child ends with os._exit (or a signal)."""
    sock.close()
    os.setsid()  # own session and process group: the agent kills the group
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    _reset_signals()
    # Before anything else runs: the GPU variables are in it (CUDA reads them once).
    _set_environment(message["env"])
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
    _run(script)


def _set_environment(env: dict[str, str]) -> None:
    """os.environ (and the C environment under it) becomes ``env``; only what differs
    is changed: a task's environment is mostly its warm process's."""
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in signal.Signals:
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        wanted = _PYTHON_HANDLERS.get(sig, signal.SIG_DFL)
        try:
            if signal.getsignal(sig) is not wanted:
                signal.signal(sig, wanted)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _reseed() -> None:
    """Fresh random state, as a new process has: ``random`` reseeds itself after a
    fork; NumPy's global generator, seeded once in the warm process, does not."""
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        try:
            numpy_random.seed()
        except Exception:
            pass


def _run(script: str) -> NoReturn:
    """Run the script and end as Python ends after it, without tearing the interpreter
    down (tens of milliseconds with preloaded modules): non-daemon threads joined,
    atexit handlers run, the script's open files and stdio flushed, os._exit."""
    script_globals: dict[str, Any] | None = None
    interrupted = False
    try:
        script_globals = runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        script_globals = _globals_of(exc.__traceback__, script)
        code = _exit_code(exc.code)
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


def _exit_code(code: object) -> int:
    """SystemExit's code as Python turns it into an exit status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def _finish(script_globals: dict[str, Any] | None) -> None:
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads
    except BaseException:
        pass
    atexit._run_exitfuncs()
    # A file the script left open in a global is flushed by Python's teardown; here
    # by hand (files elsewhere are their module's: logging's atexit handler closes its).
    for value in (script_globals or {}).values():
        if isinstance(value, io.IOBase):
            try:
                value.flush()
            except Exception:
                pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


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
