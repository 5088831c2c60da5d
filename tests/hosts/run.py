"""One optimization across hosts: ``hpo-agent`` processes on some hosts of a
``TestNetwork``, ``hpo-controller start`` on another, all reaching PostgreSQL and Redis
over the bridge only; the test reads the store from the servers' own namespace.

The job is tests/faults' (one report of a falling loss per step), so
``tests.faults.harness.measure`` counts this run's figures the same way as the fault
suite's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType

import psutil
import psycopg
import yaml
from sqlalchemy.engine import make_url

from hpo.lifecycle import Status
from hpo.records import ScriptInfo, TaskRecord
from hpo.store import open_store
from tests.agents import wait_for
from tests.faults.harness import JOB, OBJECTIVE
from tests.hosts.network import TestNetwork

# A session of the given client address inside a report write: a numbered batch's
# fence (an UPDATE of the task row's batch_seq, which locks the row), an unnumbered
# write's owner check (a SELECT ... FOR SHARE of it), or an INSERT after either in the
# same transaction.
INSIDE_A_WRITE = """
SELECT a.pid, a.xact_start FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
WHERE a.client_addr = CAST(%(ip)s AS inet) AND a.state = 'idle in transaction'
  AND l.relation = 'hpo_tasks'::regclass AND l.granted
  AND l.mode IN ('RowShareLock', 'RowExclusiveLock')
  AND (a.query LIKE '%%FOR SHARE%%' OR a.query LIKE 'UPDATE hpo_tasks SET batch_seq%%'
       OR a.query LIKE 'INSERT INTO hpo_scalars%%' OR a.query LIKE 'INSERT INTO hpo_logs%%')
"""
# That session still in that same transaction.
STILL_INSIDE = """
SELECT 1 FROM pg_stat_activity
WHERE pid = %(pid)s AND xact_start = %(xact)s AND state = 'idle in transaction'
"""
# Time for bytes already on their way to reach the server and be read, on a loaded
# machine: far more than a veth and a bridge take.
IN_FLIGHT_S = 0.5


class HostProcess:
    """A process started inside a host, its output in ``log``."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, name: str) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out,
                                         stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process and its scripts (each in a session of its own)."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child.kill()
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


