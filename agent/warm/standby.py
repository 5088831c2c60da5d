"""A child the warm process forks before its task is known, that waits for it.

Forked once the warm process is ready and again once each task has ended, it has its
own session and Python's start-up signal handlers already when the agent sends the next
task: the fork, the child's first run and that set-up (about 1.5 ms) are then off the
hand-off between one task and the next, done while the agent records the last one.
What it does once it has its task is what a child forked for the task would do
(``child.become_script``), so a script sees no difference.

A standby is forked anew after every import (its modules would be missing in it) and
ends with the warm process: it reads its task from a socket only the warm process holds
the other end of, and leaves when that end closes. Standard library only: the warm
process imports it.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
import sys
import traceback

from hpo.agent.warm import child, protocol

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every warm slot
if TYPE_CHECKING:
    from typing import Any, NoReturn

    from hpo.agent.warm.scripts import CompiledScripts


class Standby:
    """The warm process's handle on a waiting child: ``pid``, and ``notice``, where the
    child tells its exit status (``child.ExitNotice``)."""

    def __init__(self, pid: int, task: socket.socket, notice: int) -> None:
        self.pid = pid
        self.notice = notice
        self._task = task

    @classmethod
    def fork(cls, sock: socket.socket, scripts: CompiledScripts) -> Standby:
        """A child of this process, waiting for its task; ``sock`` (this process's end
        of the agent's socket) is closed in it, ``scripts`` has the code it may run."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        notice, told = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # else the child would write this process's buffered output too
        # What is here now is never collected in the child: its collections then skip
        # these objects instead of writing to each one's page (a copy of the page per
        # write). Here they are collectable again after the fork (both calls move
        # lists, no copy).
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            try:
                ours.close()
                os.close(notice)
                _wait_for_task(sock, theirs, told, scripts)  # ends with os._exit
            except BaseException:  # the child must never go on in the warm process's loop
                traceback.print_exc()
            os._exit(1)
        gc.unfreeze()
        theirs.close()
        os.close(told)
        return cls(pid, ours, notice)

    def give(self, message: dict[str, Any], fds: list[int]) -> None:
        """The task to run (the agent's fork request and its descriptors, which stay
        this process's to close). Raises OSError when the child is gone: then it is
        discarded and another takes the task."""
        protocol.send(self._task, message, fds)
        self._task.close()

    def discard(self) -> None:
        """End a child that has no task (killed: nothing of it can be running), and reap it."""
        self._task.close()
        os.close(self.notice)
        try:
            os.kill(self.pid, signal.SIGKILL)  # unreaped: its pid cannot be another's
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)


def _wait_for_task(sock: socket.socket, task: socket.socket, told: int,
                   scripts: CompiledScripts) -> NoReturn:
    """The child: its task-independent set-up, then the task, when it comes; an exit
    when the warm process discards it or ends."""
    child.detach(sock)
    try:
        message, fds = protocol.receive(task)
    except BaseException:  # the warm process closed its end, or a signal came
        os._exit(0)
    task.close()
    # The kept code of the script as of the fork, checked, or compiled here now.
    code = scripts.get(message["argv"][0], message["cwd"])
    child.become_script(message, fds, code, told)
