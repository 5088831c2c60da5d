"""Dispatch benchmark: what an hpo agent adds to every task it runs.

For each configuration, Redis broker + PostgreSQL store ("redis") and the embedded default
(SQLite broker file + SQLite store file, "embedded"), it starts real ``hpo-agent``
processes (one slot each), runs a trivial SDK script through them, and measures:

* enqueue -> script start, on idle agents (one task at a time). In a batch this number
  is mostly queue wait, so the batch measures the slot gap instead (below).
* report -> stored: the script reports its own ``time.time()`` as the value; a poller
  notes when the row first shows up in the store.
* the slot gap in a batch: one script's last report to the next script's first line on
  the same agent, split into script end -> finish recorded, finish -> next claim, and
  claim -> script's first line.
* stop request -> process gone, for long-running (sleeping) scripts.
* per-task overhead = (hpo batch wall time - peer batch wall time) / N * slots, where the
  peer runs the same script N times with plain ``subprocess.run`` on a pool of as many
  threads as there are slots. Each slot runs N / slots tasks one after another, so the
  difference in wall time divided by N / slots is what hpo adds to each task of a slot.

Run it: ``python bench/dispatch.py --tasks 200 --agents 2`` (``--help`` for the rest).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from scratch_db import postgres_database  # bench/ is on sys.path: run as a script
from sqlalchemy import select
from sqlalchemy.engine import make_url

from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.queue import dispatch
from hpo.queue.app import make_app
from hpo.records import ScriptInfo, TaskRecord
from hpo.store import Store, open_store, schema

# Targets from the issue: the most an agent may add to a task, per configuration.
TARGET_OVERHEAD_MS = {"redis": 40.0, "embedded": 80.0}
PEERS = ("Optuna multi-process: 15-25 ms per trial; 25-50 ms with a subprocess per trial",
         "Ray Tune: about 2 s per trial")
TITLE = "m"  # the scalar title the bench script reports under

# The trivial training script. Its first line takes the time before anything is imported,
# so "enqueue -> script start" includes interpreter start-up but not `import hpo`.
SCRIPT = '''\
import time
T0 = time.time()
import os

from hpo import Task

task = Task.init(project_name="bench", task_name="trivial")
cfg = task.connect({"loop": False})
logger = task.get_logger()
logger.report_scalar("m", "start", T0, 0)
if cfg["loop"]:
    # A long-running task for the stop measurement: the bench checks its pid is gone.
    # Its ticks (value: the report time) go through the agent's periodic flush.
    logger.report_scalar("m", "pid", os.getpid(), 0)
    for i in range(100_000):
        logger.report_scalar("m", "tick", time.time(), i)
        time.sleep(0.05)
now = time.time()
logger.report_scalar("m", "v", now, 0)
if os.environ.get("BENCH_PEER"):
    print(T0, now)
'''

# Metric key -> label, in the order the table prints them.
METRICS = {
    "idle_start": "enqueue -> script start (idle agents)",
    "idle_claim": "  enqueue -> claim (idle agents)",
    "gap": "slot gap: script end -> next script start",
    "gap_finish": "  script end -> finish recorded",
    "gap_claim": "  finish -> next claim",
    "gap_spawn": "  claim -> script's first line",
    "script": "script body: first line -> last report",
    "peer_spawn": "peer: subprocess.run -> first line",
    "peer_script": "peer: first line -> last report",
    "peer_exit": "peer: last report -> subprocess.run returns",
    "stored": "report -> stored (batch: flushed at exit)",
    "stored_running": "report -> stored (running script)",
    "stop_recorded": "stop -> gone (agent records stopped)",
    "stop_seen": "stop -> gone (seen by poller)",
    "cycle": "slot cycle: first line -> next first line",
    "peer_cycle": "peer cycle: one subprocess.run",
    "agent_cpu": "agents' CPU per batch task (all agents)",
    "bench_cpu": "bench's own CPU per batch task",
    "enqueue_call": "dispatch.enqueue() call",
    "agent_exit": "agent SIGTERM -> exit (idle)",
}


class BenchError(Exception):
    """A step of the benchmark failed or ran past its deadline."""


# ----- results -----------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: an observed value, no interpolation."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass
class ConfigResult:
    name: str
    tasks: int
    slots: int
    target_ms: float
    # One (hpo wall, peer wall) pair per round, in seconds.
    rounds: list[tuple[float, float]] = field(default_factory=list)
    samples: dict[str, list[float]] = field(default_factory=dict)  # metric -> ms
    idle_cpu_percent: list[float] = field(default_factory=list)  # per agent, of one core
    notes: list[str] = field(default_factory=list)

    def add(self, metric: str, seconds: float) -> None:
        self.samples.setdefault(metric, []).append(seconds * 1000)

    def per_task_ms(self, wall_s: float) -> float:
        """A batch's wall time per task of one slot: each slot runs tasks / slots."""
        return wall_s / self.tasks * self.slots * 1000

    def round_overheads_ms(self) -> list[float]:
        return [self.per_task_ms(hpo) - self.per_task_ms(peer) for hpo, peer in self.rounds]

    @property
    def median_overhead_ms(self) -> float:
        """Slot cycle minus peer cycle, medians: robust to a noisy neighbour's bursts,
        which the wall-time formula is not."""
        cycle, peer = self.samples.get("cycle"), self.samples.get("peer_cycle")
        return statistics.median(cycle) - statistics.median(peer) if cycle and peer \
            else math.nan

    @property
    def overhead_ms(self) -> float:
        """The median round's overhead: rounds differ by the machine's noise."""
        overheads = self.round_overheads_ms()
        return statistics.median(overheads) if overheads else math.nan

    def print_table(self, poll_ms: float) -> None:
        print(f"\n== {self.name}: {self.tasks} tasks, {self.slots} agents x 1 slot ==")
        print(f"{'metric':44} {'median':>9} {'p95':>9} {'n':>5}")
        for key, label in METRICS.items():
            values = self.samples.get(key, [])
            if values:
                print(f"{label:44} {statistics.median(values):8.1f}ms "
                      f"{percentile(values, 95):8.1f}ms {len(values):5d}")
        print(f"(report -> stored and 'seen by poller' include up to {poll_ms:g} ms of "
              "polling)")
        for i, ((hpo, peer), over) in enumerate(zip(self.rounds, self.round_overheads_ms(),
                                                    strict=True), 1):
            print(f"round {i}: batch wall time hpo {hpo:.2f}s ({self.per_task_ms(hpo):.1f} ms "
                  f"per task and slot), peer {peer:.2f}s ({self.per_task_ms(peer):.1f} ms): "
                  f"overhead {over:.1f} ms")
        print(f"per-task overhead = (hpo wall - peer wall) / {self.tasks} tasks * "
              f"{self.slots} slots, median of {len(self.rounds)} round(s) = "
              f"{self.overhead_ms:.1f} ms; target {self.target_ms:g} ms "
              f"-> ratio {self.overhead_ms / self.target_ms:.2f} "
              f"({'met' if self.overhead_ms <= self.target_ms else 'MISSED'})")
        print(f"cross-check: median slot cycle - median peer cycle = "
              f"{self.median_overhead_ms:.1f} ms")
        if self.idle_cpu_percent:
            print("idle agents (no tasks) use " + ", ".join(
                f"{c:.1f}%" for c in self.idle_cpu_percent) + " of one core")
        for note in self.notes:
            print(f"note: {note}")


