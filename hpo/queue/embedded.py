"""The embedded broker: a kombu transport on a SQLite file, for several agent processes on
one machine; installed under the ``sqla`` alias, so that ``sqla+sqlite:///PATH`` URLs
use it.

It keeps kombu's SQLAlchemy transport's tables (``embedded_tables``: a broker file
either made is used by the other) and its behaviour, with SQLAlchemy Core instead of
kombu's ORM models (whose imports alone cost every process that uses the broker about
50 ms at its start), and with these fixes over the stock transport:

* ``polling_interval`` is taken as the transport option it is (the stock channel passes
  it on to ``create_engine``, which rejects it);
* two processes declaring one new queue, or creating the tables of a new broker file,
  at the same moment do not crash the loser;
* SQLite connections run in WAL mode with a busy timeout, so publishers and consumers in
  different processes wait for each other instead of failing with "database is locked";
* a delivered message is deleted rather than kept invisible forever (every poll of an
  empty queue scanned them all);
* a publish is one INSERT: the queue's row id is kept per channel (kombu never deletes
  a queue's row) instead of a query for it and an ORM flush per message;
* a closed channel gives its database connection back (the stock one kept its session);
* an entry that is not a kombu message is logged and dropped (``hpo.queue.messages``)
  instead of stopping the consumer;
* no poll on a message's way: a publish rings the doorbell beside the broker file
  (``hpo.wakeups``, folder ``<file>.bell``) once committed, and an idle consumer waits
  for that ring (or an ack that frees room for one more message) instead of sleeping
  between polls; it still polls every ``EMBEDDED_FALLBACK_POLL_S``, so a lost ring
  costs that much time, no message. Without a doorbell (the folder is not writable, the
  broker is not a SQLite file) it polls every ``EMBEDDED_POLL_S`` as before.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Iterator
from json import loads
from pathlib import Path
from queue import Empty
from typing import Any, NamedTuple

from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps
from sqlalchemy import (
    Delete,
    Insert,
    Select,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError

from hpo.defaults import EMBEDDED_FALLBACK_POLL_S, SQLITE_BUSY_TIMEOUT_MS
from hpo.queue.embedded_tables import MESSAGE_TABLE, QUEUE_TABLE, BrokerTables, broker_tables
from hpo.queue.messages import dropped, envelope_is_sound, preview
from hpo.wakeups import Doorbell, DoorbellListener, Listener, ListenerUnavailable, bell_folder

log = logging.getLogger("hpo.queue")

# The doorbell folder beside the broker's SQLite file.
BELL_SUFFIX = ".bell"

# Options the virtual transport reads itself; never engine arguments.
_TRANSPORT_ONLY = ("polling_interval", "queue_tablename", "message_tablename", "callback",
                   "errback", "max_retries", "interval_start", "interval_step",
                   "interval_max", "retry_errors")


class _Statements(NamedTuple):
    insert: Insert  # a message: payload, queue_id
    head: Select[Any]  # the oldest visible message of queue_id, locked
    delete: Delete  # the message id
    queue_id: Select[Any]  # the id of the queue name
    new_queue: Insert  # a queue: name
    size: Select[Any]  # the visible messages of queue_id
    purge_visible: Delete  # those of queue_id
    purge_rest: Delete  # the others of queue_id (delivered by kombu's own transport)


@functools.cache
def _statements_for(tables: BrokerTables) -> _Statements:
    """The channels' statements on ``tables``, built once with their values as
    parameters: building one (and its cache key) cost SQLAlchemy more than the INSERT
    itself."""
    queues, messages = tables.queues, tables.messages
    of_queue = messages.c.queue_id == bindparam("queue_id")
    return _Statements(
        insert=messages.insert(),
        head=(select(messages.c.id, messages.c.payload)
              .where(of_queue, messages.c.visible != False)  # noqa: E712
              .order_by(messages.c.timestamp, messages.c.id)
              .with_for_update().limit(1)),
        delete=delete(messages).where(messages.c.id == bindparam("id")),
        queue_id=select(queues.c.id).where(queues.c.name == bindparam("name")),
        new_queue=queues.insert(),
        size=(select(func.count()).select_from(messages)
              .where(of_queue, messages.c.visible == True)),  # noqa: E712
        purge_visible=delete(messages).where(of_queue, messages.c.visible == True),  # noqa: E712
        purge_rest=delete(messages).where(of_queue))


# One engine per broker URL and table names in a process, its tables created once: the
# channels on it share its connection pool.
_engines: dict[tuple[str, BrokerTables], Engine] = {}
_engines_lock = threading.Lock()


def _forget_engines() -> None:
    """In a forked child: the parent's engines, their pooled connections included, are
    not the child's to use (nor is a lock another thread may have held)."""
    global _engines_lock
    _engines_lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=_forget_engines)


