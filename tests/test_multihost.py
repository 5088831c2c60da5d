"""Several hosts for real: network namespaces on a test bridge (tests/hosts/), Redis and
PostgreSQL listening on the bridge only, agents on two hosts, the controller on a third.
One host is cut off in the middle of a task, its packets dropped without a trace both
ways (tests/hosts/network.py says how and why), for as long as it takes the other host
to re-run that task to its end; then the link comes back, and the cut-off host's stale
attempt, which ran on through the cut, must add and change nothing.

Three cuts: one that lasts until the task has been re-run elsewhere (about 10 s: the
cut-off agent's writes in flight arrive once the link is back), one of 25 s (past the
agent's TCP user timeout: its outcome goes to its outbox, delivered once back), and one
timed to land inside the cut-off agent's write transaction, which holds the task's row
lock on the server until the server ends that session (hpo's sessions ask it to after
10 s idle in a transaction: hpo.defaults.PG_SESSION_OPTIONS).

Root only (namespaces, veths, a private PostgreSQL cluster run as `postgres`): skipped
elsewhere with the reason, a failure when CI is set. Every process reads
HPO_LOST_AFTER_S=4, so the other host's reaper takes the task within 4-9 s of the cut.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from hpo.defaults import REAP_PERIOD_S
from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.store import Store, schema
from tests.agents import wait_for
from tests.conftest import missing_service
from tests.faults.harness import measure
from tests.hosts import servers
from tests.hosts.network import TestNetwork, unavailable
from tests.hosts.run import HostedOptimization
from tests.hosts.servers import BridgePostgres, BridgeRedis

JOBS = 12
STEPS, STEP_S = 10, 0.2  # a job reports for about 2 s: long enough to be cut mid-task
LOST_AFTER_S = 4.0
DEADLINE_S = 90.0  # from the controller's start to its end
# How long the server keeps a session idle in a transaction (hpo.defaults.
# PG_SESSION_OPTIONS): a cut inside a write holds the task's row lock that long.
SESSION_ENDED_S = 10.0
# From the cut until another host's reaper re-queues the task: the lost-after period
# (or the row lock's), one reaper round (REAP_PERIOD_S), a margin for a loaded machine
# (a CI run under load took more than 8 s past the two).
REQUEUE_MARGIN_S = 20.0
FENCED_WITHIN_S = 45.0  # from the restore until the stale attempt has tried and failed


@pytest.fixture
def network() -> Iterator[TestNetwork]:
    """Hosts a, b and c on a bridge of their own; all removed afterwards."""
    why = unavailable()
    if why is not None:
        missing_service(f"network namespaces ({why})")
    with TestNetwork(["a", "b", "c"]) as net:
        yield net


@pytest.fixture
def bridge_servers(network: TestNetwork, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(store URL, broker URL): a private PostgreSQL and Redis on the bridge address."""
    lacking = servers.missing()
    if lacking is not None:
        missing_service(lacking)
    with BridgeRedis(tmp_path / "redis", network.server_ip) as redis_server, \
            BridgePostgres(network.server_ip, str(network.subnet)) as postgres:
        yield postgres.url, redis_server.url


# ----- the cut itself --------------------------------------------------------------------

CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print("ok")
except OSError as exc:
    print(type(exc).__name__)