# ----- configurations ----------------------------------------------------------------


@dataclass
class Backend:
    """Where one configuration keeps its tasks and messages, and how to undo it."""

    name: str
    store_url: str
    broker_url: str
    home: Path

    def agent_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
        env.update(HPO_HOME=str(self.home), HPO_STORE_URL=self.store_url,
                   HPO_BROKER_URL=self.broker_url, PYTHONUNBUFFERED="1")
        return env


def redis_cleanup(url: str, queue: str) -> Callable[[], None]:
    """Deletes the keys kombu keeps for ``queue``: the list (one per priority step) and
    its bindings. The queue name is unique to this run, so nothing else matches."""
    def cleanup() -> None:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=5)
        keys = [*client.scan_iter(match=f"{queue}*"), f"_kombu.binding.{queue}",
                f"_kombu.binding_permanent.{queue}"]
        client.delete(*keys)
        client.close()
    return cleanup


def check_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        raise BenchError(f"Redis at {url} does not answer: {exc}") from None


# ----- processes ---------------------------------------------------------------------


@dataclass
class AgentProc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def errors(self, lines: int = 30) -> str:
        """The agent's first logged error with its traceback, or ''."""
        text = self.log.read_text(errors="replace").splitlines()
        for i, line in enumerate(text):
            if "Traceback" in line or " failed to run it" in line:
                return "\n".join(text[i:i + lines])
        return ""


