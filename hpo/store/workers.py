"""Agents (workers) and their heartbeats; finding tasks whose agent went silent.

An agent that stops unregisters (``remove_worker``): its row is kept, marked stopped,
for STOPPED_WORKERS_KEPT_S, so the web view can list the agents a finished run used and
when they left; for everything else (``list_workers``' default, the reaper, ``hpo
workers``) a stopped agent is gone."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, delete, or_, select, text, update

from hpo.defaults import PG_APPLICATION_NAME, STOPPED_WORKERS_KEPT_S
from hpo.errors import StoreError
from hpo.lifecycle import Status
from hpo.records import TaskRecord, WorkerRecord
from hpo.store import schema
from hpo.store.base import StoreBase
from hpo.store.tasks import _record

W = schema.workers
T = schema.tasks

# hpo's sessions on this database, under this role, but this one, that have sat inside a
# transaction (or half-way through receiving a statement, or blocked sending a reply)
# since before the cutoff; each ended (a backend blocked on its client obeys the signal).
# MATERIALIZED (PostgreSQL 12 and later): the sessions are chosen first, then ended,
# whatever the planner's order of the conditions.
_END_STUCK_SESSIONS = text("""
WITH stuck AS MATERIALIZED (
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND usename = current_user
      AND pid <> pg_backend_pid() AND application_name = :application
      AND (state LIKE 'idle in transaction%'
           OR (state = 'active' AND wait_event IN ('ClientRead', 'ClientWrite')))
      AND state_change < clock_timestamp() - make_interval(secs => :older_than_s)
)
SELECT pid FROM stuck WHERE pg_terminate_backend(pid)
""")


class WorkersMixin(StoreBase):
    def heartbeat(
        self,
        name: str,
        *,
        queues: Sequence[str] = (),
        slots: Sequence[str] = (),
        running: Sequence[str] = (),
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        """Record that worker ``name`` is alive, with what it serves and runs now (an
        agent started again under the name of a stopped one is live again)."""
        now = self.now()
        values = {"queues": list(queues), "slots": list(slots), "running": list(running),
                  "host": host, "pid": pid, "last_heartbeat": now, "stopped_at": None}
        with self._write() as conn:
            updated = conn.execute(update(W).where(W.c.name == name).values(**values)).rowcount
        if not updated:
            try:
                with self._write() as conn:
                    conn.execute(W.insert().values(name=name, started_at=now, **values))
            except StoreError:
                # Another process registered this name first: its row is updated now.
                with self._write() as conn:
                    conn.execute(update(W).where(W.c.name == name).values(**values))

    def list_workers(self, *, stopped_within: float | None = None) -> list[WorkerRecord]:
        """The registered (not stopped) workers by name; with ``stopped_within``, also
        those that stopped less than that many seconds ago (their ``stopped_at`` set)."""
        live = W.c.stopped_at.is_(None)
        query = select(W).order_by(W.c.name)
        if stopped_within is None:
            query = query.where(live)
        else:
            query = query.where(or_(live, W.c.stopped_at >= self.now() - stopped_within))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [WorkerRecord(**row._mapping) for row in rows]

    def remove_worker(self, name: str) -> None:
        """Unregister worker ``name``: it no longer counts as alive anywhere (the reaper
        takes back its running tasks), its row is kept stopped for the web view, and
        the rows stopped longer than STOPPED_WORKERS_KEPT_S are dropped."""
        now = self.now()
        with self._write() as conn:
            conn.execute(update(W).where(W.c.name == name, W.c.stopped_at.is_(None))
                         .values(stopped_at=now, running=[]))
            conn.execute(delete(W).where(W.c.stopped_at < now - STOPPED_WORKERS_KEPT_S))

    def end_stuck_sessions(self, older_than_s: float) -> list[int]:
        """End hpo's PostgreSQL sessions stuck inside a transaction for ``older_than_s``
        (``defaults.PG_STUCK_SESSION_S`` says why); the server pids ended. They free
        their row locks as they go. SQLite: none (a transaction ends with its process)."""
        if self.dialect != "postgresql":
            return []
        with self._write() as conn:
            return list(conn.execute(_END_STUCK_SESSIONS, {
                "application": PG_APPLICATION_NAME, "older_than_s": older_than_s}).scalars())

    def lost_tasks(self, timeout: float) -> list[TaskRecord]:
        """Running tasks whose worker has not sent a heartbeat for ``timeout`` seconds
        (or is not registered at all) and that were claimed longer ago than that.

        A task's lease is its claim (``started_at``, which ``claim`` sets) renewed by its
        worker's heartbeats: a claim proves its agent alive, so a host that claims a task
        the moment it reconnects, before its next heartbeat, does not lose it to a
        reaper that read the old heartbeat."""
        cutoff = self.now() - timeout
        fresh = select(W.c.name).where(and_(W.c.last_heartbeat >= cutoff,
                                            W.c.stopped_at.is_(None)))
        query = select(T).where(
            T.c.status == Status.running.value,
            or_(T.c.worker.is_(None), T.c.worker.not_in(fresh)),
            or_(T.c.started_at.is_(None), T.c.started_at < cutoff),
            # A task started by hand (no worker) is the user's own process: not ours to reap.
            T.c.worker.is_not(None),
        )
        with self._read() as conn:
            return [_record(row) for row in conn.execute(query)]
