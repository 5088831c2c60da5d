"""One real optimization run through a fault, and what it left in the store.

``run_fault`` does what an operator would: a base task registered in a PostgreSQL store,
``hpo-controller start hpo.yaml`` and ``Scale.agents`` real ``hpo-agent`` processes (one
slot each) in subprocesses, every one of them reaching PostgreSQL and the broker through
a ``CutProxy``; once ``Scale.faults_after`` jobs have results, the fault is injected;
then the controller is given until ``Scale.deadline_s`` to end on its own. ``measure``
reads the figures from the store directly (not through the proxies): the tests assert on
them and bench/faults.py prints them, so both count the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil
import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.queue.app import make_app, waiting_messages
from hpo.records import ScriptInfo, TaskRecord
from hpo.store import Store, open_store, schema
from tests.agents import AgentProcess, running_agent, wait_for
from tests.faults.proxy import CutMode, CutProxy
from tests.faults.services import RedisServer

JOB = Path(__file__).resolve().parent.parent / "scripts" / "fault_job.py"
OBJECTIVE = ("loss", "value")  # what JOB reports, minimized
ACTIVE = (Status.queued, Status.running)


@dataclass(frozen=True)
class Scale:
    """The size and time scale of one run. ``lost_after_s`` and ``republish_after_s``
    become ``HPO_LOST_AFTER_S`` and ``HPO_REPUBLISH_AFTER_S`` for every process (None:
    hpo's defaults, 30 s and 60 s)."""

    jobs: int = 12
    agents: int = 2
    concurrent: int = 2  # max_number_of_concurrent_tasks
    steps: int = 6  # reports per job ...
    step_s: float = 0.2  # ... this far apart
    lost_after_s: float | None = 3.0
    republish_after_s: float | None = 3.0
    faults_after: int = 2  # the fault is injected once this many jobs have results
    fault_s: float = 5.0  # how long a cut or a freeze lasts (a freeze: at least)
    cut_mode: CutMode = CutMode.REFUSE
    deadline_s: float = 120.0  # the run is hung if the controller has not ended by then


@dataclass
class FaultWindow:
    """When a fault began and ended (``time.time()``), and the tasks of the optimization
    that were queued or running as it began: those it could hurt."""

    name: str
    started: float
    ended: float | None = None
    in_flight: list[str] = field(default_factory=list)


@dataclass
class Figures:
    """What one run left, as docs/reliability.md reports it.

    ``results``: jobs completed with an objective value; ``lost``: configured jobs
    without one; ``run_twice``: tasks that ran more than one attempt, plus extra tasks
    of one configuration; ``duplicated_scalars``: rows beyond the first of one (task,
    title, series, iteration); ``fenced_off_outcomes``: finished tasks that hold scalars
    of an attempt other than the one that finished them (a write from a fenced-off
    attempt got in); ``recover_s``: from the fault's end until every task in flight at
    its start was final (None: some never were); ``next_result_s``: until the first job
    completed after it; ``tail_s``: until the controller exited."""

    fault: str
    jobs: int
    results: int = 0
    lost: int = 0
    run_twice: int = 0
    duplicated_scalars: int = 0
    fenced_off_outcomes: int = 0
    hung: bool = False
    controller_exit: int | None = None
    recover_s: float | None = None
    next_result_s: float | None = None
    tail_s: float | None = None
    fault_s: float | None = None
    in_flight: int = 0  # tasks queued or running when the fault began
    wall_s: float = 0.0
    agents_alive: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def problems(self) -> list[str]:
        """What the issue's check would fail on ([] when this run passes it)."""
        found = []
        if self.hung:
            found.append(f"hung (no end within the deadline; {self.statuses})")
        if self.controller_exit != 0 and not self.hung:
            found.append(f"controller exited {self.controller_exit}")
        if self.results != self.jobs:
            found.append(f"{self.results}/{self.jobs} results ({self.statuses})")
        if self.duplicated_scalars:
            found.append(f"{self.duplicated_scalars} duplicated scalars")
        if self.fenced_off_outcomes:
            found.append(f"{self.fenced_off_outcomes} outcomes with a fenced-off "
                         "attempt's scalars")
        return found


# ----- measuring ------------------------------------------------------------------------


def measure(store: Store, optimizer_id: str, jobs: int, *, fault: str = "",
            window: FaultWindow | None = None, controller_exit: int | None = None,
            controller_ended: float | None = None, hung: bool = False) -> Figures:
    """The figures of optimization ``optimizer_id`` (configured for ``jobs`` jobs), read
    from ``store``; ``window`` is the fault's, for the recovery times."""
    children = store.find_tasks(parent=optimizer_id)
    ids = [t.id for t in children]
    figures = Figures(fault=fault, jobs=jobs, hung=hung, controller_exit=controller_exit)
    figures.statuses = dict(Counter(t.status.value for t in children))
    sc = schema.scalars
    with store.engine.connect() as conn:
        objective_tasks = set(conn.scalars(
            select(sc.c.task_id).distinct().where(
                sc.c.task_id.in_(ids), sc.c.title == OBJECTIVE[0],
                sc.c.series == OBJECTIVE[1]))) if ids else set()
        duplicates = conn.execute(
            select(func.count() - 1).where(sc.c.task_id.in_(ids))
            .group_by(sc.c.task_id, sc.c.title, sc.c.series, sc.c.iteration)
            .having(func.count() > 1)).scalars().all() if ids else []
        attempts = conn.execute(
            select(sc.c.task_id, sc.c.attempt).distinct().where(sc.c.task_id.in_(ids))
        ).all() if ids else []
    completed = [t for t in children if t.status is Status.completed
                 and t.id in objective_tasks]
    by_configuration = Counter(_configuration(t) for t in children)
    figures.results = len({_configuration(t) for t in completed})
    figures.lost = jobs - figures.results
    figures.run_twice = (sum(1 for t in children if t.attempt > 1)
                         + sum(n - 1 for n in by_configuration.values()))
    figures.duplicated_scalars = int(sum(duplicates))
    seen: dict[str, set[int]] = {}
    for task_id, attempt in attempts:
        seen.setdefault(task_id, set()).add(attempt)
    figures.fenced_off_outcomes = sum(
        1 for t in children
        if t.status in FINAL_STATUSES and seen.get(t.id, {t.attempt}) != {t.attempt})
    if window is not None and window.ended is not None:
        end = window.ended
        figures.fault_s = round(end - window.started, 2)
        figures.in_flight = len(window.in_flight)
        in_flight = [t for t in children if t.id in set(window.in_flight)]
        if all(t.status in FINAL_STATUSES and t.ended_at for t in in_flight):
            last = max((t.ended_at or end for t in in_flight), default=end)
            figures.recover_s = round(max(0.0, last - end), 2)
        after = [t.ended_at for t in completed if t.ended_at and t.ended_at >= end]
        figures.next_result_s = round(min(after) - end, 2) if after else None
        if controller_ended is not None:
            figures.tail_s = round(controller_ended - end, 2)
    return figures


def _configuration(task: TaskRecord) -> str:
    return json.dumps(task.parameters, sort_keys=True)


# ----- one optimization --------------------------------------------------------------------


class Optimization:
    """The processes and proxies of one run; a context manager that stops them all.

    ``store_url`` and ``broker_url`` name the real servers; the processes get URLs
    through ``store_proxy`` and ``broker_proxy``, the test reads ``store`` directly."""

    def __init__(self, workdir: Path, store_url: str, broker_url: str, scale: Scale,
                 *, label: str = "run") -> None:
        self.workdir = workdir
        self.scale = scale
        self.label = label
        self.broker_url = broker_url
        self.queue = f"faults-{uuid.uuid4().hex[:10]}"
        self.agents: list[AgentProcess] = []
        self.controller: subprocess.Popen[bytes] | None = None
        self.controller_ended: float | None = None
        self.optimizer_id: str | None = None
        self.windows: list[FaultWindow] = []
        self._stack = contextlib.ExitStack()
        try:
            self.store_proxy = self._proxy(store_url)
            self.broker_proxy = self._proxy(broker_url)
            self.store = open_store(store_url)
            self._stack.callback(self.store.close)
            self._stack.callback(forget_queue, broker_url, self.queue)
        except BaseException:
            self._stack.close()
            raise
        self.env = self._env(_through(store_url, self.store_proxy),
                             _through(broker_url, self.broker_proxy))

    def __enter__(self) -> Optimization:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    # ----- starting and ending ---------------------------------------------------------

    def start(self) -> None:
        """Register the base task, start the agents, then the controller."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        base = self.store.create_task(
            "faults", "job",
            script=ScriptInfo(entry_point=str(JOB), working_dir=str(self.workdir),
                              interpreter=sys.executable),
            parameters={"General/x": 0.5, "General/steps": self.scale.steps,
                        "General/sleep": self.scale.step_s})
        config = self.workdir / "hpo.yaml"
        config.write_text(yaml.safe_dump({
            "base_task": base.id,
            "hyper_parameters": [{"type": "uniform", "name": "x", "min_value": 0.0,
                                  "max_value": 1.0}],
            "objective": {"title": OBJECTIVE[0], "series": OBJECTIVE[1], "sign": "min"},
            "strategy": "random", "strategy_kwargs": {"seed": 1},
            "execution_queue": self.queue,
            "max_number_of_concurrent_tasks": self.scale.concurrent,
            "total_max_jobs": self.scale.jobs,
        }, sort_keys=False))
        for i in range(self.scale.agents):
            agent = self._stack.enter_context(running_agent(
                self.store, self.env, self.workdir, "--queue", self.queue, "--grace", "1",
                name=f"{self.label}-agent{i + 1}-{uuid.uuid4().hex[:4]}"))
            # Registered after the agent: runs before its kill (an ExitStack unwinds
            # last in, first out), while its children can still be found.
            self._stack.callback(_kill_children, agent)
            self.agents.append(agent)
        out = (self.workdir / "controller.out").open("wb")
        err = (self.workdir / "controller.err").open("wb")
        self._stack.callback(out.close)
        self._stack.callback(err.close)
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "hpo.controller.cli", "start", str(config), "--plain"],
            env=self.env, stdout=out, stderr=err)
        self._stack.callback(_end_process, self.controller)
        self.started = time.time()
        self.optimizer_id = wait_for("the controller's optimizer id", self._optimizer_id,
                                     timeout=30)

    def finish(self) -> Figures:
        """Wait for the controller until the deadline (past it: hung, and killed), then
        measure."""
        assert self.controller is not None and self.optimizer_id is not None
        left = self.scale.deadline_s - (time.time() - self.started)
        hung = False
        try:
            code: int | None = self.controller.wait(timeout=max(1.0, left))
            self.controller_ended = time.time()
        except subprocess.TimeoutExpired:
            hung, code = True, None
            _end_process(self.controller)
        figures = measure(self.store, self.optimizer_id, self.scale.jobs,
                          fault=self.windows[0].name if self.windows else "",
                          window=self.windows[0] if self.windows else None,
                          controller_exit=code, controller_ended=self.controller_ended,
                          hung=hung)
        figures.wall_s = round(time.time() - self.started, 2)
        figures.agents_alive = sum(1 for a in self.agents if a.proc.poll() is None)
        return figures

    def logs(self) -> str:
        """Every process's output, for a failure message."""
        parts = [f"--- {a.name} ---\n{a.output()[-6000:]}" for a in self.agents]
        for name in ("controller.out", "controller.err"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-6000:]}")
        return "\n".join(parts)

    # ----- watching ----------------------------------------------------------------------

    def children(self) -> list[TaskRecord]:
        assert self.optimizer_id is not None
        return self.store.find_tasks(parent=self.optimizer_id)

    def results(self) -> int:
        return sum(1 for t in self.children() if t.status is Status.completed)

    def wait_results(self, count: int, timeout: float = 60.0) -> None:
        wait_for(f"{count} results", lambda: self.results() >= count, timeout, period=0.1)

    def running_on(self) -> tuple[TaskRecord, AgentProcess]:
        """A task in the middle of its run (running, one report stored) and the agent
        that runs it: waits for one. Injected then, a fault hits work in flight, not the
        idle moment between two jobs."""
        agents = {a.name: a for a in self.agents if a.proc.poll() is None}

        def probe() -> tuple[TaskRecord, AgentProcess] | None:
            for task in self.children():
                if (task.status is Status.running and task.worker in agents
                        and self.store.task_scalars(task.id, title=OBJECTIVE[0])):
                    return task, agents[task.worker]
            return None
        return wait_for("a job in the middle of its run", probe, timeout=30, period=0.05)

    @contextlib.contextmanager
    def fault(self, name: str) -> Iterator[FaultWindow]:
        """The window of a fault: its start, its end and the tasks it could hurt."""
        window = FaultWindow(name, time.time(), in_flight=[
            t.id for t in self.children() if t.status in ACTIVE])
        try:
            yield window
        finally:
            window.ended = time.time()
            self.windows.append(window)

    # ----- helpers -------------------------------------------------------------------------

    def _proxy(self, url: str) -> CutProxy:
        if url.startswith(("redis", "amqp")):
            host, port = _host_port(url)
        else:
            parsed = make_url(url)
            host, port = parsed.host or "127.0.0.1", parsed.port or 5432
        return self._stack.enter_context(CutProxy(host, port))

    def _env(self, store_url: str, broker_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
        env.update(HPO_HOME=str(self.workdir / "hpo-home"), HPO_STORE_URL=store_url,
                   HPO_BROKER_URL=broker_url, PYTHONUNBUFFERED="1")
        if self.scale.lost_after_s is not None:
            env["HPO_LOST_AFTER_S"] = str(self.scale.lost_after_s)
        if self.scale.republish_after_s is not None:
            env["HPO_REPUBLISH_AFTER_S"] = str(self.scale.republish_after_s)
        return env

    def _optimizer_id(self) -> str | None:
        assert self.controller is not None
        if self.controller.poll() is not None:
            raise AssertionError(f"the controller exited {self.controller.returncode} "
                                 f"before it started:\n{self.logs()}")
        lines = (self.workdir / "controller.out").read_text().splitlines()
        return lines[0].strip() if lines else None


def _host_port(url: str) -> tuple[str, int]:
    """Host and port of a redis:// or amqp:// URL (kombu's defaults when absent)."""
    from kombu.utils.url import url_to_parts

    parts = url_to_parts(url)
    default = 5672 if url.startswith("amqp") else 6379
    return parts.hostname or "127.0.0.1", parts.port or default


def _through(url: str, proxy: CutProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    if url.startswith(("redis", "amqp")):
        scheme, rest = url.split("://", 1)
        userinfo, _, tail = rest.rpartition("@")
        _location, slash, path = tail.partition("/")
        prefix = f"{userinfo}@" if userinfo else ""
        return f"{scheme}://{prefix}127.0.0.1:{proxy.port}{slash}{path}"
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False)


# kombu's Redis transport keeps every delivered, unacknowledged message in one hash for
# the whole database (and its delivery time in a sorted set), and any consumer of that
# database pushes an entry back onto its queue once it is older than the visibility
# timeout (an hour here). An agent killed, or cut off, with a message in hand leaves
# one: an hour later it would bring the queue of a run long gone back to life.
KOMBU_UNACKED = ("unacked", "unacked_index")


def forget_queue(broker_url: str, queue: str) -> None:
    """Remove what a run left on a shared broker: its queue, kombu's binding and, on
    Redis, its messages still held unacknowledged."""
    with contextlib.suppress(Exception):
        if broker_url.startswith("redis"):
            import redis

            client = redis.Redis.from_url(broker_url, socket_timeout=2)
            keys = [*client.keys(f"{queue}*"), f"_kombu.binding.{queue}"]
            client.delete(*keys)
            table, index = KOMBU_UNACKED
            for tag, entry in client.hscan_iter(table):
                with contextlib.suppress(ValueError, TypeError, IndexError):
                    if json.loads(entry)[2] == queue:  # [message, exchange, routing key]
                        client.hdel(table, tag)
                        client.zrem(index, tag)
            client.close()
        else:
            with make_app(broker_url).connection_for_write() as connection, \
                    connection.channel() as channel:
                channel.queue_delete(queue)


def _kill_children(agent: AgentProcess) -> None:
    """SIGKILL an agent's scripts (each runs in a session of its own, out of reach of a
    signal to the agent), then let the agent itself be killed."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(agent.proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()


def _end_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# ----- the faults ----------------------------------------------------------------------------


def cut_store(opt: Optimization) -> None:
    """PostgreSQL unreachable for ``fault_s``: every connection of every process reset,
    new ones refused (or black-holed), then the link is back."""
    opt.running_on()
    with opt.fault("store cut"):
        opt.store_proxy.cut(opt.scale.cut_mode)
        time.sleep(opt.scale.fault_s)  # the outage itself
        opt.store_proxy.restore()


def cut_broker(opt: Optimization) -> None:
    """The broker (Redis or RabbitMQ) unreachable for ``fault_s``."""
    opt.running_on()
    with opt.fault("broker cut"):
        opt.broker_proxy.cut(opt.scale.cut_mode)
        time.sleep(opt.scale.fault_s)  # the outage itself
        opt.broker_proxy.restore()


def restart_redis(opt: Optimization, server: RedisServer) -> None:
    """Redis killed and started again empty while messages wait in the queue."""
    app = make_app(server.url)
    wait_for("messages waiting in the queue",
             lambda: waiting_messages(app, opt.queue) > 0, timeout=30, period=0.05)
    with opt.fault("redis restart"):
        server.restart()


def kill_agent(opt: Optimization) -> None:
    """SIGKILL an agent that runs a job: its task must be re-run by another agent once the
    lost-agent timeout has passed."""
    _task, agent = opt.running_on()
    with opt.fault("agent SIGKILL"):
        agent.kill()


def freeze_agent(opt: Optimization) -> None:
    """SIGSTOP an agent that runs a job, until its task has been re-run to the end
    elsewhere (at least ``fault_s``), then SIGCONT: the woken attempt must add nothing."""
    task, agent = opt.running_on()
    with opt.fault("agent SIGSTOP"):
        agent.signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + opt.scale.fault_s
            wait_for(f"task {task.id} to be re-run and finished elsewhere",
                     lambda: opt.store.get_task(task.id).status in FINAL_STATUSES,
                     timeout=max(60.0, 4 * (opt.scale.lost_after_s or 30.0)), period=0.1)
            # A freeze shorter than fault_s would not be "past the lost-agent timeout"
            # on every scale: hold it that long at least.
            time.sleep(max(0.0, deadline - time.monotonic()))
        finally:
            agent.signal(signal.SIGCONT)


@dataclass(frozen=True)
class Fault:
    """One fault of the suite: ``broker`` is the broker it runs on ("redis",
    "rabbitmq", or "private-redis": a server of its own that it restarts)."""

    name: str
    broker: str
    describe: str
    inject: Callable[..., None]
    concurrent: int | None = None  # overrides Scale.concurrent


FAULTS = {f.name: f for f in [
    Fault("store-cut", "redis", "PostgreSQL cut for the outage: connections reset, new "
          "ones refused or black-holed", cut_store),
    Fault("broker-cut", "redis", "Redis cut for the outage", cut_broker),
    # More jobs allowed at once than the agents have slots, so messages wait in Redis.
    Fault("redis-restart", "private-redis", "Redis restarted empty while messages wait",
          restart_redis, concurrent=4),
    Fault("rabbitmq-cut", "rabbitmq", "RabbitMQ cut for the outage", cut_broker),
    Fault("agent-kill", "redis", "an agent SIGKILLed mid-job", kill_agent),
    Fault("agent-freeze", "redis", "an agent SIGSTOPped past the lost-agent timeout, "
          "then SIGCONT", freeze_agent),
]}


def run_fault(name: str, workdir: Path, store_url: str, broker_url: str | None,
              scale: Scale) -> tuple[Figures, str]:
    """Run the optimization of ``scale`` through fault ``name``: its figures and every
    process's output. ``broker_url``: the Redis or RabbitMQ to use (ignored by a fault on
    a private Redis, which starts its own in ``workdir``)."""
    fault = FAULTS[name]
    if fault.concurrent is not None:
        scale = replace(scale, concurrent=fault.concurrent)
    with contextlib.ExitStack() as stack:
        args: tuple[Any, ...] = ()
        if fault.broker == "private-redis":
            server = stack.enter_context(RedisServer(workdir / "redis"))
            broker_url, args = server.url, (server,)
        assert broker_url is not None, f"fault {name} needs a broker URL"
        opt = stack.enter_context(Optimization(workdir, store_url, broker_url, scale,
                                               label=name))
        opt.start()
        opt.wait_results(scale.faults_after, timeout=scale.deadline_s)
        fault.inject(opt, *args)
        figures = opt.finish()
        figures.fault = name
        logs = opt.logs()
    return figures, logs
