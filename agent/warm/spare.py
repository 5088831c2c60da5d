"""A spare child: forked by the warm process ahead of the next task, so that the task's
script starts without waiting for a fork.

A fork costs a few milliseconds before the child runs (a millisecond or two on a small
virtual machine, more for a large process), and it came between a task's message and
its script. A spare is forked once the warm process is idle (after a task's end, an
import or an adoption), detaches (``child.detach``: its own session, default signal
handlers) and waits on the agent's socket in the warm process's place, while the warm
process waits on the spare:

* a fork request: the spare says so to the warm process ("taken", with the script, for
  its cache of compiled code), gives the agent its own pid and becomes the script; the
  warm process takes the agent's socket back, waits for the script's end and reports
  its status, as for a child it forked then;
* any other request (an import, an adoption): the spare forwards it to the warm
  process, which serves it, and exits (a spare forked before an import lacks the
  module);
* the agent's end closing, or the warm process's: the spare exits.

A spare tells the warm process before it reads the socket. One that dies without a word
(killed) before that read nothing: the warm process forks another (and after a few in a
row, reads the socket itself). One that dies after it may have taken a request off the
socket: the warm process then closes the socket and exits, and the agent starts another
(as it does for a warm process that died). Standard library only: the warm process
imports it.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import traceback

from hpo.agent.warm import child, proctitle, protocol
from hpo.agent.warm.scripts import CompiledScripts

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

TITLE = "hpo-agent warm slot (spare)"


class Spare:
    """The warm process's handle on its spare: its pid and their private socket."""

    def __init__(self, pid: int, sock: socket.socket) -> None:
        self.pid = pid
        self.sock = sock
        self.pidfd = os.pidfd_open(pid)

    def wait(self) -> tuple[str, dict[str, Any], list[int]]:
        """What the spare did: ("taken", {"script", "cwd"}, []), ("forward", the
        request, its descriptors); or, when it ended without a word, ("died", {}, [])
        if it had not begun to read the agent's socket, ("lost", {}, []) if it had (a
        request may be half read). The spare is reaped unless it took a task (it is
        the task's script then)."""
        reading = False
        try:
            while True:
                ready, _, _ = select.select([self.sock.fileno(), self.pidfd], [], [])
                if self.sock.fileno() not in ready:
                    break
                try:
                    message, fds = protocol.receive(self.sock)
                except (protocol.Closed, OSError, ValueError):
                    break
                if "reading" in message:
                    reading = True
                    continue
                if "taken" in message:
                    return "taken", message["taken"], []
                if "forward" in message:
                    os.waitpid(self.pid, 0)
                    return "forward", message["forward"], fds
                break
            os.waitpid(self.pid, 0)
            return ("lost" if reading else "died"), {}, []
        finally:
            self.sock.close()
            os.close(self.pidfd)


class SpareLost(Exception):
    """A spare was forked but cannot be watched (no pidfd): killed at once, it may have
    read a request already, so its warm process must end as for a spare that died."""


def fork_spare(agent: socket.socket, scripts: CompiledScripts) -> Spare:
    """Fork a spare serving ``agent`` (the warm process's socket to its agent). OSError:
    none was forked; SpareLost: see there."""
    ours, theirs = socket.socketpair()
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        raise
    if pid == 0:
        try:
            ours.close()
            _serve(agent, theirs, scripts)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(1)
    theirs.close()
    try:
        return Spare(pid, ours)
    except OSError:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ours.close()
        raise SpareLost() from None


def _serve(agent: socket.socket, warm: socket.socket, scripts: CompiledScripts) -> NoReturn:
    child.detach()
    proctitle.set_title(TITLE)
    # The agent's next request, or the warm process's end (its socket then reads EOF).
    ready, _, _ = select.select([agent, warm], [], [])
    if warm in ready:
        os._exit(0)
    # From here a request may be half read: should this process die now, its warm
    # process must not read the socket after it.
    protocol.send(warm, {"reading": True})
    try:
        message, fds = protocol.receive(agent)
    except (protocol.Closed, OSError, ValueError):
        os._exit(0)  # the agent's end closed: the warm process sees it next
    if "op" in message:
        protocol.send(warm, {"forward": message}, fds)
        os._exit(0)
    script, cwd = message["argv"][0], message["cwd"]
    code = scripts.get(script, cwd)
    # The warm process first, so that it owns the script's end before the agent knows
    # the pid: were the spare killed in between, the agent gets an exit status where it
    # waits for a pid, takes the warm process for broken and spawns the script.
    protocol.send(warm, {"taken": {"script": script, "cwd": cwd}})
    warm.close()
    protocol.send(agent, {"pid": os.getpid()})
    child.become_script(agent, message, fds, code, detached=True)