def wait_until(what: str, probe: Callable[[], Any], timeout: float, period: float = 0.01
               ) -> Any:
    """Poll ``probe`` until it returns something truthy; BenchError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(period)


def start_agents(store: Store, backend: Backend, queue: str, count: int, workdir: Path
                 ) -> list[AgentProc]:
    agents = []
    for i in range(count):
        name = f"bench-{backend.name}-{i}-{uuid.uuid4().hex[:4]}"
        log = workdir / f"{name}.log"
        with log.open("wb") as out:
            # Own session: a Ctrl-C on the bench reaches the agents only through cleanup.
            proc = subprocess.Popen(
                [sys.executable, "-m", "hpo.agent.cli", "--queue", queue, "--name", name,
                 "--heartbeat", "1"], env=backend.agent_env(), stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        agents.append(AgentProc(name, proc, log))
    names = {a.name for a in agents}

    def registered() -> bool:
        for agent in agents:
            if agent.proc.poll() is not None:
                raise BenchError(f"agent {agent.name} exited:\n{agent.tail()}")
        return names <= {w.name for w in store.list_workers()}

    try:
        wait_until("the agents to register", registered, timeout=60, period=0.1)
    except BaseException:
        stop_agents(agents, None)
        raise
    return agents


def stop_agents(agents: list[AgentProc], result: ConfigResult | None) -> None:
    """SIGTERM (the agent's warm shutdown), then SIGKILL whatever is left after 30 s."""
    sent = time.monotonic()
    for agent in agents:
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGTERM)
    for agent in agents:
        try:
            agent.proc.wait(timeout=max(0.1, sent + 30 - time.monotonic()))
            if result is not None:
                result.add("agent_exit", time.monotonic() - sent)
        except subprocess.TimeoutExpired:
            agent.proc.kill()
            agent.proc.wait(timeout=10)
            if result is not None:
                result.notes.append(f"agent {agent.name} ignored SIGTERM for 30 s: killed")


def agent_cpu_s(agents: list[AgentProc]) -> float:
    """User + system CPU seconds of the agent processes, their children not counted."""
    return sum(sum(psutil.Process(a.proc.pid).cpu_times()[:2]) for a in agents)


def idle_cpu_percent(agents: list[AgentProc], seconds: float = 3.0) -> list[float]:
    """CPU each agent uses while it waits for work (broker polling, heartbeats)."""
    procs = [psutil.Process(a.proc.pid) for a in agents]
    before = [p.cpu_times() for p in procs]
    time.sleep(seconds)
    return [(sum(p.cpu_times()[:2]) - sum(b[:2])) / seconds * 100
            for p, b in zip(procs, before, strict=True)]


# ----- watching the store ------------------------------------------------------------