"""


def connect(argv_prefix: list[str], address: str, port: int, timeout: float = 1.0) -> str:
    """"ok", or the name of the error a TCP connect to ``address`` ended with."""
    done = subprocess.run([*argv_prefix, sys.executable, "-c", CONNECT, address, str(port),
                           str(timeout)], capture_output=True, text=True, timeout=30)
    return done.stdout.strip() or done.stderr.strip()


def test_a_cut_host_s_packets_vanish_both_ways_until_it_is_restored(network):
    # Given a server listening on the bridge address, and no listener on host a's port 9
    with socket.create_server((network.server_ip, 0)) as server:
        port = server.getsockname()[1]
        a, b = network.hosts["a"], network.hosts["b"]
        assert connect(a.argv(), network.server_ip, port) == "ok"
        assert connect([], a.ip, 9) == "ConnectionRefusedError"  # a answers: no listener
        # When host a is cut off
        network.cut("a")
        # Then its connects get no answer at all: no refusal, no "unreachable"
        assert connect(a.argv(), network.server_ip, port) == "TimeoutError"
        # And nothing reaches it either: a closed port no longer refuses
        assert connect([], a.ip, 9) == "TimeoutError"
        # And host b is not affected
        assert connect(b.argv(), network.server_ip, port) == "ok"
        # Then once restored, host a connects again
        network.restore("a")
        assert connect(a.argv(), network.server_ip, port) == "ok"


# ----- an optimization across the hosts --------------------------------------------------


def snapshot(store: Store, task_id: str) -> dict[str, Any]:
    """Everything of a task that a stale attempt could change: its row, its scalars and
    how many log lines it has."""
    task = store.get_task(task_id)
    with store.engine.connect() as conn:
        rows = conn.execute(select(schema.scalars.c.id, schema.scalars.c.attempt)
                            .where(schema.scalars.c.task_id == task_id)).all()
        logs = conn.execute(select(func.count()).where(
            schema.logs.c.task_id == task_id)).scalar()
    return {"status": task.status, "attempt": task.attempt, "worker": task.worker,
            "ended_at": task.ended_at, "updated_at": task.updated_at,
            "message": task.status_message, "exit_code": task.exit_code,
            "scalars": sorted(rows), "logs": logs}


def _activity(store: Store) -> str:
    """The server's sessions and what they wait for: why a re-queue did not happen."""
    with store.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT pid, client_addr, state, wait_event_type, wait_event, "
            "pg_blocking_pids(pid), left(query, 80) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")).all()
    return "server sessions:\n" + "\n".join(str(tuple(row)) for row in rows)


def foreign_scalars(store: Store, task_ids: list[str]) -> list[tuple[str, int, int]]:
    """(task, scalar attempt, task attempt) of every scalar not written by the attempt
    that owns its task now."""
    sc, tasks = schema.scalars, schema.tasks
    with store.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(
            select(sc.c.task_id, sc.c.attempt, tasks.c.attempt).distinct()
            .join(tasks, tasks.c.id == sc.c.task_id)
            .where(sc.c.task_id.in_(task_ids), sc.c.attempt != tasks.c.attempt))]


class NotRequeued(AssertionError):
    """The cut-off host's task was not re-queued in time."""


@dataclass(frozen=True)
class Cut:
    """How a host is cut off. It lasts until its task has been re-run to the end on the
    other host, and at least ``min_s``; ``inside_a_write``: it lands while the host's
    agent is inside a write transaction that holds its task's row lock."""

    min_s: float = 0.0
    inside_a_write: bool = False


