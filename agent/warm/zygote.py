"""The warm process of one slot: imports hpo and the preloaded modules once, then forks
a child per task and reports the child's pid and exit status to the agent.

Started by the agent (``slot.py``) with the agent's own interpreter as
``python -c "...main()" FD MODULES PADDING``: FD is its end of a private socket pair,
MODULES the comma-separated list to preload, PADDING room for the children's command
lines (``proctitle``). One task at a time (a slot runs one), so the loop is plain:
request, pid, wait, exit status, reap; each task runs in a child forked before it came
(``standby``). It exits when the agent's end closes (the agent stopped or died), also
while a child runs: the child, reparented, then sees its parent change and stops itself
as an orphaned spawned script does (hpo.sdk.agent_backend).
"""

from __future__ import annotations

import importlib
import os
import select
import socket
import sys
import threading
import traceback

from hpo.agent.warm import proctitle, protocol
from hpo.agent.warm.scripts import CompiledScripts
from hpo.agent.warm.standby import Standby

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Imported with hpo, besides the --preload list: what every task's Task.init imports under
# an agent, and what nearly every training script's argparse imports (shutil and locale on
# its first parser), each a few milliseconds per task otherwise, C extensions included.
WARM_MODULES = ("hpo.sdk.agent_backend", "argparse", "shutil", "locale")

_scripts = CompiledScripts()


def main() -> None:
    fd, modules = int(sys.argv[1]), [m for m in sys.argv[2].split(",") if m]
    sock = socket.socket(fileno=fd)
    # sys.path[0] is "" (from -c): a child puts its script's folder there.
    proctitle.set_title(f"hpo-agent warm slot (preload: {','.join(['hpo', *modules])})")
    loaded = preload(["hpo", *WARM_MODULES, *modules])
    warm_up()
    protocol.send(sock, {"ready": True, **loaded})
    serve(sock, safe=loaded["unsafe"] is None)


def preload(modules: list[str]) -> dict[str, Any]:
    """Import ``modules``: which failed (name: one line) and, if fork is now unsafe,
    why (the module that started a thread or initialised CUDA)."""
    failed: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            failed[name] = "".join(traceback.format_exception_only(exc)).strip()
            continue
        hazard = fork_hazard()
        if hazard:
            return {"failed": failed, "unsafe": f"{name}: {hazard}"}
    return {"failed": failed, "unsafe": None}


def warm_up() -> None:
    """What a script's first argument parser compiles (regular expressions, kept in
    ``re``'s cache) done here once, inherited by every child. Best effort."""
    try:
        import argparse

        parser = argparse.ArgumentParser(prog="warm-up")
        parser.add_argument("--value", type=float, default=0.0)
        parser.parse_args(["--value", "-1.5"])
    except BaseException:
        pass


def fork_hazard() -> str | None:
    """Why forking this process now is unsafe, or None. A forked child gets only the
    forking thread: a lock another thread held stays locked in it for ever, and CUDA
    cannot be used in a child forked after it was initialised."""
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate()
                          if t is not threading.main_thread())
        return f"started a thread at import ({names}); fork is unsafe with threads"
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_initialized():
        return "initialised CUDA at import; a forked child cannot use CUDA"
    return None


def serve(sock: socket.socket, safe: bool = True) -> None:
    """Until the agent's end closes. ``safe``: fork is safe here; once it is not (an
    import made it unsafe: the agent replaces this process), no child is forked ahead."""
    standby: Standby | None = None
    try:
        while True:
            if standby is None and safe:
                standby = fork_ahead(sock)
            try:
                message, fds = protocol.receive(sock)
            except protocol.Closed:
                return
            if message.get("op") == "import":
                if standby is not None:  # forked before the import: it lacks the modules
                    standby.discard()
                    standby = None
                answer = preload(message["modules"])
                safe = safe and answer["unsafe"] is None
                protocol.send(sock, answer)
                continue
            task, standby = start(sock, standby, message, fds), None
            protocol.send(sock, {"pid": task.pid})
            _scripts.get(message["argv"][0], message["cwd"])  # kept for the next standby
            try:
                status = wait(sock, task.pid, task.notice)
            finally:
                os.close(task.notice)
            if status is None:
                return
            protocol.send(sock, {"exit": status})
            reap(task.pid)
    finally:
        if standby is not None:
            standby.discard()


def fork_ahead(sock: socket.socket) -> Standby | None:
    """The next task's child, forked now; None when the fork fails now (it is tried
    again when the task comes, and fails it then)."""
    try:
        return Standby.fork(sock, _scripts)
    except OSError:
        return None


def start(sock: socket.socket, standby: Standby | None, message: dict[str, Any],
          fds: list[int]) -> Standby:
    """The task given to ``standby``, or, without one or should it be gone (killed), to
    a child forked now; the fork request's descriptors closed here either way."""
    try:
        if standby is not None:
            try:
                standby.give(message, fds)
                return standby
            except OSError:
                standby.discard()
        standby = Standby.fork(sock, _scripts)
        standby.give(message, fds)
        return standby
    finally:
        for fd in fds:
            os.close(fd)


def wait(sock: socket.socket, pid: int, notice: int) -> int | None:
    """The child's exit status as Popen.returncode has it (-N: killed by signal N);
    None when the agent's end closed first (this process then exits; the child,
    orphaned, stops itself). The agent sends nothing while a child runs: a stray byte
    means a broken agent, and is taken as a close too.

    The status the child tells on ``notice`` just before its os._exit is taken at once:
    the kernel's teardown of a forked process's address space (about 2 ms with the
    preloaded modules) is not waited for (``reap`` waits for it after). A child that
    ends another way (a signal) tells nothing: its status is the kernel's, as is one
    that ended before its notice was read."""
    pidfd = os.pidfd_open(pid)  # the child is unreaped: its pid cannot be reused yet
    watched = [sock.fileno(), pidfd, notice]
    try:
        while True:
            ready, _, _ = select.select(watched, [], [])
            if pidfd in ready:
                _, status = os.waitpid(pid, 0)
                return os.waitstatus_to_exitcode(status)
            if notice in ready:
                told = os.read(notice, 16)
                if told.isdigit():
                    return int(told)
                watched.remove(notice)  # closed untold: the pidfd will tell
                continue
            return None
    finally:
        os.close(pidfd)


def reap(pid: int) -> None:
    """Wait for a child whose status came by its notice (it is ending: a few ms at
    most); one reaped already by ``wait`` is not this process's child any more."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
