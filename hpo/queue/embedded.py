"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, tuned for several
agent processes on one machine.

Six fixes over the stock transport, installed under its own ``sqla`` alias so that
``sqla+sqlite:///PATH`` URLs use them:

* ``polling_interval`` is taken as the transport option it is (the stock channel passes
  it on to ``create_engine``, which rejects it);
* two processes declaring one new queue, or creating the tables of a new broker file,
  at the same moment do not crash the loser;
* SQLite connections run in WAL mode with a busy timeout, so publishers and consumers in
  different processes wait for each other instead of failing with "database is locked";
* a delivered message is deleted rather than kept invisible forever (every poll of an
  empty queue scanned them all);
* an entry that is not a kombu message is logged and dropped (``hpo.queue.messages``)
  instead of stopping the consumer.
"""

from __future__ import annotations

import time
from json import loads
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqla
from kombu.utils.encoding import bytes_to_str
from sqlalchemy import create_engine, event, text
from sqlalchemy.exc import IntegrityError, OperationalError

from hpo.defaults import SQLITE_BUSY_TIMEOUT_MS
from hpo.queue.messages import dropped, envelope_is_sound, preview

# Options the virtual transport reads itself; never engine arguments.
_TRANSPORT_ONLY = ("polling_interval", "queue_tablename", "message_tablename", "callback",
                   "errback", "max_retries", "interval_start", "interval_step",
                   "interval_max", "retry_errors")


class Channel(kombu_sqla.Channel):
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

    def _get(self, queue: str, timeout: Any = None) -> Any:
        # The stock channel marks a delivered message invisible and keeps it forever,
        # and every poll of an empty queue then scans them all: deleting it instead
        # keeps polls constant. Redelivery does not depend on the row: unacked messages
        # are put back from kombu's in-memory QoS when a channel closes.
        obj = self._get_or_create(queue)
        if self.session.bind.name == "sqlite":
            self.session.execute(text("BEGIN IMMEDIATE TRANSACTION"))
        try:
            message = (self.session.query(self.message_cls)
                       .filter(self.message_cls.queue_id == obj.id)
                       .filter(self.message_cls.visible != False)  # noqa: E712
                       .order_by(self.message_cls.sent_at, self.message_cls.id)
                       .with_for_update().limit(1).first())
            if message is None:
                raise Empty()
            self.session.delete(message)
            entry = bytes_to_str(message.payload)
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
    cursor.close()


class Transport(kombu_sqla.Transport):
    Channel = Channel

    def _deliver(self, message: Any, queue: str) -> None:
        if envelope_is_sound(message):
            super()._deliver(message, queue)


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


def install() -> None:
    """Make ``sqla+`` / ``sqlalchemy+`` broker URLs use this transport."""
    TRANSPORT_ALIASES["sqla"] = "hpo.queue.embedded:Transport"
    TRANSPORT_ALIASES["sqlalchemy"] = "hpo.queue.embedded:Transport"
