"""The warm process of one slot: imports hpo and the preloaded modules once, then forks
a child per task on the agent's request and reports the child's pid and exit status.

Started by the agent (``slot.py``) with the agent's own interpreter as
``python -c "...main()" FD MODULES PADDING``: FD is its end of a private socket pair,
MODULES the comma-separated list to preload, PADDING room for the children's command
lines (``proctitle``). One task at a time (a slot runs one), so the loop is plain:
request, fork, pid, wait, exit status. Once idle it forks a spare child (``spare.py``),
which then reads the next request in its place and, for a task, becomes the task's
script at once, without a fork in between. It exits when the agent's end closes (the
agent stopped or died), also while a child runs: the child, reparented, then sees its
parent change and stops itself as an orphaned spawned script does
(hpo.sdk.agent_backend).
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import socket
import sys
import threading
import traceback

from hpo.agent.warm import child, proctitle, program, protocol
from hpo.agent.warm.scripts import CompiledScripts
from hpo.agent.warm.spare import Spare, SpareLost, fork_spare

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
    proctitle.set_title(_title(modules))
    loaded = preload(["hpo", *WARM_MODULES, *modules])
    warm_up()
    protocol.send(sock, {"ready": True, **loaded})
    serve(sock)


def _title(modules: list[str]) -> str:
    return f"hpo-agent warm slot (preload: {','.join(['hpo', *modules])})"


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


def adopt(message: dict[str, Any], fds: list[int]) -> None:
    """A warm process started ahead of its agent (``slot.start_ahead``) becomes its
    slot's: the slot's environment (before its preloads import), its output on the
    agent's (the one descriptor sent), its title."""
    program.set_environment(message["env"])
    for fd in fds:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    proctitle.set_title(_title(message["modules"]))


# Spares that die idle in a row (killed, or failing at their start) after which this
# process reads its socket itself, forking each task on its request as before.
_SPARE_DEATHS = 3


def serve(sock: socket.socket) -> None:
    spare: Spare | None = None  # forked once idle, to serve the next request (spare.py)
    deaths = 0
    while True:
        if spare is None:
            try:
                message, fds = protocol.receive(sock)
            except protocol.Closed:
                return
            if not _serve_request(sock, message, fds):
                return
        else:
            pid = spare.pid
            what, message, fds = spare.wait()
            spare = None
            if what == "lost":
                # It may have taken a request off the socket, whose answer the agent
                # would wait for: ending here, the agent starts another warm process.
                return
            if what == "died":  # idle: it read nothing, the socket is as it was
                deaths += 1
            else:
                deaths = 0
            if what == "taken":
                if not _report_exit(sock, pid):
                    return
                # Kept for the next spares (after the task: not beside its start).
                _scripts.get(message["script"], message["cwd"])
            elif what == "forward" and not _serve_request(sock, message, fds):
                return
        if deaths < _SPARE_DEATHS:
            try:
                spare = _spare(sock)
            except SpareLost:  # as for a spare lost while reading
                return


def _serve_request(sock: socket.socket, message: dict[str, Any], fds: list[int]) -> bool:
    """An import, an adoption or a task (forked now, run to its end); False when the
    agent's end closed while the task ran."""
    if message.get("op") == "import":
        protocol.send(sock, preload(message["modules"]))
    elif message.get("op") == "adopt":
        adopt(message, fds)
        protocol.send(sock, preload(message["modules"]))
    else:
        pid = fork(sock, message, fds)
        protocol.send(sock, {"pid": pid})
        return _report_exit(sock, pid)
    return True


def _report_exit(sock: socket.socket, pid: int) -> bool:
    """Wait for the task's script ``pid`` and send the agent its exit status; False
    when the agent's end closed first."""
    status = wait(sock, pid)
    if status is None:
        return False
    protocol.send(sock, {"exit": status})
    return True


def _spare(sock: socket.socket) -> Spare | None:
    """A spare child for the next request; None where it cannot be forked, or must not
    (a preload started a thread: the agent replaces this process), and the next
    task's script is forked then. SpareLost: see there."""
    if fork_hazard():
        return None
    _before_fork()
    try:
        return fork_spare(sock, _scripts)
    except OSError:
        return None
    finally:
        gc.unfreeze()


def _before_fork() -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # else the child would write this process's buffered output too
    # What is here now is never collected in the child: its collections then skip these
    # objects instead of writing to each one's page (a copy of the page per write).
    # Here they are collectable again after the fork (both calls move lists, no copy).
    gc.freeze()


def fork(sock: socket.socket, message: dict[str, Any], fds: list[int]) -> int:
    code = _scripts.get(message["argv"][0], message["cwd"])
    _before_fork()
    pid = os.fork()
    if pid == 0:
        try:
            child.become_script(sock, message, fds, code)  # ends with os._exit
        except BaseException:  # the child must never go on in this loop
            traceback.print_exc()
        os._exit(1)
    gc.unfreeze()
    for fd in fds:
        os.close(fd)
    return pid


def wait(sock: socket.socket, pid: int) -> int | None:
    """The child's exit status as Popen.returncode has it (-N: killed by signal N);
    None when the agent's end closed first (this process then exits; the child,
    orphaned, stops itself). The agent sends nothing while a child runs: a stray byte
    means a broken agent, and is taken as a close too."""
    pidfd = os.pidfd_open(pid)  # the child is unreaped: its pid cannot be reused yet
    try:
        ready, _, _ = select.select([sock.fileno(), pidfd], [], [])
        if pidfd not in ready:
            return None
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)
    finally:
        os.close(pidfd)
