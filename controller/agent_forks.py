"""Local agents forked from the controller's own process (``hpo-controller start
--local-agents N``), not started as new interpreters: a new one pays about 0.5 s of
imports (SQLAlchemy, Celery, hpo) that the controller has already paid, and on a small
machine the agents' imports and the controller's start-up share the same cores.

``fork_agents`` forks once the CLI has imported what an agent needs and before it opens
the store or the broker or starts a thread: a forked child gets only the forking thread
and must not share a connection with its parent (SQLite's and the broker's included).
Each fork finishes the agent's own imports while the controller creates the
optimization, then waits on a pipe for its start: the ``LocalAgents`` that takes it sends
the agent's command line, environment and log file once the optimization has its queue.
From there it is what a spawned ``python -m hpo.agent.cli ...`` would be: its own
session, its output in its log file, the store and broker URLs in its environment,
``--exit-with`` the controller (its parent), stopped by SIGTERM. A fork whose pipe
closes without a start (the controller failed before it needed agents, or died) leaves
at once, silently."""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from hpo import defaults
from hpo.agent.warm import program
from hpo.limits import EMBEDDED_PREFIXES


class ForkedAgent:
    """The controller's handle on one forked agent: the part of ``subprocess.Popen``
    that ``LocalAgents`` uses (poll, wait, send_signal, kill, returncode)."""

    def __init__(self, pid: int, start_fd: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._start_fd: int | None = start_fd
        self._lock = threading.Lock()  # one waitpid at a time: the watcher and stop()

    def start(self, argv: list[str], env: dict[str, str], log_file: Path) -> None:
        """Let the fork become ``hpo-agent ARGV``: sent once, then its pipe is closed.
        A fork that has already died is not an error here: poll() says it has ended."""
        if self._start_fd is None:
            return
        data = json.dumps({"argv": argv, "env": env, "log": str(log_file)}).encode()
        try:
            with open(self._start_fd, "wb", closefd=True) as pipe:
                pipe.write(data)
        except OSError:  # EPIPE: the fork is gone, and will be reaped as ended
            pass
        self._start_fd = None

    def discard(self) -> None:
        """Never started: the fork sees its pipe close and leaves."""
        if self._start_fd is not None:
            os.close(self._start_fd)
            self._start_fd = None

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status once it has ended. Without a timeout it blocks without
        holding the lock (a poll() meanwhile, from the watcher, answers at once)."""
        if timeout is None:
            while (code := self.poll()) is None:
                try:  # until it has ended, leaving it to be reaped under the lock
                    os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
                except ChildProcessError:  # reaped meanwhile: poll() has its status
                    pass
            return code
        # As Popen.wait: no blocking wait with a timeout for a pid, so a short poll.
        deadline = time.monotonic() + timeout
        delay = defaults.FORKED_AGENT_WAIT_FIRST_S
        while (code := self.poll()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(f"agent pid {self.pid}", timeout)
            time.sleep(min(delay, left))
            delay = min(delay * 2, defaults.FORKED_AGENT_WAIT_MAX_S)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # never a signal to a reaped pid (it may be reused)
            os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _reap(self, flags: int) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, flags)
                except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): status lost
                    self.returncode = 255
                else:
                    if pid == self.pid:
                        self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode


def fork_unsafe() -> str | None:
    """Why agents cannot be forked from this process now (spawned instead), or None."""
    if not hasattr(os, "fork"):
        return "this platform has no fork"
    if sys.platform == "darwin":  # as Python's multiprocessing, which spawns there too
        return "on macOS a fork that does not exec is unsafe with the system's libraries"
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate()
                          if t is not threading.main_thread())
        return f"threads already run in the controller ({names})"
    return None


def import_drivers(urls: list[str]) -> None:
    """The SQLAlchemy dialects and drivers of the store and of an SQL broker at ``urls``:
    the controller and each agent load them at their first connection; imported before
    the fork, once; with the embedded broker its transport too. Best effort: a URL that
    names none is skipped."""
    from sqlalchemy.engine import make_url

    for url in urls:
        embedded = url.startswith(EMBEDDED_PREFIXES)
        sql = url.split("+", 1)[1] if embedded else url
        try:
            make_url(sql).get_dialect().import_dbapi()
            if embedded:
                import hpo.queue.embedded  # noqa: F401 - the transport (hpo.queue.app)
        except Exception:  # not an SQL URL (redis://), or a driver that is missing
            continue


# Held around each fork, and in the fork until it has its own session and handlers.
_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def fork_agents(count: int, broker_url: str) -> list[ForkedAgent]:
    """``count`` forks waiting for their start, as agents on ``broker_url``. Call before
    this process opens any connection or starts any thread (``fork_unsafe`` says
    whether it has)."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # else each fork would write this process's buffered output too
    forks: list[ForkedAgent] = []
    for _ in range(count):
        read_fd, write_fd = os.pipe()
        inherited = _open_fds()  # listed here: the fork closes them (siblings' pipes too)
        # A Ctrl-C or a SIGTERM waits until the fork is made: in the fork until it is in
        # a session of its own (before it, the controller's would have run in it).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                _fork_main(read_fd, inherited, broker_url)
            os.close(read_fd)
            forks.append(ForkedAgent(pid, write_fd))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    return forks


def _open_fds() -> list[int] | None:
    """This process's open descriptors, or None where /proc cannot say."""
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return None


# ----- in the fork ----------------------------------------------------------------------


def _fork_main(start_fd: int, inherited: list[int] | None, broker_url: str) -> NoReturn:
    """Never returns into the controller's code: the fork ends with os._exit."""
    code = 1
    try:
        _detach(start_fd, inherited)
        try:  # what the agent can do before its start, while it waits for it
            import hpo.agent.cli  # noqa: F401
            from hpo.agent.warm.slot import start_ahead
            from hpo.agent.worker import warm_up

            warm_up(broker_url)
            if os.environ.get(defaults.ENV_AGENT_SPAWN) != "1":
                # A local agent has one slot: its warm process starts now, alongside
                # the controller's set-up, not after this agent's start.
                start_ahead(1)
            failed: BaseException | None = None
        except BaseException as exc:  # told in the agent's log, once there is one
            failed = exc
        _collector_on()
        start = _read_start(start_fd)
        if start is None:
            code = 0
        else:
            _redirect(start)
            if failed is not None:
                raise failed
            code = _run_agent(start["argv"])
    except SystemExit as exc:
        code = program.exit_code(exc.code)
    except BaseException:
        traceback.print_exc()
    program.finish()
    os._exit(code)


def _detach(start_fd: int, inherited: list[int] | None) -> None:
    """Let go of all the controller's: its descriptors (a fork that never execs keeps
    every one, and whoever waits for their end, a pipe's reader or an flock's next
    holder, would wait for the agents too: only the start pipe stays), its stdin and
    output (until the start gives its log: the controller's output must not wait for a
    fork), its session (a Ctrl-C in the terminal is the controller's, not its agents'),
    and its signal handlers (Python's, as a spawned agent starts with; the signals
    blocked around the fork unblocked)."""
    _close_inherited(start_fd, inherited)
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    if null > 2:
        os.close(null)
    os.setsid()
    for signum in _HELD_SIGNALS:  # one sent to the controller's group before setsid
        signal.signal(signum, signal.SIG_IGN)  # is discarded, not delivered here
    program.reset_signals()


def _collector_on() -> None:
    """The fork was made while the controller loaded its modules, the garbage collector
    paused (``hpo.cli.common.loading_modules``), and loaded the agent's the same way:
    what they made frozen, the collector on, as in a spawned agent."""
    gc.freeze()
    gc.enable()


def _close_inherited(keep: int, inherited: list[int] | None) -> None:
    if inherited is None:
        os.closerange(3, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))
        return
    for fd in inherited:
        if fd >= 3 and fd != keep:
            try:
                os.close(fd)
            except OSError:  # the listing's own descriptor, closed since
                pass


def _read_start(fd: int) -> dict[str, Any] | None:
    with open(fd, "rb", closefd=True) as pipe:
        data = pipe.read()
    return json.loads(data) if data else None


def _redirect(start: dict[str, Any]) -> None:
    """The agent's output into its log file, its environment the one it was given."""
    log_fd = os.open(start["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for target in (1, 2):
        os.dup2(log_fd, target)
    os.close(log_fd)
    # Python's own streams on those descriptors, whatever the controller put in their
    # place (a test runner's capture): what the agent prints goes to its log.
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    program.set_environment(start["env"])


def _run_agent(argv: list[str]) -> int:
    """``hpo-agent ARGV``, as LocalAgents would have spawned it."""
    from hpo.agent.cli import main
    from hpo.agent.warm.proctitle import set_title

    # The controller's -v logging set-up is not the agent's: it configures its own.
    for handler in list(logging.root.handlers):
        logging.root.removeHandler(handler)
    sys.argv = ["hpo-agent", *argv]
    # What ps shows: the spawned agent's command line, as much as the controller's fits.
    set_title(" ".join([sys.executable, "-m", "hpo.agent.cli", *argv]))
    return main(argv)
