"""The agent's side of one slot's warm process: started (and restarted) with the agent's
own interpreter, asked to import a task's extra modules, asked to fork a task's script.

Each method answers either a handle on the forked script or why this task cannot run
warm (a one-line reason): the caller then spawns it (process.start)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from hpo import defaults
from hpo.agent.script_env import script_environment
from hpo.agent.warm import protocol
from hpo.agent.warm.handle import WarmProcess
from hpo.agent.warm.policy import python_differs, same_interpreter

log = logging.getLogger("hpo.agent")

_ZYGOTE_CODE = "from hpo.agent.warm.zygote import main; main()"


class _Started(NamedTuple):
    """A warm process just spawned: it sends its "ready" once it has imported."""

    proc: subprocess.Popen[bytes]
    sock: socket.socket
    env: dict[str, str]


# Warm processes started before their agent (start_ahead), for its slots to adopt.
_ahead: list[_Started] = []


def start_ahead(count: int) -> None:
    """Start ``count`` warm processes now, with this process's environment (less any
    password-bearing URL), hpo's own modules and no output, for the slots of an agent
    that this process becomes later (hpo-controller's forked local agents, while they
    wait for their start): their interpreters' start-up and imports then overlap the
    controller's, not the first task's wait. A slot adopts one (``WarmSlot._start``)
    when Python would start the same way under the slot's environment, giving it that
    environment, its output and its preloads then. Best effort: a slot that adopts none
    spawns its own."""
    # Never a password-bearing URL in it: a forked task's /proc/self/environ shows the
    # environment its warm process started with, whatever it was changed to since.
    env = script_environment(os.environ, keep_credentials=False)
    for _ in range(count):
        try:
            _ahead.append(_spawn([], env, subprocess.DEVNULL))
        except Exception:  # best effort: the slot spawns its own
            return


def discard_ahead() -> None:
    """Let the warm processes started ahead go (an agent that forks no task): each
    exits when it sees its socket close."""
    while (started := _take_ahead()) is not None:
        started.sock.close()


def _take_ahead() -> _Started | None:
    """One of the warm processes started ahead, taken (each slot's thread may ask)."""
    try:
        return _ahead.pop()
    except IndexError:
        return None


def _spawn(modules: Sequence[str], env: Mapping[str, str], output: int) -> _Started:
    """A new warm process importing hpo and ``modules``, its stdout and stderr on
    ``output``; OSError when it cannot start."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _ZYGOTE_CODE, str(theirs.fileno()), ",".join(modules),
             " " * defaults.WARM_TITLE_BYTES],
            pass_fds=[theirs.fileno()], env=_environment(env),
            stdin=subprocess.DEVNULL, stdout=output, stderr=output,
            start_new_session=True)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return _Started(proc, ours, dict(env))


def _environment(env: Mapping[str, str]) -> dict[str, str]:
    """A warm process's environment: its slot's (what its tasks get), unbuffered."""
    return {**env, "PYTHONUNBUFFERED": "1"}


class WarmSlot:
    """The warm process of one slot, preloading hpo and ``modules``; ``env`` is what
    every task of the slot gets of the agent's environment (the GPU variables
    included), so that what a module reads at import is what the task would read."""

    def __init__(self, name: str, modules: Sequence[str], env: Mapping[str, str]) -> None:
        self.name = name
        self.modules = list(modules)
        self.env = dict(env)
        self._lock = threading.Lock()  # one task at a time; start() may run beside it
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._last: WarmProcess | None = None
        self._refused: str | None = None  # why this slot spawns every task
        self._failed: dict[str, str] = {}  # modules that did not import: name -> why
        self._unsafe: dict[str, str] = {}  # task modules that would make fork unsafe
        self._closed = False

    # ----- life cycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the warm process and wait for its preload (a refusal is remembered),
        unless a first task already did (it may be running from it now)."""
        with self._lock:
            if self._proc is None and self._refused is None and not self._closed:
                self._start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop()

    def _start(self) -> None:
        self._stop()
        ahead = self._adoptable()
        try:
            started = ahead or _spawn(self.modules, self.env, sys.stderr.fileno())
        except OSError as exc:
            self._refused = f"the warm process cannot start: {exc}"
            return
        self._proc, self._sock = started.proc, started.sock
        ours = started.sock
        ours.settimeout(defaults.WARM_START_TIMEOUT_S)
        try:
            ready, _ = protocol.receive(ours)
            if ahead is not None:
                # What one spawned for this slot has had from its start.
                protocol.send(ours, {"op": "adopt", "env": _environment(self.env),
                                     "modules": self.modules}, [sys.stderr.fileno()])
                adopted, _ = protocol.receive(ours)
                ready = {"failed": {**ready["failed"], **adopted["failed"]},
                         "unsafe": ready["unsafe"] or adopted["unsafe"]}
        except (TimeoutError, protocol.Closed, OSError, ValueError) as exc:
            self._stop()  # closes ours: no settimeout on it after this
            if ahead is not None:  # its adoption failed: the slot's own, spawned now
                self._start()
            elif isinstance(exc, TimeoutError):
                self._refused = (f"the warm process took over {defaults.WARM_START_TIMEOUT_S:g}"
                                 f"s to import {self._listed()}")
            else:
                self._refused = (f"the warm process exited while importing "
                                 f"{self._listed()} (see the agent's log)")
            return
        ours.settimeout(None)
        self._failed.update(ready["failed"])
        for module, why in ready["failed"].items():
            log.warning("slot %s: --preload %s does not import (%s): its tasks import it "
                        "themselves", self.name, module, why)
        if ready["unsafe"]:
            self._refused = f"preload {ready['unsafe']}"
            self._stop()
            return
        self._refused = None
        log.info("slot %s: warm, preloaded %s (pid %d%s)", self.name, self._listed(),
                 self._proc.pid, ", started ahead" if ahead is not None else "")

    def _stop(self) -> None:
        if self._sock is not None:
            self._sock.close()  # the warm process leaves when it sees its socket close
            self._sock = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=defaults.KILL_WAIT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self._last = None

    def _listed(self) -> str:
        return ",".join(["hpo", *self.modules])

    def _adoptable(self) -> _Started | None:
        """A warm process started ahead that Python started as it would start one for
        this slot (the same start-up variables), if any is left; others go."""
        while (started := _take_ahead()) is not None:
            if started.proc.poll() is None and python_differs(self.env, started.env) is None:
                return started
            started.sock.close()
        return None

    # ----- a task ---------------------------------------------------------------

    def launch(self, argv: Sequence[str], cwd: str, env: Mapping[str, str],
               preload: Sequence[str] = ()) -> tuple[WarmProcess | None, str | None]:
        """The task's script forked from the warm process, or (None, why it must be
        spawned). Raises OSError when the script cannot start either way."""
        if not same_interpreter(argv[0]):
            return None, (f"its interpreter {argv[0]} is not the agent's own "
                          f"({sys.executable}): a forked child can only run the agent's")
        differs = python_differs(env, self.env)
        if differs:
            return None, f"its {differs} differs from the agent's"
        with self._lock:
            if self._closed:
                return None, "the agent is shutting down"
            if self._refused:  # unsafe or broken: not tried again, it would be again
                return None, self._refused
            if not self._alive():
                self._start()
                if self._refused:
                    return None, self._refused
            try:
                why = self._import(preload)
                if why:
                    return None, why
                return self._fork(argv, cwd, env), None
            except (protocol.Closed, OSError, ValueError, KeyError) as exc:
                self._stop()
                return None, f"the warm process failed to fork the script ({exc})"

    def _alive(self) -> bool:
        """A warm process ready for a fork: running, and done with the last task (a
        task whose status was never taken leaves the socket in an unknown state)."""
        if self._proc is None or self._sock is None or self._proc.poll() is not None:
            if self._proc is not None and self._proc.returncode is not None:
                log.warning("slot %s: the warm process ended (%s); starting another",
                            self.name, self._proc.returncode)
            return False
        return self._last is None or self._last.returncode is not None

    def _import(self, modules: Sequence[str]) -> str | None:
        """The task's own preload list: modules this warm process lacks are imported
        into it (for this task and the next). One that makes fork unsafe: the warm
        process is replaced by one without it, and this task is spawned."""
        unsafe = [m for m in modules if m in self._unsafe]
        if unsafe:
            return f"preload {self._unsafe[unsafe[0]]}"
        missing = [m for m in modules if m not in self.modules and m not in self._failed]
        if not missing or self._sock is None:
            return None
        protocol.send(self._sock, {"op": "import", "modules": missing})
        # A module that hangs at import must not hold the task (and its slot's lock)
        # where no stop or time limit reaches it: past the timeout the warm process is
        # replaced without it and the task spawned, where a stop or time limit works.
        self._sock.settimeout(defaults.WARM_START_TIMEOUT_S)
        try:
            answer, _ = protocol.receive(self._sock)
        except TimeoutError:
            why = f"its import took over {defaults.WARM_START_TIMEOUT_S:g}s"
            self._failed.update(dict.fromkeys(missing, why))  # not tried again
            self._stop()
            return f"preload {','.join(missing)}: {why}"
        finally:
            if self._sock is not None:
                self._sock.settimeout(None)
        self._failed.update(answer["failed"])
        for module, why in answer["failed"].items():
            log.warning("slot %s: a task's preload %s does not import (%s)", self.name,
                        module, why)
        if answer["unsafe"]:
            name = answer["unsafe"].split(":", 1)[0]
            self._unsafe[name] = answer["unsafe"]
            self._start()  # the modules it had, without the unsafe one
            return f"preload {answer['unsafe']}"
        self.modules += [m for m in missing if m not in answer["failed"]]
        return None

    def _fork(self, argv: Sequence[str], cwd: str, env: Mapping[str, str]) -> WarmProcess:
        assert self._sock is not None
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            message: dict[str, Any] = {"argv": list(argv[1:]), "python": argv[0],
                                       "cwd": cwd, "env": dict(env)}
            protocol.send(self._sock, message, [null, out_w, err_w])
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            for fd in (null, out_w, err_w):
                os.close(fd)
        try:
            pid = int(protocol.receive(self._sock)[0]["pid"])
        except BaseException:  # no script to read from: the read ends are ours to close
            os.close(out_r)
            os.close(err_r)
            raise
        self._last = WarmProcess(self._sock, pid, list(argv), os.fdopen(out_r, "rb"),
                                 os.fdopen(err_r, "rb"))
        return self._last


class WarmSlots:
    """The warm slots of one agent, by slot name; each started in the background at
    once, so the agent registers without waiting for the preloads."""

    def __init__(self, slots: Mapping[str, Mapping[str, str]], modules: Sequence[str]
                 ) -> None:
        self.slots = {name: WarmSlot(name, modules, env) for name, env in slots.items()}

    def start(self) -> None:
        for slot in self.slots.values():
            threading.Thread(target=slot.start, name=f"hpo-warm-{slot.name}",
                             daemon=True).start()

    def slot(self, name: str) -> WarmSlot | None:
        return self.slots.get(name)

    def close(self) -> None:
        for slot in self.slots.values():
            slot.close()
