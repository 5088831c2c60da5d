"""A store's wake-ups, by its dialect: PostgreSQL ``NOTIFY``/``LISTEN``; a SQLite file
the doorbell folder ``<file>.events`` beside it.

What is announced (``StoreBase._changed``, with the task id): a task's end (finish, a
re-queue that ends it stopped, any move to a final status), a stop request, and new
scalar reports. A listener hears every task's: it filters by the ids it watches.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from hpo.wakeups.base import Announcer, Listener, ListenerUnavailable, OnChange, SilentAnnouncer
from hpo.wakeups.doorbell import Doorbell, DoorbellAnnouncer, DoorbellListener, bell_folder
from hpo.wakeups.postgres import PgAnnouncer, PgListener

# The doorbell folder beside a SQLite store file.
STORE_BELL_SUFFIX = ".events"


def announcer_for(engine: Engine) -> Announcer:
    """How the store on ``engine`` announces its changes (nothing is opened yet)."""
    if engine.dialect.name == "postgresql":
        return PgAnnouncer()
    path = _sqlite_file(engine)
    if path is None:
        return SilentAnnouncer()
    return DoorbellAnnouncer(Doorbell(bell_folder(path, STORE_BELL_SUFFIX)))


def listen_to_store(engine: Engine, on_change: OnChange) -> Listener:
    """A listener of the store on ``engine``; ListenerUnavailable (saying why) when none
    can be set up: the caller polls."""
    if engine.dialect.name == "postgresql":
        return PgListener(engine, on_change)
    path = _sqlite_file(engine)
    if path is None:
        raise ListenerUnavailable(
            f"a {engine.dialect.name} store without a file has no wake-ups")
    return DoorbellListener(bell_folder(path, STORE_BELL_SUFFIX), on_change)


def _sqlite_file(engine: Engine) -> Path | None:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)
