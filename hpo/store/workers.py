"""Agents (workers) and their heartbeats; finding tasks whose agent went silent."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, or_, select, update

from hpo.errors import StoreError
from hpo.lifecycle import Status
from hpo.records import TaskRecord, WorkerRecord
from hpo.store import schema
from hpo.store.base import StoreBase
from hpo.store.tasks import _record

W = schema.workers
T = schema.tasks


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
        """Record that worker ``name`` is alive, with what it serves and runs now."""
        now = self.now()
        values = {"queues": list(queues), "slots": list(slots), "running": list(running),
                  "host": host, "pid": pid, "last_heartbeat": now}
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

    def list_workers(self) -> list[WorkerRecord]:
        with self._read() as conn:
            rows = conn.execute(select(W).order_by(W.c.name)).all()
        return [WorkerRecord(**row._mapping) for row in rows]

    def remove_worker(self, name: str) -> None:
        with self._write() as conn:
            conn.execute(delete(W).where(W.c.name == name))

    def lost_tasks(self, timeout: float) -> list[TaskRecord]:
        """Running tasks whose worker has not sent a heartbeat for ``timeout`` seconds
        (or is not registered at all) and that were claimed longer ago than that.

        A task's lease is its claim (``started_at``, which ``claim`` sets) renewed by its
        worker's heartbeats: a claim proves its agent alive, so a host that claims a task
        the moment it reconnects, before its next heartbeat, does not lose it to a
        reaper that read the old heartbeat."""
        cutoff = self.now() - timeout
        fresh = select(W.c.name).where(W.c.last_heartbeat >= cutoff)
        query = select(T).where(
            T.c.status == Status.running.value,
            or_(T.c.worker.is_(None), T.c.worker.not_in(fresh)),
            or_(T.c.started_at.is_(None), T.c.started_at < cutoff),
            # A task started by hand (no worker) is the user's own process: not ours to reap.
            T.c.worker.is_not(None),
        )
        with self._read() as conn:
            return [_record(row) for row in conn.execute(query)]
