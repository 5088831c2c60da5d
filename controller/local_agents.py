"""Agents started on this machine for one optimization (``start_locally``,
``hpo-controller start --local-agents N``): the embedded quick start.

hpo-controller forks them early (``prepare_forks``, see ``agent_forks``): LocalAgents
starts those forks; without them (the Python API, or where fork is unsafe) it spawns
``python -m hpo.agent.cli`` processes, which behave the same."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from hpo import defaults
from hpo.controller.agent_forks import ForkedAgent, fork_agents, fork_unsafe, import_drivers
from hpo.errors import HpoError
from hpo.store import Store

log = logging.getLogger("hpo.controller")

# Agents forked by prepare_forks, waiting for the LocalAgents of this process that takes
# them; and why none were forked (their logs say it when they are spawned instead).
_forks: list[ForkedAgent] = []
_not_forked: list[str] = []
# Forks let go unstarted: reaped once they have left (else zombies until the end).
_dropped: list[ForkedAgent] = []


def prepare_forks(count: int, store_url: str, broker_url: str) -> None:
    """Fork ``count`` agents on ``broker_url`` for the LocalAgents this process makes
    next (with the same store and broker: their drivers are imported before the fork, and
    the forks make the broker's Celery app while they wait): call it before
    opening the store or the broker and before any thread starts (hpo-controller start
    and resume do, after their imports). Where fork is unsafe, nothing is forked and the
    agents are spawned later, each log saying why."""
    # The broker's modules (Celery, kombu, and what Celery loads at a first publish),
    # which the controller and the agents both use, loaded once (the store's are this
    # module's own); then the URLs' drivers.
    from hpo.queue.app import load_app_modules

    try:
        load_app_modules(broker_url)
    except Exception as exc:  # best effort: the controller's own app says what is wrong
        log.debug("Celery's modules not loaded ahead: %s", exc)
    import_drivers([store_url, broker_url])
    why = fork_unsafe()  # after the imports: one of them may have started a thread
    if why:
        log.info("local agents will be spawned, not forked: %s", why)
        _not_forked[:] = [why]
        return
    _forks.extend(fork_agents(count, broker_url))


def _take_forks(count: int) -> list[ForkedAgent]:
    """Up to ``count`` prepared forks; the others are let go (they leave)."""
    taken, rest = _forks[:count], _forks[count:]
    _forks.clear()
    for fork in rest:
        fork.discard()
    _dropped.extend(rest)
    reap_dropped(timeout=0)
    return taken


def reap_dropped(timeout: float) -> None:
    """Reap the forks let go unstarted: those that have left by now, and the others
    after at most ``timeout`` seconds (then killed: their pipe has closed, so they are
    leaving anyway)."""
    deadline = time.monotonic() + timeout
    for fork in list(_dropped):
        try:
            fork.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if timeout == 0:
                continue  # still leaving: reaped at a later call
            fork.kill()
            fork.wait()
        _dropped.remove(fork)


class LocalAgents:
    """N single-slot agents serving ``queue``; their output goes to ``log_dir``."""

    def __init__(self, store: Store, broker_url: str, queue: str, count: int,
                 log_dir: Path, preload: list[str] | None = None,
                 on_failure: Callable[[str], None] | None = None) -> None:
        """``preload``: the agents' --preload (hpo.yaml's preload:, which the jobs carry
        too: without it here, each agent imports them into its warm slot at its first
        job instead of at its start). ``on_failure``: returns at once, and is called
        with why should an agent exit or not register in time (the optimization goes on
        meanwhile: its first jobs wait queued for the agents, not for this check);
        None: waits until they have registered, raising HpoError if they do not."""
        self.store = store
        self.queue = queue
        self.names = [f"local-{uuid.uuid4().hex[:6]}-{i}" for i in range(count)]
        log_dir.mkdir(parents=True, exist_ok=True)
        # The URLs go in the environment, never on the agents' command lines (where
        # `ps` shows a password to every user); a *_FILE variable of this process would
        # be a second store URL to them (an error), so only the URLs in use are passed.
        env = {key: value for key, value in os.environ.items()
               if key not in (defaults.ENV_STORE_URL_FILE, defaults.ENV_BROKER_URL_FILE)}
        env.update({defaults.ENV_STORE_URL: store.url, defaults.ENV_BROKER_URL: broker_url})
        if env.get(defaults.ENV_AGENT_SPAWN) == "1":
            preload = None  # every script spawned: hpo-agent refuses a --preload then
        forks = _take_forks(count)
        self.procs: list[subprocess.Popen[bytes] | ForkedAgent] = []
        for i, name in enumerate(self.names):
            argv = ["--name", name, "--queue", queue,
                    "--heartbeat", str(defaults.LOCAL_AGENT_HEARTBEAT_S),
                    "--shutdown-timeout", str(defaults.LOCAL_AGENT_SHUTDOWN_TIMEOUT_S),
                    # A controller that dies (SIGKILL, a crash) must not leave them.
                    "--exit-with", str(os.getpid()),
                    *(["--preload", ",".join(preload)] if preload else [])]
            log_file = log_dir / f"{name}.log"
            if i < len(forks):
                forks[i].start(argv, env, log_file)
                self.procs.append(forks[i])
            else:
                self.procs.append(self._spawn(argv, env, log_file))
        if on_failure is None:
            self._wait_registered(log_dir)
        else:
            threading.Thread(target=self._watch_start, args=(log_dir, on_failure),
                             name="hpo-local-agents", daemon=True).start()

    @staticmethod
    def _spawn(argv: list[str], env: dict[str, str], log_file: Path
               ) -> subprocess.Popen[bytes]:
        with log_file.open("ab") as log_out:
            if _not_forked:
                log_out.write(f"hpo-controller: agent spawned, not forked: "
                              f"{_not_forked[0]}\n".encode())
                log_out.flush()
            # Own session: a Ctrl-C in the terminal is the controller's to handle;
            # it stops the agents itself, after the jobs.
            return subprocess.Popen([sys.executable, "-m", "hpo.agent.cli", *argv], env=env,
                                    stdout=log_out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def _watch_start(self, log_dir: Path, on_failure: Callable[[str], None]) -> None:
        try:
            self._wait_registered(log_dir)
        except Exception as exc:
            on_failure(str(exc))

    def _wait_registered(self, log_dir: Path) -> None:
        deadline = time.monotonic() + defaults.LOCAL_AGENTS_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                self.stop()
                raise HpoError(f"a local agent exited at start: see its log in {log_dir}")
            names = {w.name for w in self.store.list_workers()}
            if all(n in names for n in self.names):
                return
            time.sleep(defaults.WATCH_POLL_S)
        self.stop()
        raise HpoError("local agents did not start in "
                       f"{defaults.LOCAL_AGENTS_START_TIMEOUT_S:.0f}s: see "
                       f"{log_dir}")

    def stop(self, timeout: float = defaults.LOCAL_AGENTS_STOP_TIMEOUT_S) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reap_dropped(timeout=max(0.1, deadline - time.monotonic()))
