"""What a forked process that never execs does to begin and end as a new Python program
would: the warm process's task children (``child``) and hpo-controller's forked local
agents (``hpo.controller.agent_forks``). Standard library only: the warm process
imports it."""

from __future__ import annotations

import atexit
import io
import os
import signal
import sys
import threading
from collections.abc import Iterable
from typing import Any

# Python's own start-up handlers (Python/pylifecycle.c): SIGINT raises
# KeyboardInterrupt, SIGPIPE and SIGXFSZ are ignored; every other signal is default.
PYTHON_HANDLERS: dict[signal.Signals, Any] = {signal.SIGINT: signal.default_int_handler,
                   signal.SIGPIPE: signal.SIG_IGN, signal.SIGXFSZ: signal.SIG_IGN}


def set_environment(env: dict[str, str]) -> None:
    """os.environ (and the C environment under it) becomes ``env``; only what differs
    is changed: a fork's environment is mostly its parent's."""
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    for name, value in env.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def reset_signals() -> None:
    """Every handler Python's start-up one, no wake-up fd, and then no signal blocked
    (a parent that blocked some around its fork leaves them blocked in the child)."""
    signal.set_wakeup_fd(-1)
    for sig in signal.Signals:
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        wanted = PYTHON_HANDLERS.get(sig, signal.SIG_DFL)
        try:
            if signal.getsignal(sig) is not wanted:
                signal.signal(sig, wanted)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def exit_code(code: object) -> int:
    """SystemExit's code as Python turns it into an exit status (a message is printed
    to stderr, the status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def finish(files: Iterable[io.IOBase] = ()) -> None:
    """End as Python ends a program, without tearing the interpreter down or unwinding
    into the frames the fork began in: non-daemon threads joined, atexit handlers run,
    ``files`` and then stdio flushed. The caller ends with os._exit."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]  # joins non-daemon threads
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    streams: list[Any] = [*files, sys.stdout, sys.stderr]
    for stream in streams:
        try:
            stream.flush()
        except Exception:
            pass