class Channel(virtual.Channel):
    def __init__(self, connection: Any, **kwargs: Any) -> None:
        options = connection.client.transport_options
        self._tables = broker_tables(options.get("queue_tablename", QUEUE_TABLE),
                                     options.get("message_tablename", MESSAGE_TABLE))
        self._queue_ids: dict[str, int] = {}  # before kombu's set-up, which may declare
        self._db: Connection | None = None
        super().__init__(connection, **kwargs)

    @property
    def db(self) -> Connection:
        """This channel's database connection, from its engine's pool at its first use
        and given back when the channel closes."""
        if self._db is None:
            self._db = self.engine().connect()
        return self._db

    def engine(self) -> Engine:
        """The broker's engine, with its tables (created by the first channel on it)."""
        key = (self.connection.client.hostname, self._tables)
        with _engines_lock:
            engine = _engines.get(key)
            if engine is None:
                engine = self._engine_from_config()
                try:
                    _create_tables(engine, self._tables)
                except BaseException:
                    engine.dispose()
                    raise
                _engines[key] = engine
        return engine

    def close(self) -> None:
        super().close()  # unacknowledged messages go back first, on this connection
        if self._db is not None:
            db, self._db = self._db, None
            try:
                db.close()
            except SQLAlchemyError as exc:  # a broker file gone: nothing left to give back
                log.debug("embedded broker: closing a channel's connection: %s", exc)

    @contextlib.contextmanager
    def _transaction(self, immediate: bool = False) -> Iterator[Connection]:
        """The channel's connection in a transaction committed at the end; rolled back
        on any failure (a statement's or the commit's: a server gone, a disk error),
        without which the connection would never serve again. ``immediate``: on SQLite,
        the write lock taken at its start (a take's read and delete are one step)."""
        db = self.db
        try:
            if immediate and db.dialect.name == "sqlite":
                db.execute(text("BEGIN IMMEDIATE TRANSACTION"))
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        self._queue_id(queue)

    # (kombu's own classes name the second argument differently: mypy sees a conflict)
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # kombu's own queries the queue's row and flushes an ORM object per message,
        # about 2 ms of CPU a publish on a small machine: here one INSERT, the columns'
        # defaults (visible, version) and no timestamp, as the ORM object gets them.
        values = {"payload": dumps(payload), "queue_id": self._queue_id(queue)}
        with self._transaction() as db:  # a failure: nothing stored, the publish retried
            db.execute(self._statements.insert, values)
        self.connection.ring(queue)  # committed: a consumer that looks now finds it

    @property
    def _statements(self) -> _Statements:
        return _statements_for(self._tables)

    def _queue_id(self, queue: str) -> int:
        """The queue's row id, made on its first use here and kept: kombu never deletes
        a queue's row, so the id stays right for the channel's life."""
        queue_id = self._queue_ids.get(queue)
        if queue_id is None:
            queue_id = self._queue_ids[queue] = self._queue_row(queue)
        return queue_id

    def _queue_row(self, queue: str) -> int:
        """The queue's row id, its row inserted when missing. Two processes declaring a
        new queue at once: the loser's INSERT violates the unique name; it exists then."""
        statements = self._statements
        with self._transaction() as db:
            found = db.execute(statements.queue_id, {"name": queue}).scalar()
            if found is None:
                try:
                    db.execute(statements.new_queue, {"name": queue})
                    db.commit()
                except IntegrityError:
                    db.rollback()
                found = db.execute(statements.queue_id, {"name": queue}).scalar_one()
        return int(found)

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple=multiple)
        self.connection.wake()  # room for one more message under the prefetch limit

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue=requeue)
        self.connection.wake()

    def _get(self, queue: str, timeout: Any = None) -> Any:
        # The stock channel marks a delivered message invisible and keeps it forever,
        # and every poll of an empty queue then scans them all: deleting it instead
        # keeps polls constant. Redelivery does not depend on the row: unacked messages
        # are put back from kombu's in-memory QoS when a channel closes.
        queue_id, statements = self._queue_id(queue), self._statements
        with self._transaction(immediate=True) as db:
            found = db.execute(statements.head, {"queue_id": queue_id}).first()
            if found is not None:
                db.execute(statements.delete, {"id": found.id})
        if found is None:
            raise Empty()
        entry = bytes_to_str(found.payload)
        try:
            return loads(entry)
        except (TypeError, ValueError) as exc:
            # Not JSON (written by something else than kombu): the stock channel
            # raised out of the worker's loop and left the row at the queue's head.
            dropped(f"not JSON ({exc}): {preview(entry)}")
            raise Empty() from None

    def _size(self, queue: str) -> int:
        queue_id = self._queue_id(queue)
        with self._transaction() as db:
            return int(db.execute(self._statements.size, {"queue_id": queue_id}).scalar_one())

    def _purge(self, queue: str) -> int:
        """Every message of ``queue`` deleted; how many were waiting."""
        queue_id, statements = self._queue_id(queue), self._statements
        with self._transaction() as db:
            count = db.execute(statements.purge_visible, {"queue_id": queue_id}).rowcount
            db.execute(statements.purge_rest, {"queue_id": queue_id})
        return int(count)

    def _engine_from_config(self) -> Engine:
        conninfo = self.connection.client
        options = {k: v for k, v in conninfo.transport_options.items()
                   if k not in _TRANSPORT_ONLY}
        engine = create_engine(conninfo.hostname, **options)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine


