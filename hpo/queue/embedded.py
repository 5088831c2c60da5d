"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, tuned for several
agent processes on one machine.

Fixes over the stock transport, installed under its own ``sqla`` alias so that
``sqla+sqlite:///PATH`` URLs use them:

* ``polling_interval`` is taken as the transport option it is (the stock channel passes
  it on to ``create_engine``, which rejects it);
* two processes declaring one new queue, or creating the tables of a new broker file,
  at the same moment do not crash the loser;
* SQLite connections run in WAL mode with a busy timeout, so publishers and consumers in
  different processes wait for each other instead of failing with "database is locked";
* a delivered message is deleted rather than kept invisible forever (every poll of an
  empty queue scanned them all);
* a publish is one INSERT: the queue's row id is kept per channel (kombu never deletes
  a queue's row) instead of an ORM query for it and an ORM flush per message;
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

import functools
import logging
import threading
import time
from json import loads
from pathlib import Path
from queue import Empty
from typing import Any, NamedTuple

from kombu.transport import sqlalchemy as kombu_sqla
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps
from sqlalchemy import Delete, Insert, Select, bindparam, create_engine, delete, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError

from hpo.defaults import EMBEDDED_FALLBACK_POLL_S, SQLITE_BUSY_TIMEOUT_MS
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


class Channel(kombu_sqla.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._queue_ids: dict[str, int] = {}  # before kombu's set-up, which may declare
        super().__init__(*args, **kwargs)

    def _open(self) -> Any:
        # The first processes to use a new broker file create its tables at the same
        # moment; the loser's CREATE TABLE fails with "already exists". Once more then.
        try:
            return super()._open()
        except OperationalError:
            return super()._open()

    def _get_or_create(self, queue: str) -> Any:
        # Two processes declaring a new queue at once: the loser's INSERT violates the
        # unique name (the stock channel only catches OperationalError). It exists now.
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return super()._get_or_create(queue)

    # (kombu's own classes name the second argument differently: mypy sees a conflict)
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # kombu's own queries the queue's row and flushes an ORM object per message,
        # about 2 ms of CPU a publish on a small machine: here one INSERT, the columns'
        # defaults (visible, version) and no timestamp, as the ORM object gets them.
        values = {"payload": dumps(payload), "queue_id": self._queue_id(queue)}
        try:
            self.session.execute(self._statements.insert, values)
            self.session.commit()
        except OperationalError:
            self.session.rollback()  # the publish fails (and is retried), nothing stored
            raise
        self.connection.ring(queue)  # committed: a consumer that looks now finds it

    @functools.cached_property
    def _statements(self) -> _Statements:
        """The statements of a publish and a take, built once with their values as
        parameters: building one (and its cache key) cost SQLAlchemy more than the
        INSERT itself."""
        messages = self.message_cls.__table__
        return _Statements(
            insert=messages.insert(),
            head=(select(messages.c.id, messages.c.payload)
                  .where(messages.c.queue_id == bindparam("queue_id"),
                         messages.c.visible != False)  # noqa: E712
                  .order_by(messages.c.timestamp, messages.c.id)
                  .with_for_update().limit(1)),
            delete=delete(messages).where(messages.c.id == bindparam("id")))

    def _queue_id(self, queue: str) -> int:
        """The queue's row id, made on its first use here and kept: kombu never deletes
        a queue's row, so the id stays right for the channel's life."""
        queue_id = self._queue_ids.get(queue)
        if queue_id is None:
            queue_id = self._queue_ids[queue] = int(self._get_or_create(queue).id)
        return queue_id

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
        # As in _put: the kept queue id and Core statements, not ORM objects.
        queue_id = self._queue_id(queue)
        statements = self._statements
        if self.session.bind.name == "sqlite":
            self.session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            found = self.session.execute(statements.head, {"queue_id": queue_id}).first()
            if found is None:
                raise Empty()
            self.session.execute(statements.delete, {"id": found.id})
            entry = bytes_to_str(found.payload)
            try:
                return loads(entry)
            except (TypeError, ValueError) as exc:
                # Not JSON (written by something else than kombu): the stock channel
                # raised out of the worker's loop and left the row at the queue's head.
                dropped(f"not JSON ({exc}): {preview(entry)}")
                raise Empty() from None
        finally:
            self.session.commit()

    def _engine_from_config(self) -> Any:
        conninfo = self.connection.client
        options = {k: v for k, v in conninfo.transport_options.items()
                   if k not in _TRANSPORT_ONLY}
        engine = create_engine(conninfo.hostname, **options)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # As the store's: no fsync per commit (a publish waited on the disk for most of its
    # time). A crashed process loses nothing; a power cut may lose the last messages,
    # whose tasks stay queued in the store and are published again by the reaper.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class Transport(kombu_sqla.Transport):
    Channel = Channel

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
                connection.default_channel._open()
            return
        except OperationalError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))

