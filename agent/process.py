"""Starting a task's script (forked from its slot's warm process, else spawned) and
stopping its whole process tree."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Protocol

import psutil

from hpo.agent.warm.slot import WarmSlot
from hpo.defaults import KILL_WAIT_S, UNKNOWN_EXIT

log = logging.getLogger("hpo.agent")


class ScriptProcess(Protocol):
    """What the runner uses of a running script: a Popen, or a forked one's handle
    (hpo.agent.warm.handle.WarmProcess)."""

    pid: int
    returncode: int | None
    stdout: IO[bytes] | None
    stderr: IO[bytes] | None

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...


def start(argv: Sequence[str], cwd: str, env: Mapping[str, str],
          warm: WarmSlot | None = None, preload: Sequence[str] = (),
          note: Callable[[str], None] | None = None) -> ScriptProcess:
    """The script in its own session (and process group), from an argument list, never
    a shell string: forked from ``warm`` (its slot's warm process, which imports
    ``preload`` first) when it can run there, else spawned; ``note`` gets the one line
    saying why not (the agent's log has it once per reason). Raises OSError when it
    cannot start."""
    if warm is not None:
        proc, why = warm.launch(argv, cwd, env, preload)
        if proc is not None:
            return proc
        if why:
            if _first_time(why):
                log.info("slot %s spawns, not forks, tasks where: %s", warm.name, why)
            if note is not None:
                note(f"hpo-agent: spawned, not forked from the warm slot: {why}")
    return subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


_said: set[str] = set()


def _first_time(reason: str) -> bool:
    """True the first time this agent gives this reason (set.add is atomic)."""
    if reason in _said:
        return False
    _said.add(reason)
    return True


def terminate_tree(proc: ScriptProcess, grace: float) -> None:
    """SIGTERM to the process group, ``grace`` seconds to exit, then SIGKILL to every
    process of the tree (including descendants that left the group)."""
    descendants = _descendants(proc.pid)
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    descendants.extend(p for p in _descendants(proc.pid) if p not in descendants)
    _signal_group(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
    for process in descendants:
        try:
            process.kill()
        except psutil.Error:
            pass
    # The root is reaped by Popen, never by psutil: a psutil wait would take its exit
    # status, and Popen would then report 0 for a killed script.
    psutil.wait_procs(descendants, timeout=KILL_WAIT_S)
    try:
        proc.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        pass


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def describe_exit(returncode: int) -> str:
    """``exit code 3`` or ``killed by signal SIGKILL``."""
    if returncode == UNKNOWN_EXIT:
        return ("exit status unknown: the warm process that forked the script died while "
                "it ran (see the agent's log)")
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    return f"exit code {returncode}"
