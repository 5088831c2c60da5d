"""A store's wake-ups, by its dialect: PostgreSQL ``NOTIFY``/``LISTEN``; a SQLite file
the doorbell folder ``<file>.events`` beside it.

What is announced, with the task id: a change a waiter acts on at once
(``StoreBase._changed``: a task's end, by finish, a re-queue that ends it stopped or any
move to a final status; a stop request), and new scalar reports (``StoreBase._reported``),
which a waiter may take in batches. A listener hears every task's: it filters by the ids
it watches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import Engine

from hpo.wakeups.base import Announcer, Listener, ListenerUnavailable, OnChange, SilentAnnouncer
from hpo.wakeups.doorbell import Doorbell, DoorbellAnnouncer, DoorbellListener, bell_folder
from hpo.wakeups.postgres import PgAnnouncer, PgListener

# The doorbell folder beside a SQLite store file.
STORE_BELL_SUFFIX = ".events"
# A report's payload: the task id and this (an end's is the task id alone).
_REPORTED = " reported"


class StoreChange(NamedTuple):
    """What a store announced: a task changed (``reported`` False: it ended, or a stop
    was asked), or reported new scalars (``reported`` True)."""

    task_id: str
    reported: bool = False

    def payload(self) -> str:
        return self.task_id + (_REPORTED if self.reported else "")

    @classmethod
    def parse(cls, payload: str) -> StoreChange:
        if payload.endswith(_REPORTED):
            return cls(payload[:-len(_REPORTED)], reported=True)
        return cls(payload)


# Called on the listener's thread; None: changes may have been missed (look at all).
OnStoreChange = Callable[[StoreChange | None], None]


def announcer_for(engine: Engine) -> Announcer:
    """How the store on ``engine`` announces its changes (nothing is opened yet)."""
    if engine.dialect.name == "postgresql":
        return PgAnnouncer()
    path = _sqlite_file(engine)
    if path is None:
        return SilentAnnouncer()
    return DoorbellAnnouncer(Doorbell(bell_folder(path, STORE_BELL_SUFFIX)))


def listen_to_store(engine: Engine, on_change: OnStoreChange) -> Listener:
    """A listener of the store on ``engine``; ListenerUnavailable (saying why) when none
    can be set up: the caller polls."""

    def heard(payload: str | None) -> None:
        on_change(None if payload is None else StoreChange.parse(payload))

    return _listener(engine, heard)


def _listener(engine: Engine, on_change: OnChange) -> Listener:
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
