"""Starting a task's script and stopping its whole process tree."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import psutil

from hpo.defaults import KILL_WAIT_S


def start(argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """The script as a child in its own session (and process group), from an argument
    list, never a shell string. Raises OSError when it cannot start."""
    return subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )


def terminate_tree(proc: subprocess.Popen[bytes], grace: float) -> None:
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
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    return f"exit code {returncode}"
