"""The agent's view of a script its warm process forked: what runner.py and
process.terminate_tree use of a Popen (pid, stdout, stderr, poll, wait, kill,
returncode), so a forked script is supervised, stopped and reported as a spawned one.

The script is the warm process's child, not the agent's: its exit status comes as a
message from the warm process, which reaps it. Signals go through a pidfd taken when
the pid arrives, so a pid reused after the script ended is never signalled. When the
warm process dies while the script runs, the status is lost with it: the handle then
waits for the script itself to end (the pidfd tells) and reports UNKNOWN_EXIT, which
describe_exit words as such: the task fails saying so, never completes.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from typing import IO

from hpo import defaults
from hpo.agent.warm import protocol


class WarmProcess:
    def __init__(self, sock: socket.socket, pid: int, args: list[str],
                 stdout: IO[bytes], stderr: IO[bytes]) -> None:
        self.pid = pid
        self.args = args
        self.stdout: IO[bytes] | None = stdout
        self.stderr: IO[bytes] | None = stderr
        self.returncode: int | None = None
        self._sock: socket.socket | None = sock
        self._lock = threading.Lock()
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except ProcessLookupError:  # it ended already: its status is on the way
            self._pidfd = None

    def poll(self) -> int | None:
        with self._lock:
            self._collect(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self.returncode is None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                self._collect(left)
                if self.returncode is None and left == 0.0:
                    raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.returncode is not None or self._pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _collect(self, timeout: float | None) -> None:
        """Take the exit status if it comes within ``timeout``."""
        if self.returncode is not None:
            return
        if self._sock is None:  # the warm process is gone: wait on the script itself
            if self._pidfd is None or select.select([self._pidfd], [], [], timeout)[0]:
                self._end(defaults.UNKNOWN_EXIT)
            return
        if not select.select([self._sock], [], [], timeout)[0]:
            return
        try:
            message, _ = protocol.receive(self._sock)
        except (protocol.Closed, OSError, ValueError):
            self._sock = None  # the warm process died: the status is lost
            self._collect(timeout)
            return
        self._sock = None  # the warm process's socket is its slot's again
        self._end(int(message["exit"]))

    def _end(self, returncode: int) -> None:
        self.returncode = returncode
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