class ScalarWatcher:
    """Polls the scalars table in a thread and notes when each report (task, series,
    iteration) is first seen, with its value. Reads by row id with a look-back window:
    on PostgreSQL a lower id can commit after a higher one, so a plain ``id > last``
    cursor could skip a row."""

    # Only transactions in flight at once can commit out of id order: a few per agent.
    LOOKBACK = 64

    def __init__(self, store: Store, period_s: float) -> None:
        self.store = store
        self.period_s = period_s
        self.errors = 0
        self._seen_ids: set[int] = set()
        self._max_id = 0
        self._first: dict[tuple[str, str, int], tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-watch", daemon=True)
        self._thread.start()

    def get(self, task_id: str, series: str, iteration: int = 0
            ) -> tuple[float, float] | None:
        """(first seen, value) of one report, or None while not stored."""
        with self._lock:
            return self._first.get((task_id, series, iteration))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        s = schema.scalars
        base = select(s.c.id, s.c.task_id, s.c.series, s.c.iteration, s.c.value).where(
            s.c.title == TITLE)
        while not self._stop.wait(self.period_s):
            # A row is visible to a statement only if it committed before the statement
            # started: the time before the query is the earliest "seen" we can claim.
            seen = time.time()
            try:
                with self.store.engine.connect() as conn:
                    rows = conn.execute(base.where(
                        s.c.id > max(0, self._max_id - self.LOOKBACK))).all()
            except Exception:
                self.errors += 1
                continue
            with self._lock:
                for row in rows:
                    if row.id in self._seen_ids:
                        continue
                    self._seen_ids.add(row.id)
                    self._max_id = max(self._max_id, row.id)
                    self._first.setdefault((row.task_id, row.series, row.iteration),
                                           (seen, row.value))


def wait_final(store: Store, ids: list[str], timeout: float, period: float = 0.1
               ) -> list[TaskRecord]:
    def probe() -> list[TaskRecord] | None:
        tasks = store.get_tasks(ids)
        return tasks if all(t.status in FINAL_STATUSES for t in tasks) else None
    return wait_until(f"{len(ids)} task(s) to finish", probe, timeout, period)


def series_values(store: Store, ids: list[str]) -> dict[str, dict[str, float]]:
    """task id -> {series: value} of the bench title, read after the tasks ended."""
    out: dict[str, dict[str, float]] = {i: {} for i in ids}
    for scalar in store.read_scalars(dict.fromkeys(ids, 0)):
        if scalar.title == TITLE:
            out[scalar.task_id][scalar.series] = scalar.value
    return out


# ----- the workload ------------------------------------------------------------------


@dataclass
class Workload:
    """One configuration's store, broker app, queue, template and result."""

    store: Store
    app: Any
    queue: str
    template: str
    watcher: ScalarWatcher
    result: ConfigResult
    agents: list[AgentProc]

    def clone(self, loop: bool = False, parent: str | None = None) -> str:
        return self.store.clone_task(self.template, name="trivial",
                                     parent=parent or self.template,
                                     parameters={"General/loop": loop}).id

    def enqueue(self, task_id: str) -> float:
        """Enqueue now; returns the time just before the call."""
        start = time.time()
        dispatch.enqueue(self.store, self.app, task_id, self.queue)
        self.result.add("enqueue_call", time.time() - start)
        return start


def run_warmup(work: Workload, count: int) -> None:
    """First tasks pay one-off costs (queue declaration, connections, file cache)."""
    ids = [work.clone() for _ in range(count)]
    for task_id in ids:
        work.enqueue(task_id)
    wait_final(work.store, ids, timeout=120)
    work.result.samples.pop("enqueue_call", None)


def run_idle_latency(work: Workload, samples: int) -> None:
    """Enqueue one task at a time on idle agents: enqueue -> the script's first line."""
    for _ in range(samples):
        task_id = work.clone()
        enqueued = work.enqueue(task_id)
        (task,) = wait_final(work.store, [task_id], timeout=60)
        values = series_values(work.store, [task_id])[task_id]
        if task.status is Status.completed and "start" in values:
            work.result.add("idle_start", values["start"] - enqueued)
            work.result.add("idle_claim", (task.started_at or math.nan) - enqueued)
        else:
            work.result.notes.append(f"idle task {task_id} {task.status}: "
                                     f"{task.status_message}")
        time.sleep(0.2)  # let the agent go back to waiting on the broker


def run_peer(script: Path, workdir: Path, tasks: int, slots: int, result: ConfigResult
             ) -> float:
    """The same script N times with plain subprocess.run on ``slots`` threads. The SDK
    sees a task id and spec but no report address, so it never touches a store."""
    spec = workdir / "peer-spec.json"
    spec.write_text(json.dumps({"id": "peer", "project": "bench", "name": "trivial",
                                "parameters": {"General/loop": False}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(HPO_TASK_ID="peer", HPO_TASK_SPEC=str(spec), BENCH_PEER="1",
               PYTHONUNBUFFERED="1")

    def one(_: int) -> tuple[float, float, float, float]:
        called = time.time()
        out = subprocess.run([sys.executable, str(script)], env=env, cwd=workdir,
                             capture_output=True, text=True, timeout=60, check=True)
        returned = time.time()
        first, last = map(float, out.stdout.split())
        return called, first, last, returned

    with ThreadPoolExecutor(slots) as pool:
        list(pool.map(one, range(slots)))  # warm-up: file cache, .pyc files
        start = time.monotonic()
        runs = list(pool.map(one, range(tasks)))
        wall = time.monotonic() - start
    for called, first, last, returned in runs:
        result.add("peer_spawn", first - called)
        result.add("peer_script", last - first)
        result.add("peer_exit", returned - last)
        result.add("peer_cycle", returned - called)
    return wall


def run_batch(work: Workload, tasks: int) -> float:
    """N tasks enqueued at once; wall time from the first enqueue to the last finish."""
    result = work.result
    # The clones share a parent of their own, so the wait is one cheap COUNT: reading
    # 200 records every poll would take CPU from the agents on a small machine.
    parent = work.store.create_task("bench", "batch").id
    ids = [work.clone(parent=parent) for _ in range(tasks)]
    enqueued: dict[str, float] = {}
    # CPU, not wall time: what the agents and the bench itself burn per task, whatever
    # the neighbours do (the scripts are children, not counted).
    agents_cpu, bench_cpu = agent_cpu_s(work.agents), time.process_time()
    batch_start = time.time()
    for task_id in ids:
        enqueued[task_id] = work.enqueue(task_id)
    wait_until(f"{tasks} batch tasks to finish", lambda: work.store.count_tasks(
        parent=parent, status=FINAL_STATUSES) == tasks, timeout=60 + 3 * tasks, period=0.1)
    result.add("agent_cpu", (agent_cpu_s(work.agents) - agents_cpu) / tasks)
    result.add("bench_cpu", (time.process_time() - bench_cpu) / tasks)
    records = work.store.get_tasks(ids)
    wall = max(t.ended_at or 0.0 for t in records) - batch_start
    # Rows stored before the last finish: the poller sees them within a period or two.
    with contextlib.suppress(BenchError):
        wait_until("the poller to see every report", lambda: all(
            work.watcher.get(i, "v") for i in ids), timeout=5)
    values = series_values(work.store, ids)
    done = [t for t in records if t.status is Status.completed and "v" in values[t.id]]
    if len(done) < len(records):
        bad = [t for t in records if t not in done]
        result.notes.append(f"{len(bad)} batch task(s) did not complete: e.g. "
                            f"{bad[0].status} {bad[0].status_message!r}")
    for task in done:
        v = values[task.id]
        result.add("script", v["v"] - v["start"])
        seen = work.watcher.get(task.id, "v")
        if seen is not None:
            result.add("stored", seen[0] - v["v"])
    add_slot_gaps(result, done, values, enqueued)
    return wall


def add_slot_gaps(result: ConfigResult, done: list[TaskRecord],
                  values: dict[str, dict[str, float]], enqueued: dict[str, float]) -> None:
    """On each agent, consecutive tasks where the next one was already waiting: the time
    from one script's last report to the next one's first line, and its three parts."""
    by_worker: dict[str, list[TaskRecord]] = {}
    for task in done:
        by_worker.setdefault(task.worker or "?", []).append(task)
    for tasks in by_worker.values():
        tasks.sort(key=lambda t: t.started_at or 0.0)
        for prev, nxt in itertools.pairwise(tasks):
            assert prev.ended_at is not None and nxt.started_at is not None
            if enqueued[nxt.id] >= prev.ended_at:
                continue  # the slot was idle for want of work, not because of hpo
            end, start = values[prev.id]["v"], values[nxt.id]["start"]
            result.add("gap", start - end)
            result.add("cycle", start - values[prev.id]["start"])
            result.add("gap_finish", prev.ended_at - end)
            result.add("gap_claim", nxt.started_at - prev.ended_at)
            result.add("gap_spawn", start - nxt.started_at)


def run_stops(work: Workload, samples: int) -> None:
    """Abort a running (sleeping) script; time until the store says stopped."""
    for _ in range(samples):
        task_id = work.clone(loop=True)
        work.enqueue(task_id)
        _, pid = wait_until(f"long task {task_id} to report its pid",
                            functools.partial(work.watcher.get, task_id, "pid"), timeout=60)
        # Half a second of ticks, stored while the script runs, before the abort.
        wait_until(f"long task {task_id} to tick",
                   functools.partial(work.watcher.get, task_id, "tick", 10), timeout=30)
        requested = time.time()
        dispatch.abort(work.store, task_id)
        # Polled every 10 ms: "seen" is at most that late.
        (task,) = wait_final(work.store, [task_id], timeout=60, period=0.01)
        seen = time.time()
        add_running_reports(work, task_id, before=requested)
        if task.status is not Status.stopped or task.ended_at is None:
            work.result.notes.append(f"aborted task {task_id} ended {task.status}")
            continue
        work.result.add("stop_recorded", task.ended_at - requested)
        work.result.add("stop_seen", seen - requested)
        if process_alive(int(pid)):
            work.result.notes.append(f"task {task_id} stopped but its pid {pid} lives on")


def add_running_reports(work: Workload, task_id: str, before: float) -> None:
    """Report -> stored for the ticks the poller saw while the script still ran."""
    for i in itertools.count():
        tick = work.watcher.get(task_id, "tick", i)
        if tick is None or tick[0] >= before:
            return
        seen, reported = tick
        work.result.add("stored_running", seen - reported)


def process_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ----- one configuration -------------------------------------------------------------


def make_backend(name: str, args: argparse.Namespace, stack: contextlib.ExitStack,
                 home: Path) -> Backend:
    if name == "embedded":
        return Backend(name, f"sqlite:///{home / 'hpo.db'}",
                       f"sqla+sqlite:///{home / 'broker.db'}", home)
    check_redis(args.redis_url)
    store_url = stack.enter_context(postgres_database(args.pg_admin_url))
    return Backend(name, store_url, args.redis_url, home)


def run_config(name: str, args: argparse.Namespace) -> ConfigResult:
    result = ConfigResult(name, args.tasks, args.agents, TARGET_OVERHEAD_MS[name])
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hpo-bench-")))
        backend = make_backend(name, args, stack, workdir / "hpo-home")
        queue = f"bench-{uuid.uuid4().hex[:8]}"
        if name == "redis":
            stack.callback(redis_cleanup(args.redis_url, queue))
        script = workdir / "trivial.py"
        script.write_text(SCRIPT)

        store = open_store(backend.store_url)
        stack.callback(store.close)
        template = store.create_task(
            "bench", "trivial", parameters={"General/loop": False},
            script=ScriptInfo(entry_point=str(script), working_dir=str(workdir),
                              interpreter=sys.executable)).id
        watcher = ScalarWatcher(store, args.poll_ms / 1000)
        stack.callback(watcher.close)

        print(f"[{name}] starting {args.agents} agents on {backend.broker_url.split(':')[0]}"
              f" + {make_url(backend.store_url).get_backend_name()}", flush=True)
        agents = start_agents(store, backend, queue, args.agents, workdir)
        # Registered last on the stack: agents stop before the store and database go.
        stack.callback(stop_agents, agents, None)
        work = Workload(store, make_app(backend.broker_url), queue, template, watcher, result,
                        agents)
        try:
            run_phases(work, args, script, workdir)
        except BenchError:
            for agent in agents:
                print(f"--- log of {agent.name} (tail) ---\n{agent.tail()}", file=sys.stderr)
            raise
        stop_agents(agents, result)
        for agent in agents:
            # A failure inside an agent is a finding: keep its traceback before the
            # temporary folder (and the log in it) goes.
            if error := agent.errors():
                result.notes.append(f"agent {agent.name} logged an error:\n{error}")
        if watcher.errors:
            result.notes.append(f"the poller failed {watcher.errors} time(s)")
    return result


def run_phases(work: Workload, args: argparse.Namespace, script: Path, workdir: Path
               ) -> None:
    name = work.result.name
    run_warmup(work, 2 * args.agents)
    work.result.idle_cpu_percent = idle_cpu_percent(work.agents)
    print(f"[{name}] idle latency: {args.latency_samples} tasks one at a time", flush=True)
    run_idle_latency(work, args.latency_samples)
    for i in range(1, args.rounds + 1):
        # Peer and batch back to back, so both see about the same machine load.
        print(f"[{name}] round {i}: peer ({args.tasks} plain subprocess runs on "
              f"{args.agents} threads), then batch ({args.tasks} tasks enqueued at once)",
              flush=True)
        peer = run_peer(script, workdir, args.tasks, args.agents, work.result)
        work.result.rounds.append((run_batch(work, args.tasks), peer))
    print(f"[{name}] stops: {args.stop_samples} long tasks aborted", flush=True)
    run_stops(work, args.stop_samples)


# ----- command line ------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Measure what hpo-agent adds per task (dispatch, reports, stops) on "
        "Redis+PostgreSQL and on the embedded default, against a plain-subprocess peer.",
        epilog="Example: python bench/dispatch.py --tasks 200 --agents 2 --only embedded")
    p.add_argument("--tasks", type=int, default=200, help="tasks in the batch (200)")
    p.add_argument("--agents", type=int, default=2, help="agents, one slot each (2)")
    p.add_argument("--only", choices=["redis", "embedded"],
                   help="run one configuration (default: both)")
    p.add_argument("--rounds", type=int, default=1,
                   help="peer + batch rounds; the overhead is their median (1)")
    p.add_argument("--stop-samples", type=int, default=10,
                   help="long tasks to abort for stop -> gone (10)")
    p.add_argument("--latency-samples", type=int, default=20,
                   help="tasks run one at a time for enqueue -> start (20)")
    p.add_argument("--poll-ms", type=float, default=20.0,
                   help="how often the bench polls the store for new scalars (20)")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL",
                                                         "redis://127.0.0.1:6379/0"))
    p.add_argument("--pg-admin-url", default=os.environ.get(
        "BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL URL allowed to create and drop databases")
    p.add_argument("--json", metavar="PATH", help="also write the raw samples here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The agents run in sessions of their own: a SIGTERM must unwind through the
    # clean-up (SystemExit does) or they would outlive the bench.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if min(args.tasks, args.agents, args.rounds) < 1:
        print("--tasks, --agents and --rounds must be at least 1", file=sys.stderr)
        return 2
    results, failed = [], False
    for name in [args.only] if args.only else ["redis", "embedded"]:
        try:
            results.append(run_config(name, args))
        except Exception as exc:  # report, then go on with the next one
            traceback.print_exc()
            print(f"[{name}] failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed = True
    for result in results:
        result.print_table(args.poll_ms)
    print("\npeers (from the issue): " + "; ".join(PEERS))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