class HostedOptimization:
    """Agents on ``agent_hosts`` (one slot each), the controller on ``controller_host``;
    a context manager that kills them all. ``lost_after_s`` becomes HPO_LOST_AFTER_S of
    every process; the agents heartbeat every second."""

    def __init__(self, network: TestNetwork, workdir: Path, store_url: str,
                 broker_url: str, *, agent_hosts: list[str], controller_host: str,
                 jobs: int, steps: int, step_s: float, lost_after_s: float) -> None:
        self.network = network
        self.workdir = workdir
        self.jobs = jobs
        self.steps = steps
        self.step_s = step_s
        self.queue = f"multihost-{uuid.uuid4().hex[:8]}"
        self.store = open_store(store_url)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
        self.env.update(HPO_STORE_URL=store_url, HPO_BROKER_URL=broker_url,
                        HPO_LOST_AFTER_S=str(lost_after_s), PYTHONUNBUFFERED="1")
        self.agent_hosts = agent_hosts
        self.controller_host = controller_host
        self.agents: dict[str, HostProcess] = {}  # by host
        self.controller: HostProcess | None = None
        self.optimizer_id = ""
        self.base_id = ""

    def __enter__(self) -> HostedOptimization:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for process in [*self.agents.values(), *([self.controller] if self.controller
                                                 else [])]:
            process.kill()
        self.store.close()

    # ----- starting ----------------------------------------------------------------------

    def home(self, host: str) -> Path:
        """HPO_HOME of ``host``: each host has its own disk."""
        return self.workdir / f"host-{host}" / "hpo-home"

    def _env(self, host: str) -> dict[str, str]:
        """A host's processes keep their files on its own disk: HPO_HOME, and TMPDIR
        (where an agent makes each task's folder, left behind by a killed agent)."""
        tmp = self.workdir / f"host-{host}" / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return self.env | {"HPO_HOME": str(self.home(host)), "TMPDIR": str(tmp)}

    def start(self) -> None:
        """Register the base task, start the agents, then the controller; returns once
        the controller has created its optimizer task."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.base_id = self.store.create_task(
            "multihost", "job",
            script=ScriptInfo(entry_point=str(JOB), working_dir=str(self.workdir),
                              interpreter=sys.executable),
            parameters={"General/x": 0.5, "General/steps": self.steps,
                        "General/sleep": self.step_s}).id
        for host in self.agent_hosts:
            self.home(host).mkdir(parents=True)
            name = f"agent-{host}-{uuid.uuid4().hex[:4]}"
            self.agents[host] = HostProcess(
                self.network.hosts[host].argv(
                    sys.executable, "-m", "hpo.agent.cli", "--name", name,
                    "--queue", self.queue, "--heartbeat", "1", "--grace", "1"),
                self._env(host), self.workdir / f"{name}.log", name)
        for host, agent in self.agents.items():
            wait_for(f"the agent on host {host} to register",
                     functools.partial(self._registered, agent), timeout=30)
            assert agent.alive(), f"the agent on {host} exited:\n{agent.output()}"
        config = self.workdir / "hpo.yaml"
        config.write_text(yaml.safe_dump({
            "base_task": self.base_id,
            "hyper_parameters": [{"type": "uniform", "name": "x", "min_value": 0.0,
                                  "max_value": 1.0}],
            "objective": {"title": OBJECTIVE[0], "series": OBJECTIVE[1], "sign": "min"},
            "strategy": "random", "strategy_kwargs": {"seed": 1},
            "execution_queue": self.queue,
            "max_number_of_concurrent_tasks": len(self.agent_hosts),
            "total_max_jobs": self.jobs,
        }, sort_keys=False))
        host = self.controller_host
        self.home(host).mkdir(parents=True)
        self.controller = HostProcess(
            self.network.hosts[host].argv(sys.executable, "-m", "hpo.controller.cli",
                                          "start", str(config), "--plain"),
            self._env(host), self.workdir / "controller.log", "controller")
        self.optimizer_id = wait_for("the controller's optimizer id", self._optimizer_id,
                                     timeout=30)

    def _registered(self, agent: HostProcess) -> bool:
        """The agent is in the worker list (or has exited: no use waiting)."""
        return not agent.alive() or any(w.name == agent.name
                                        for w in self.store.list_workers())

    def _optimizer_id(self) -> str | None:
        assert self.controller is not None
        lines = self.controller.output().splitlines()
        # Its first line is the id; the plain display follows.
        if lines and len(lines[0].strip()) == 32:
            return lines[0].strip()
        assert self.controller.alive(), (
            f"the controller exited before it started:\n{self.controller.output()}")
        return None

    # ----- watching ----------------------------------------------------------------------

    def children(self) -> list[TaskRecord]:
        return self.store.find_tasks(parent=self.optimizer_id)

    def results(self) -> int:
        return sum(1 for t in self.children() if t.status is Status.completed)

    def reports(self, task_id: str) -> int:
        """Objective reports of ``task_id`` stored so far."""
        return len(self.store.task_scalars(task_id, title=OBJECTIVE[0],
                                           series=OBJECTIVE[1]))

    def running_mid_task(self, min_reports: int) -> tuple[TaskRecord, str]:
        """A task running on one of the agent hosts with at least ``min_reports`` of its
        reports stored, and that host (waits for one)."""
        hosts = {a.name: host for host, a in self.agents.items()}

        def probe() -> tuple[TaskRecord, str] | None:
            for task in self.children():
                if (task.status is Status.running and task.worker in hosts
                        and self.reports(task.id) >= min_reports):
                    return task, hosts[task.worker]
            return None
        return wait_for("a task in the middle of its run", probe, timeout=60, period=0.05)

    def cut_inside_a_write(self, host: str, timeout: float = 60.0) -> TaskRecord:
        """Cut ``host`` off while its agent is inside a report write of its running task
        (``append_batch`` between its owner check and its commit: the server shows the
        session idle in transaction, holding the task's row lock); returns that task.

        The server is watched until such a session shows; the agent is SIGSTOPped at
        once and the session checked again (a write lasts about a millisecond: most
        tries miss it). Then the cut, and a last check once what was already on its way
        has had time to arrive (a COMMIT sent just before the stop and not yet read by
        the server would end the transaction after all): the same transaction must
        still be open. Else the link is restored at once and the agent woken for
        another try (a cut of half a second, which no timeout notices)."""
        agent = self.agents[host]
        process = psutil.Process(agent.proc.pid)
        ip = self.network.hosts[host].ip
        conninfo = make_url(self.store.url).set(drivername="postgresql").render_as_string(
            hide_password=False)
        with psycopg.connect(conninfo, autocommit=True) as watch:
            def inside() -> tuple[int, object] | None:
                row = watch.execute(INSIDE_A_WRITE, {"ip": ip}).fetchone()
                return (row[0], row[1]) if row else None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if inside() is None:
                    continue
                process.send_signal(signal.SIGSTOP)
                try:
                    wait_for(f"agent {agent.name} to stop",
                             lambda: _all_stopped(process), timeout=5, period=0.001)
                    time.sleep(0.005)  # what a thread sent just before it stopped
                    caught = inside()
                    if caught is None:
                        continue
                    self.network.cut(host)
                    time.sleep(IN_FLIGHT_S)  # part of the cut: in-flight bytes land
                    if watch.execute(STILL_INSIDE, {"pid": caught[0], "xact": caught[1]}
                                     ).fetchone():
                        return next(t for t in self.children()
                                    if t.worker == agent.name and t.status is Status.running)
                    self.network.restore(host)
                finally:
                    process.send_signal(signal.SIGCONT)
        raise AssertionError(f"agent {agent.name} was never caught inside a write "
                             f"within {timeout}s")

    def outbox_empty(self, host: str) -> bool:
        """Nothing kept in an outbox on ``host``'s disk: no outcome file in any folder
        named ``outbox`` under its HPO_HOME (agent/outbox.py's layout, whichever way it
        nests them)."""
        return not any("outbox" in path.parts for path in self.home(host).rglob("*.json"))

    def logs(self) -> str:
        """Every process's output, for a failure message."""
        processes = [*self.agents.values(), *([self.controller] if self.controller
                                              else [])]
        return "\n".join(f"--- {p.name} ---\n{p.output()[-8000:]}" for p in processes)


def _all_stopped(process: psutil.Process) -> bool:
    """Every thread of ``process`` stopped: /proc shows the leader stopped before the
    others, which may still send a statement meanwhile."""
    try:
        return all(psutil.Process(thread.id).status() == psutil.STATUS_STOPPED
                   for thread in process.threads())
    except psutil.NoSuchProcess:
        return False
