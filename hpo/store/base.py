"""The connection handling every part of the store shares."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import ColumnElement, Connection, Update, select

from hpo.errors import LostOwnership, TaskNotFound
from hpo.lifecycle import Status
from hpo.store import engine as engines
from hpo.store import schema
from hpo.wakeups import NOTIFY_PAYLOAD, StoreChange, announcer_for


class StoreBase:
    """Holds the engine; ``_read()`` and ``_write()`` give one transaction each."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        """``create`` False: a store that does not exist yet (no SQLite file, no hpo
        tables) is an error rather than made, for the commands that only read or act on
        what is there: a typo in a path must not look like an empty store."""
        self.url = url
        self.engine = engines.create(url, must_exist=not create)
        engines.ensure_schema(self.engine, url, create=create)
        self._announcer = announcer_for(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A connection for reads (SELECTs only: no lock, no write).

        SQLite: one transaction, so its statements share one snapshot. PostgreSQL:
        autocommit, no BEGIN and COMMIT (psycopg sends each as a round trip of its own:
        a one-statement read cost three). Nothing is lost by it: hpo's sessions run at
        READ COMMITTED (the server's default; PG_SESSION_OPTIONS and the engine set no
        other level), where every statement of a transaction takes its own snapshot, so
        a read-only transaction of several statements sees nothing more consistent
        than the same statements each on its own; and no read takes a row lock (FOR
        UPDATE / FOR SHARE are in writes only) that a transaction would hold. A read of
        several statements that needs an order (``read_jobs``: records, then scalars)
        gets it from the order of its statements, as before. The option is set on the
        pooled connection for this checkout and reset when it goes back (measured: the
        same CPU as a second, autocommit engine, without a second pool of server
        connections)."""
        if self.dialect == "postgresql":
            with self._autocommit() as conn:
                yield conn
            return
        with engines.translated(self.url), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextlib.contextmanager
    def _write_one(self) -> Iterator[Connection]:
        """``_write`` for a write of ONE statement that announces nothing (a claim's
        UPDATE ... RETURNING): on PostgreSQL in autocommit, the statement its own
        transaction, committed before its result comes back, without the BEGIN and
        COMMIT round trips. A second statement there would be a transaction of its
        own: use ``_write``."""
        if self.dialect != "postgresql":
            with self._write() as conn:
                yield conn
            return
        with self._autocommit() as conn:
            yield conn

    @contextlib.contextmanager
    def _autocommit(self) -> Iterator[Connection]:
        """A pooled connection in autocommit for this checkout (PostgreSQL: each
        statement its own transaction, no BEGIN and COMMIT round trips)."""
        with engines.translated(self.url), self.engine.connect().execution_options(
                isolation_level="AUTOCOMMIT") as conn:
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with engines.translated(self.url):
            conn = self.engine.connect().execution_options(hpo_write=True)
            with conn:
                committed = False
                try:
                    with conn.begin():
                        yield conn
                    committed = True
                finally:
                    self._announcer.settle(conn, committed)

    def _changed(self, conn: Connection, task_id: str) -> None:
        """Wake whoever waits on task ``task_id`` (a controller watching its jobs): call
        it inside ``_write`` for a change a waiter acts on at once (the task ended, or
        was asked to stop). Heard once the transaction commits, never if it rolls back
        (hpo.wakeups: a PostgreSQL NOTIFY in this transaction, or a ring of the doorbell
        beside a SQLite file after it)."""
        self._announcer.announce(conn, StoreChange(task_id).payload())

    def _update_changed(self, conn: Connection, statement: Update, params: dict[str, Any],
                        task_id: str) -> bool:
        """Run ``statement`` with ``params``, an UPDATE of task ``task_id``'s row only,
        and ``_changed`` when it changed the row (True). On PostgreSQL the NOTIFY is what
        the UPDATE returns (one statement, one round trip, not two), elsewhere a
        ``_changed`` after it."""
        notify = self._announcer.returned()
        if notify is None:
            changed = conn.execute(statement, params).rowcount == 1
            if changed:
                self._changed(conn, task_id)
            return changed
        params = {**params, NOTIFY_PAYLOAD: StoreChange(task_id).payload()}
        return conn.execute(_returning(statement, notify), params).first() is not None

    def _reported(self, conn: Connection, task_id: str) -> None:
        """As ``_changed``, for new scalar reports of ``task_id``: a waiter may take
        these in batches rather than one by one."""
        self._announcer.announce(conn, StoreChange(task_id, reported=True).payload())

    def _check_owner(self, conn: Connection, task_id: str, attempt: int | None, *,
                     exclusive: bool = False) -> None:
        """The fence of an attempt's writes: in the write's own transaction, raise
        LostOwnership unless ``attempt`` owns the task (running, that attempt); None is
        an unfenced writer (a script run by hand, the controller), never refused.

        The task row stays locked until the write commits (PostgreSQL: FOR SHARE, or
        FOR UPDATE when ``exclusive``, for a write that updates the row itself; SQLite:
        BEGIN IMMEDIATE already serialises writers), so a re-queue or a claim lands
        before the write or after it, never in between. (A numbered batch fences with
        its UPDATE of the row instead, which holds the same lock: ``_fence_batch``.)"""
        if attempt is None:
            return
        tasks = schema.tasks
        row = conn.execute(select(tasks.c.status, tasks.c.attempt)
                           .where(tasks.c.id == task_id)
                           .with_for_update(read=not exclusive)).first()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id!r}: `hpo task list` shows the ids")
        if row.status != Status.running.value or row.attempt != attempt:
            raise LostOwnership(
                f"task {task_id}: attempt {attempt} no longer owns it (now {row.status}, "
                f"attempt {row.attempt}); its write was refused")

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"Store({engines.safe_url(self.url)!r})"

    @staticmethod
    def now() -> float:
        return time.time()


@functools.lru_cache(maxsize=64)
def _returning(statement: Update, notify: ColumnElement[Any]) -> Update:
    """``statement`` returning ``notify``, built once per statement (both are built once)."""
    return statement.returning(notify)