CUTS = [
    pytest.param(Cut(), id="until-rerun"),
    # Past the agent's 15 s TCP user timeout: its connections fail, and its outcome
    # goes to its outbox, written (and refused) once the link is back. The issue's
    # manual run cut a host for 25 s.
    pytest.param(Cut(min_s=25.0), id="25s"),
    # The server keeps a silent client's session, its open transaction and its locks
    # until it ends the session itself; every re-queue of the task (the other agents'
    # reapers, the controller's, which runs in its loop) waits on that row lock until
    # then. Without hpo's session options (idle_in_transaction_session_timeout, server
    # side keepalives) that was the server's TCP keepalive: 2 h by default.
    pytest.param(Cut(inside_a_write=True), id="inside-a-write"),
]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(240)
@pytest.mark.parametrize("cut", CUTS)
def test_a_host_cut_off_mid_task_loses_it_to_the_other_and_changes_nothing_once_back(
        cut, network, bridge_servers, tmp_path):
    store_url, broker_url = bridge_servers
    began = time.monotonic()
    with HostedOptimization(network, tmp_path, store_url, broker_url,
                            agent_hosts=["a", "b"], controller_host="c", jobs=JOBS,
                            steps=STEPS, step_s=STEP_S, lost_after_s=LOST_AFTER_S) as run:
        # Given an optimization of 12 jobs on agents on hosts a and b, its controller on
        # c, two jobs done
        run.start()
        wait_for("2 results", lambda: run.results() >= 2, timeout=60, period=0.1)
        # When a host is cut off while its task is half-way
        task, cut_host = run.running_mid_task(min_reports=2)
        other = next(h for h in run.agents if h != cut_host)
        stale, fresh = run.agents[cut_host], run.agents[other]
        figures: dict[str, Any] = {"cut_host": cut_host, "task": task.id}
        if cut.inside_a_write:  # the task it writes for now: the one cut mid-task
            task = run.cut_inside_a_write(cut_host)
            figures["task"] = task.id
        else:
            network.cut(cut_host)
        cut_at = time.monotonic()
        try:
            # Then the other host's reaper re-queues it within a lost-after period and a
            # reaper's round, and the other agent runs it to its end, while the cut-off
            # host still runs its own attempt
            seen: dict[str, float] = {}

            def follow(until: str) -> bool:
                now = time.monotonic() - cut_at
                current = run.store.get_task(task.id)
                if current.status is not Status.running or current.attempt > task.attempt:
                    seen.setdefault("requeued_s", now)
                if current.attempt > task.attempt:
                    seen.setdefault("claimed_again_s", now)
                if current.status in FINAL_STATUSES:
                    seen.setdefault("rerun_done_s", now)
                return until in seen
            locked_s = SESSION_ENDED_S if cut.inside_a_write else 0.0
            try:
                wait_for(f"task {task.id} to be re-queued", lambda: follow("requeued_s"),
                         timeout=max(LOST_AFTER_S, locked_s) + REAP_PERIOD_S
                         + REQUEUE_MARGIN_S, period=0.1)
            except AssertionError as exc:
                raise NotRequeued(f"{exc}\n{_activity(run.store)}\n{run.logs()}") from None
            wait_for(f"task {task.id} to be re-run to its end on host {other}",
                     lambda: follow("rerun_done_s"), timeout=30, period=0.1)
            figures.update({k: round(v, 2) for k, v in seen.items()})
            time.sleep(max(0.0, cut_at + cut.min_s - time.monotonic()))  # the cut itself
        finally:
            network.restore(cut_host)
        restored_at, restored_wall = time.monotonic(), time.time()
        figures["cut_s"] = round(restored_at - cut_at, 2)
        before = snapshot(run.store, task.id)
        context = lambda: f"{figures}\n{run.logs()}"  # noqa: E731
        assert before["status"] is Status.completed, context()
        assert before["attempt"] == task.attempt + 1, context()
        assert before["worker"] == fresh.name, context()
        assert {attempt for _, attempt in before["scalars"]} == {before["attempt"]}, \
            context()

        # And once back, the cut-off host's attempt tries to write, and is refused
        refused = f"task {task.id}: attempt {task.attempt} no longer owns"
        wait_for(f"the stale agent on host {cut_host} to learn it lost task {task.id}",
                 lambda: refused in stale.output(), timeout=FENCED_WITHIN_S, period=0.1)
        wait_for(f"the outbox on host {cut_host} to be empty",
                 lambda: run.outbox_empty(cut_host), timeout=FENCED_WITHIN_S, period=0.1)
        figures["fenced_after_restore_s"] = round(time.monotonic() - restored_at, 2)
        figures["stale_attempt"] = next(line.split(": ", 1)[-1][:200]
                                        for line in stale.output().splitlines()
                                        if refused in line)

        # And the optimization ends by itself
        assert run.controller is not None
        try:
            exit_code = run.controller.proc.wait(
                timeout=max(1.0, DEADLINE_S - (time.monotonic() - began)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the controller did not end within {DEADLINE_S}s: "
                        f"{context()}", pytrace=False)
        figures["wall_s"] = round(time.monotonic() - began, 2)
        claims = [t.started_at for t in run.children() if t.worker == stale.name
                  and t.started_at and t.started_at > restored_wall]
        figures["cut_host_claims_again_s"] = (round(min(claims) - restored_wall, 2)
                                              if claims else None)
        # Then the cut task is as the attempt that ran last left it: nothing of the stale
        # attempt got in, not its reports, not its logs, not its outcome
        assert snapshot(run.store, task.id) == before, context()
        measured = measure(run.store, run.optimizer_id, JOBS)
        figures.update(results=measured.results, run_twice=measured.run_twice,
                       duplicated_scalars=measured.duplicated_scalars,
                       statuses=measured.statuses)
        print(f"multihost figures: {figures}")
        assert exit_code == 0, context()
        # And every job has its result, exactly once
        assert (measured.results, measured.lost) == (JOBS, 0), context()
        assert measured.statuses == {"completed": JOBS}, context()
        children = run.children()
        assert len(children) == JOBS, context()
        # And no scalar is stored twice, and every job has all its reports
        assert measured.duplicated_scalars == 0, context()
        assert all(run.reports(t.id) == STEPS for t in children), context()
        # And every task's records are its last attempt's
        assert foreign_scalars(run.store, [t.id for t in children]) == [], context()
        assert measured.fenced_off_outcomes == 0, context()
        # And no task ran twice but the cut-off one, which ran exactly once more
        assert {t.id: t.attempt for t in children if t.attempt != 1} == {
            task.id: task.attempt + 1}, context()
        assert measured.run_twice == 1, context()
        # And both agents are alive, the cut-off one included
        assert stale.alive() and fresh.alive(), context()
