"""Statements a controller runs every cycle, run on the database driver's own cursor.

SQLAlchemy's execution of a cached statement (its execution context, result metadata
and row processing) costs about 0.15 ms a statement on top of the driver's own work, as
much again as a whole psycopg round trip; a controller reads its active jobs and their
new reports, and launches the next, every cycle, and runs a cycle per finished job.
These statements are still built with Core, compiled once per dialect and shape, and run
on the DBAPI cursor of a SQLAlchemy connection (its pool, its transaction). Their
parameters are encoded and their rows decoded by the columns' own types
(``schema.JSONText``). A driver error becomes the DBAPIError SQLAlchemy would raise (a
connection lost on the way is invalidated with its pool, as SQLAlchemy does), so
``hpo.store.engine.translated`` makes it the same StoreError. SQLite's BEGIN goes the same
way (``hpo.store.engine``): through SQLAlchemy it costs as much as a statement.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import Connection, Dialect, TypeDecorator
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.expression import ReturnsRows

T = TypeVar("T")
U = TypeVar("U")


def padded_size(count: int) -> int:
    """The number of binds to compile a query of ``count`` values for: the next power
    of two, so that a few shapes serve every count (the caller pads with values that
    match nothing: ``padded``)."""
    return 1 << max(count - 1, 0).bit_length()


def padded(values: Sequence[T], fill: U) -> list[T | U]:
    """``values`` and as many ``fill`` after them as make ``padded_size`` of them (NULL
    in an ``IN`` list or an ``=`` matches nothing)."""
    return [*values, *[fill] * (padded_size(len(values)) - len(values))]


@dataclass(frozen=True)
class DriverQuery:
    """A statement that returns rows (a SELECT, an INSERT ... RETURNING) compiled for
    one dialect; ``rows`` runs it on a connection's driver."""

    sql: str
    positions: tuple[str, ...] | None  # a positional paramstyle's order of the names
    defaults: Mapping[str, Any]  # the values the query holds itself (SQLite's OFFSET 0)
    encoders: Mapping[str, Callable[[Any], Any]]  # bind name -> its type's encoding
    names: tuple[str, ...]  # the selected columns' names, in order
    decoders: tuple[tuple[int, Callable[[Any], Any]], ...]  # column index -> decode

    @classmethod
    def compile(cls, query: ReturnsRows, dialect: Dialect) -> DriverQuery:
        """``query``: a SELECT, or a statement RETURNING rows; no expanding (list)
        parameter: one bind per value."""
        compiled = query.compile(dialect=dialect)
        if "POSTCOMPILE" in compiled.string:
            raise ValueError("a DriverQuery takes one bind per value, not a list")
        columns = list(query.exported_columns)
        decoders = tuple((i, functools.partial(column.type.process_result_value,
                                               dialect=dialect))
                         for i, column in enumerate(columns)
                         if isinstance(column.type, TypeDecorator))
        positions = tuple(compiled.positiontup) if compiled.positiontup else None
        defaults = {name: bind.value for name, bind in compiled.binds.items()
                    if bind.value is not None}
        encoders = {name: functools.partial(bind.type.process_bind_param, dialect=dialect)
                    for name, bind in compiled.binds.items()
                    if isinstance(bind.type, TypeDecorator)}
        return cls(compiled.string, positions, defaults, encoders,
                   tuple(c.name for c in columns), decoders)

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run on ``conn``'s DBAPI connection; each row as a dict by column name."""
        params = {**self.defaults, **params} if self.defaults else params
        if self.encoders:
            try:
                params = {name: (encode(value) if (encode := self.encoders.get(name))
                                 else value) for name, value in params.items()}
            except Exception as exc:  # a value its type cannot encode, as SQLAlchemy says
                raise StatementError(f"a parameter cannot be encoded: {exc}", self.sql,
                                     params, exc) from exc
        args: Any = params if self.positions is None else [params[n] for n in self.positions]
        return [self._decoded(row) for row in run_on_driver(conn, self.sql, args)]

    def _decoded(self, row: Any) -> dict[str, Any]:
        values = list(row)
        for i, decode in self.decoders:
            values[i] = decode(values[i])
        return dict(zip(self.names, values, strict=True))


def run_on_driver(conn: Connection, sql: str, args: Any = ()) -> list[Any]:
    """Run ``sql`` on ``conn``'s DBAPI cursor: its rows (none for a statement that
    returns none). A driver error raises as SQLAlchemy's DBAPIError. A lost connection
    is invalidated and the engine's pool replaced, as SQLAlchemy's own execution does
    (it invalidates the whole pool: after a server restart every pooled connection is
    dead); connections checked out elsewhere are dropped when they come back."""
    dbapi = conn.dialect.loaded_dbapi
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None  # a checked-out connection has one
    cursor = None
    try:
        cursor = dbapi_connection.cursor()
        cursor.execute(sql, args)
        return list(cursor.fetchall()) if cursor.description is not None else []
    except dbapi.Error as exc:
        lost = conn.dialect.is_disconnect(exc, dbapi_connection, cursor)
        if lost:
            conn.invalidate(exc)
            conn.engine.dispose(close=False)
        raise DBAPIError.instance(sql, args, exc, dbapi.Error, connection_invalidated=lost,
                                  dialect=conn.dialect) from exc
    finally:
        if cursor is not None:
            # Closing the cursor of a connection just invalidated can raise too: the
            # error above is the one to tell.
            with contextlib.suppress(dbapi.Error):
                cursor.close()
