"""Starting real hpo-agent processes for tests, and waiting on the store with deadlines."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import psutil

from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.records import ScriptInfo, TaskRecord
from hpo.store import Store

T = TypeVar("T")
JOB = Path(__file__).parent / "scripts" / "worker_job.py"


def register_job(store: Store, folder: Path, project: str, steps: int = 3) -> str:
    """The test job (``JOB``) registered as a template task in ``project``: its id. Its
    parameters are those the job reads, at values that make a quick, quiet success."""
    script = ScriptInfo(entry_point=str(JOB), working_dir=str(folder),
                        interpreter=sys.executable)
    return store.create_task(project, "job", script=script, parameters={
        "General/steps": steps, "General/sleep": 0.0, "General/exit_code": 0,
        "General/print_mb": 0, "General/marker_dir": "", "General/wait_for": 0,
        "General/ignore_sigterm": False}).id


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0,
             period: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(period)


def wait_final(store: Store, task_id: str, timeout: float = 60.0) -> TaskRecord:
    def probe() -> TaskRecord | None:
        task = store.get_task(task_id)
        return task if task.status in FINAL_STATUSES else None
    return wait_for(f"task {task_id} to finish", probe, timeout)


def wait_status(store: Store, task_id: str, status: Status, timeout: float = 30.0
                ) -> TaskRecord:
    def probe() -> TaskRecord | None:
        task = store.get_task(task_id)
        return task if task.status is status else None
    return wait_for(f"task {task_id} to be {status.value}", probe, timeout)


class AgentProcess:
    def __init__(self, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
        self.proc = proc
        self.name = name
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextmanager
def running_agent(store: Store, env: dict[str, str], tmp_path: Path, *args: str,
                  name: str | None = None) -> Iterator[AgentProcess]:
    """An hpo-agent subprocess, registered in the store before the block starts; killed
    (if still alive) after it."""
    name = name or f"agent-{uuid.uuid4().hex[:6]}"
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hpo.agent.cli", "--name", name, "--heartbeat", "0.5",
             *args], env=env, stdout=out, stderr=subprocess.STDOUT)
    agent = AgentProcess(proc, name, log)
    try:
        wait_for(f"agent {name} to register",
                 lambda: proc.poll() is not None or any(
                     w.name == name for w in store.list_workers()), timeout=30)
        assert proc.poll() is None, f"agent {name} exited:\n{agent.output()}"
        yield agent
    finally:
        agent.kill()


def freeze(agent: AgentProcess, *databases: Path, tries: int = 20) -> None:
    """SIGSTOP the agent at a moment it holds no write lock on the SQLite ``databases``
    (its store, its broker): frozen inside a write transaction it would stop every other
    writer too, which is not the fault under test. Thawed and frozen again until then."""
    process = psutil.Process(agent.proc.pid)
    for _ in range(tries):
        agent.signal(signal.SIGSTOP)
        wait_for(f"agent {agent.name} to stop",
                 lambda: process.status() == psutil.STATUS_STOPPED, timeout=5)
        if all(_writable(db) for db in databases):
            return
        agent.signal(signal.SIGCONT)
        wait_for(f"agent {agent.name} to go on",
                 lambda: process.status() != psutil.STATUS_STOPPED, timeout=5)
    raise AssertionError(f"agent {agent.name} froze inside a write {tries} times")


def _writable(database: Path) -> bool:
    db = sqlite3.connect(database, timeout=0.2, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()


def terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM a subprocess and wait; SIGKILL it if it lingers past ``timeout``."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def env_for(base: dict[str, str], broker_url: str) -> dict[str, str]:
    env = dict(base)
    env["HPO_BROKER_URL"] = broker_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return {k: v for k, v in env.items() if not k.startswith("HPO_TASK")} | {
        "PATH": os.environ.get("PATH", "")}
