"""The contract of wake-ups: what a writer announces and what a listener hears."""

from __future__ import annotations

import abc
from collections.abc import Callable
from types import TracebackType
from typing import Any

from sqlalchemy import ColumnElement, Connection

from hpo.errors import HpoError

# The parameter that carries a change's payload into what ``Announcer.returned`` gives.
NOTIFY_PAYLOAD = "hpo_notify_payload"

# Called on the listener's own thread with what was announced (a task id, a queue
# name), or None when announcements may have been missed (a connection lost and made
# again): the waiter then looks at everything, as after its fallback period.
OnChange = Callable[[str | None], None]


class ListenerUnavailable(HpoError):
    """No listener can be set up here (a folder that is not writable, a database that
    cannot be reached, a dialect without wake-ups): the caller polls instead."""


class Listener(abc.ABC):
    """Hears announcements on a thread of its own and hands each to its ``OnChange``,
    which must be quick (set an event) and is never let raise into the thread. Once
    constructed it hears every announcement committed after that; ``close`` stops it
    and frees what it holds (idempotent)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class Announcer(abc.ABC):
    """A store's side: ``announce`` inside a write's transaction, ``settle`` once it has
    ended. Neither ever raises for a wake-up that could not be sent, nor blocks: a lost
    one costs a waiter its fallback period."""

    @abc.abstractmethod
    def announce(self, conn: Connection, payload: str) -> None:
        """``payload`` (what changed: ``StoreChange.payload``), in the transaction of
        ``conn``: heard once (and only if) it commits."""

    @abc.abstractmethod
    def settle(self, conn: Connection, committed: bool) -> None:
        """The transaction of ``conn`` has ended: deliver what it announced if
        ``committed``, drop it otherwise."""

    def returned(self) -> ColumnElement[Any] | None:
        """What an UPDATE may return to announce, for each row it changes, the payload
        given as its parameter ``NOTIFY_PAYLOAD``, in its own statement (no round trip of
        its own); None where the announcement is not a SQL expression: the caller then
        calls ``announce``. The same expression every time (statements built with it
        are kept)."""
        return None


class SilentAnnouncer(Announcer):
    """A store no one can listen to (an in-memory SQLite database): nothing to send."""

    def announce(self, conn: Connection, payload: str) -> None:
        pass

    def settle(self, conn: Connection, committed: bool) -> None:
        pass
