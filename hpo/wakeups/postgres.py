"""PostgreSQL: ``NOTIFY`` in the writing transaction, heard by a connection that
``LISTEN``\\s.

The server delivers a notification when (and only if) its transaction commits, to every
connection listening on the channel in that database, in commit order. A listener holds
one connection of its own, outside the store's pool; when that connection is lost it
connects again, and then wakes its waiter: what was sent in between is lost.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, String, bindparam, func, select

from hpo.defaults import PG_LISTEN_RETRY_S, PG_LISTEN_TICK_S
from hpo.wakeups.base import NOTIFY_PAYLOAD, Announcer, Listener, ListenerUnavailable, OnChange

log = logging.getLogger("hpo.wakeups")

# One channel per database: a listener filters by the task ids it watches.
CHANNEL = "hpo_tasks"
_RETURNED_NOTIFY = func.pg_notify(CHANNEL, bindparam(NOTIFY_PAYLOAD, type_=String))


class PgAnnouncer(Announcer):
    """``SELECT pg_notify(...)`` in the write's own transaction: one statement more,
    and the server does the rest on commit (nothing is sent on a rollback)."""

    def announce(self, conn: Connection, payload: str) -> None:
        conn.execute(select(func.pg_notify(CHANNEL, payload)))

    def returned(self) -> ColumnElement[Any]:
        # Evaluated once per row the UPDATE changes, queued with its transaction.
        return _RETURNED_NOTIFY

    def settle(self, conn: Connection, committed: bool) -> None:
        pass  # the server delivers on commit, drops on rollback


class PgListener(Listener):
    """A dedicated connection listening on ``CHANNEL`` and a thread reading it.
    ListenerUnavailable when the first connection fails."""

    def __init__(self, engine: Engine, on_change: OnChange) -> None:
        self._engine = engine
        self._on_change = on_change
        self._closed = threading.Event()
        try:
            self._pooled, self._conn = self._connect()
        except Exception as exc:
            raise ListenerUnavailable(
                f"cannot LISTEN on the store: {str(exc).strip().splitlines()[0]}") from None
        self._thread = threading.Thread(target=self._serve, name="hpo-pg-listen",
                                        daemon=True)
        self._thread.start()

    @property
    def backend_pid(self) -> int:
        """The server process of the listening connection (pg_stat_activity's pid)."""
        return int(self._conn.info.backend_pid)

    def close(self) -> None:
        # The thread sees it within PG_LISTEN_TICK_S and closes its connection itself
        # (closing it from here would pull the socket from under its wait).
        self._closed.set()

    def _connect(self) -> tuple[Any, Any]:
        """A connection made as the store makes its own (the same URL, timeouts and
        keepalives), taken out of the pool for good: (its pool wrapper, psycopg's)."""
        pooled = self._engine.raw_connection()
        conn: Any = pooled.driver_connection  # psycopg's; the wrapper forgets it on detach
        pooled.detach()
        try:
            conn.rollback()  # a fresh connection may have opened a transaction
            conn.autocommit = True
            conn.execute(f"LISTEN {CHANNEL}")
        except Exception:
            pooled.close()
            raise
        return pooled, conn

    def _serve(self) -> None:
        connected = time.monotonic()
        while not self._closed.is_set():
            try:
                for notice in self._conn.notifies(timeout=PG_LISTEN_TICK_S):
                    self._deliver(notice.payload)
                    if self._closed.is_set():
                        break
            except Exception as exc:  # the connection is lost: make another
                log.info("store wake-ups: connection lost (%s); connecting again",
                         str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
                self._drop()
                # One that failed at once again (a server that accepts and then drops
                # us) is retried after a pause, not in a loop that wakes the waiter
                # (a controller cycle) each time.
                if (time.monotonic() - connected < PG_LISTEN_TICK_S
                        and self._closed.wait(PG_LISTEN_RETRY_S)):
                    return
                if not self._reconnect():
                    return
                connected = time.monotonic()
                self._deliver(None)  # what was sent meanwhile is lost: look at all
        self._drop()

    def _reconnect(self) -> bool:
        """Connect again until it works (True) or the listener is closed (False)."""
        while not self._closed.is_set():
            try:
                self._pooled, self._conn = self._connect()
                return True
            except Exception as exc:
                log.debug("store wake-ups: reconnect failed: %s", exc)
                self._closed.wait(PG_LISTEN_RETRY_S)
        return False

    def _drop(self) -> None:
        try:
            self._pooled.close()
        except Exception as exc:
            log.debug("store wake-ups: closing the listening connection: %s", exc)

    def _deliver(self, payload: str | None) -> None:
        try:
            self._on_change(payload or None)
        except Exception:  # the waiter's bug must not end its wake-ups
            log.exception("a store listener's callback failed")