def _create_tables(engine: Engine, tables: BrokerTables) -> None:
    """The broker's tables where missing. The first processes to use a new broker file
    create them at the same moment; the loser's CREATE TABLE fails with "already
    exists": once more then."""
    try:
        tables.metadata.create_all(engine)
    except OperationalError:
        tables.metadata.create_all(engine)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # As the store's: no fsync per commit (a publish waited on the disk for most of its
    # time). A crashed process loses nothing; a power cut may lose the last messages,
    # whose tasks stay queued in the store and are published again by the reaper.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Transport(virtual.Transport):
    Channel = Channel
    can_parse_url = True
    default_port = 0  # type: ignore[assignment]  # (kombu types it None; its own sets 0)
    driver_type = "sql"
    driver_name = "sqlalchemy"
    connection_errors = (OperationalError,)

    def driver_version(self) -> str:
        import sqlalchemy

        return str(sqlalchemy.__version__)

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        path = _sqlite_file(client.hostname)
        self._folder = None if path is None else bell_folder(path, BELL_SUFFIX)
        self._woken = threading.Event()
        self._listener: Listener | None = None
        self._listen_tried = False

    def ring(self, queue: str) -> None:
        """Wake the consumers of this broker file: a message was committed to ``queue``."""
        if self._folder is not None:
            _doorbell(self._folder).ring(queue)

    def wake(self) -> None:
        """Wake this connection's own wait (an ack made room for another message)."""
        self._woken.set()

    def drain_events(self, connection: Any, timeout: float | None = None,
                     **kwargs: Any) -> None:
        """kombu's loop, waiting for a ring instead of sleeping between empty polls.
        As kombu's: one message delivered, or socket.timeout after ``timeout``; sooner
        once the Celery worker consuming here is shutting down (its warm shutdown looks at
        its flags only between two calls, and waited out Celery's 2 s timeout)."""
        if self._doorbell_listener() is None:
            super().drain_events(connection, timeout=timeout, **kwargs)
            return
        cycle: Any = self.cycle  # kombu's FairCycle over the channels
        started = time.monotonic()
        while True:
            self._woken.clear()  # before the poll: a ring during it is kept
            try:
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                pass
            waited = time.monotonic() - started
            if (timeout is not None and waited >= timeout) or _worker_stopping():
                raise TimeoutError()  # socket.timeout, which Celery's loop expects
            pause = EMBEDDED_FALLBACK_POLL_S
            if timeout is not None:
                pause = min(pause, timeout - waited)
            self._woken.wait(pause)

    def close_connection(self, connection: Any) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._listen_tried = False  # kombu reconnects through this same transport
        super().close_connection(connection)

    def _doorbell_listener(self) -> Listener | None:
        """This connection's listener, bound at its first wait (a connection that only
        publishes never binds one); None where there is no doorbell (said once)."""
        if not self._listen_tried and self._folder is not None:
            self._listen_tried = True
            try:
                self._listener = DoorbellListener(self._folder, self._on_ring)
            except ListenerUnavailable as exc:
                log.info("embedded broker: no doorbell (%s); polling every %gs", exc,
                         self.polling_interval)
        return self._listener

    def _on_ring(self, _queue: str | None) -> None:
        self._woken.set()

    def _deliver(self, message: Any, queue: str) -> None:
        if envelope_is_sound(message):
            super()._deliver(message, queue)


def _worker_stopping() -> bool:
    """Whether the Celery worker of this process is shutting down (a signal set its
    flags: hpo's agent sets ``should_stop`` on SIGTERM)."""
    from celery.worker import state

    return state.should_stop is not None or state.should_terminate is not None


@functools.cache
def _doorbell(folder: Path) -> Doorbell:
    """One doorbell per folder in a process: its cached listing serves every connection."""
    return Doorbell(folder)


def _sqlite_file(hostname: str | None) -> Path | None:
    """The broker's SQLite file, from the URL after ``sqla+``; None for another database."""
    try:
        url = make_url(hostname or "")
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def create_tables(url: str, attempts: int = 10) -> None:
    """Create the broker file's tables before kombu uses it. Processes that create them
    at the same moment inside a publish make kombu retry on a channel it has closed;
    here a loser just tries again."""
    from kombu import Connection

    for attempt in range(attempts):
        try:
            with Connection(url) as connection:
                connection.default_channel.engine()
            return
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))

