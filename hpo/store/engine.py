"""Opening a database: engine options per backend, the schema check, and the one place
where driver errors become hpo's own."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, create_engine, event, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    DisconnectionError,
    NoSuchModuleError,
    SQLAlchemyError,
)

from hpo import limits
from hpo.defaults import (
    PG_APPLICATION_NAME,
    PG_CONNECT_TIMEOUT_S,
    PG_KEEPALIVES,
    PG_PING_IDLE_S,
    PG_SESSION_OPTIONS,
    SQLITE_BUSY_TIMEOUT_MS,
)
from hpo.errors import SchemaVersionError, StoreError, StoreRefusedValue, StoreUnavailable
from hpo.store import schema
from hpo.store.driver import run_on_driver

# Serialises schema creation when many processes open a new PostgreSQL database at once.
_PG_SCHEMA_LOCK = 0x68706F  # "hpo"


def safe_url(url: str) -> str:
    """The URL with its password hidden, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def create(url: str, *, must_exist: bool = False) -> Engine:
    """The engine for ``url``. ``must_exist``: a SQLite file that is not there is one
    line naming the path, and no folder is made for it (a PostgreSQL database is checked
    by ``ensure_schema``)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreUnavailable(
            f"bad store URL {limits.hide_password(url)!r}: use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB") from None
    try:
        if parsed.get_backend_name() == "sqlite":
            return _create_sqlite(url, parsed.database, must_exist=must_exist)
        engine = create_engine(url, pool_size=5, max_overflow=10,
                               connect_args=_network_timeouts(parsed.query))
        _ping_when_idle(engine)
        return engine
    except ArgumentError as exc:  # parsed, but not usable (sqlite://user:pw@/x.db)
        raise StoreUnavailable(
            f"bad store URL {safe_url(url)}: {_first_line(exc)}; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB") from None
    except (NoSuchModuleError, ImportError) as exc:
        raise StoreUnavailable(
            f"no driver for store URL {safe_url(url)} ({exc}): use sqlite:/// or "
            "postgresql+psycopg://"
        ) from None


def _ping_when_idle(engine: Engine) -> None:
    """SQLAlchemy's pre-ping, only for a connection idle for PG_PING_IDLE_S or more (see
    there): a dead one is discarded and the pool hands out another."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("used_at", 0.0) < PG_PING_IDLE_S:
            return
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except Exception as exc:
            raise DisconnectionError(f"a pooled connection is dead: {exc}") from exc
        finally:
            if not dbapi_connection.closed:
                dbapi_connection.rollback()  # the ping's transaction, not the caller's


def _network_timeouts(query: Any) -> dict[str, Any]:
    """libpq's connect timeout and TCP keepalives, and the server's settings for this
    session (``PG_SESSION_OPTIONS``), for those the URL does not set: a server behind a
    cut link (a partition, a dead host) then fails a connect or a query in seconds
    instead of hanging its caller until the kernel gives up (many minutes), the server
    frees a cut-off client's locks as soon, and the agent's retry policy takes over
    (docs/reliability.md). The application name marks the session as hpo's (for
    ``end_stuck_sessions``)."""
    options = {"connect_timeout": PG_CONNECT_TIMEOUT_S, **PG_KEEPALIVES,
               "options": PG_SESSION_OPTIONS, "application_name": PG_APPLICATION_NAME}
    return {key: value for key, value in options.items() if key not in query}


def _create_sqlite(url: str, database: str | None, *, must_exist: bool = False) -> Engine:
    # First: it checks the URL itself (sqlite://user@/x.db is an error) and opens nothing.
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
    if database and database != ":memory:":
        path = Path(database).expanduser()
        if must_exist and not path.is_file():
            raise StoreUnavailable(
                f"no store at {path}: nothing has run with this HPO_STORE_URL / --store "
                "yet; check the path (hpo creates a store only when something runs: "
                "hpo-controller start, hpo task create)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnavailable(
                f"cannot create the store's folder {path.parent}: {exc.strerror}; set "
                "HPO_HOME or --store to a writable place") from None

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN instead of pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer takes the lock up front: a deferred transaction that reads and then
        # writes can fail at once with "database is locked" instead of waiting. On the
        # driver's cursor: SQLAlchemy's execution would cost a statement's CPU.
        write = conn.get_execution_options().get("hpo_write", False)
        run_on_driver(conn, "BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    """Turn SQLAlchemy and driver errors into StoreError with a readable line."""
    try:
        yield
    except DBAPIError as exc:
        if exc.connection_invalidated or _is_connect_error(exc):
            raise StoreUnavailable(
                f"cannot reach the store at {safe_url(url)}: {_first_line(exc.orig)}; "
                "start the database or point HPO_STORE_URL / --store at a running one"
            ) from None
        if isinstance(exc, DataError):
            raise StoreRefusedValue(f"the store at {safe_url(url)} refused a value: "
                                    f"{_first_line(exc.orig)}") from exc
        raise StoreError(f"store error at {safe_url(url)}: {_first_line(exc.orig)}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"store error at {safe_url(url)}: {_first_line(exc)}") from exc


def _is_connect_error(exc: DBAPIError) -> bool:
    text = str(exc.orig).lower()
    return any(
        marker in text
        for marker in ("connection refused", "could not connect", "unable to open database",
                       "connection failed", "name or service not known", "does not exist",
                       "timeout expired", "server closed the connection")
    )


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def ensure_schema(engine: Engine, url: str, *, create: bool = True) -> None:
    """Create the tables on first use, bring an older database up to this version in
    place (new tables, new columns and their data), and refuse a database of a version
    this code does not know. ``create`` False: a database without hpo's tables is an
    error (StoreUnavailable), not made into a store."""
    with translated(url):
        version = _read_version(engine)
        if version is None and not create:
            raise StoreUnavailable(
                f"the store at {safe_url(url)} holds no hpo data yet: check HPO_STORE_URL "
                "/ --store (hpo creates its tables only when something runs: "
                "hpo-controller start, hpo task create)")
        if version is None or version < schema.SCHEMA_VERSION:
            version = _create_or_upgrade(engine)
    if version != schema.SCHEMA_VERSION:
        raise SchemaVersionError(
            f"the store at {safe_url(url)} has schema version {version}, this hpo knows "
            f"{schema.SCHEMA_VERSION}: install the hpo version that wrote it, or use a new "
            "store"
        )


def _create_or_upgrade(engine: Engine) -> int:
    with engine.connect().execution_options(hpo_write=True) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_SCHEMA_LOCK})")
        row = conn.execute(
            select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
        ).first() if engine.dialect.has_table(conn, schema.meta.name) else None
        version = None if row is None else int(row[0])
        if version is not None and version > schema.SCHEMA_VERSION:
            return version
        # New tables: create_all adds the missing ones; changes to existing tables next.
        schema.metadata.create_all(conn, checkfirst=True)
        _upgrade_tables(conn, version)
        if version is None:
            conn.execute(schema.meta.insert().values(
                key="schema_version", value=str(schema.SCHEMA_VERSION)))
        elif version < schema.SCHEMA_VERSION:
            conn.execute(schema.meta.update().where(schema.meta.c.key == "schema_version")
                         .values(value=str(schema.SCHEMA_VERSION)))
        return schema.SCHEMA_VERSION


def _upgrade_tables(conn: Connection, version: int | None) -> None:
    """The changes of each version to tables that already exist, oldest first, in the
    schema lock's transaction (PostgreSQL and SQLite both roll DDL back with it). Each
    step checks the database itself, so a table create_all has just made is left alone."""
    if version is None or version < 3:
        _add_cloned_from(conn)
    if version is None or version < 4:
        _add_batch_seq(conn)
    # Version 5 only adds tables (hpo_reports, hpo_artifacts): create_all made them.
    if version is None or version < 6:
        _add_worker_stopped_at(conn)


# What clone_task wrote in the comment up to schema version 2 (ids are uuid4 hex).
_CLONED_FROM_COMMENT = re.compile(r"cloned from ([0-9a-f]{32})")


def _add_cloned_from(conn: Connection) -> None:
    """Version 3: hpo_tasks.cloned_from, filled for the clones of older versions from
    the comment their clone_task wrote (the comment itself is left as it was)."""
    tasks = schema.tasks
    if "cloned_from" in {c["name"] for c in inspect(conn).get_columns(tasks.name)}:
        return
    column_type = tasks.c.cloned_from.type.compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {tasks.name} ADD COLUMN cloned_from {column_type}")
    clones = [
        {"task_id": task_id, "source": match.group(1)}
        for task_id, comment in conn.execute(
            select(tasks.c.id, tasks.c.comment).where(tasks.c.comment.like("cloned from %")))
        if (match := _CLONED_FROM_COMMENT.fullmatch(comment))
    ]
    if clones:
        conn.execute(update(tasks).where(tasks.c.id == bindparam("task_id"))
                     .values(cloned_from=bindparam("source")), clones)


def _add_batch_seq(conn: Connection) -> None:
    """Version 4: hpo_tasks.batch_seq, 0 for every existing task (no batch of a running
    attempt carries a sequence number before this version)."""
    tasks = schema.tasks
    if "batch_seq" in {c["name"] for c in inspect(conn).get_columns(tasks.name)}:
        return
    conn.exec_driver_sql(
        f"ALTER TABLE {tasks.name} ADD COLUMN batch_seq INTEGER NOT NULL DEFAULT 0")


def _add_worker_stopped_at(conn: Connection) -> None:
    """Version 6: hpo_workers.stopped_at, NULL (live) for every row: older versions
    deleted an agent's row when it stopped, so every row there is one that runs or died."""
    workers = schema.workers
    if "stopped_at" in {c["name"] for c in inspect(conn).get_columns(workers.name)}:
        return
    column_type = workers.c.stopped_at.type.compile(dialect=conn.dialect)
    conn.exec_driver_sql(f"ALTER TABLE {workers.name} ADD COLUMN stopped_at {column_type}")


def _read_version(engine: Engine) -> int | None:
    with engine.connect() as conn:
        if not engine.dialect.has_table(conn, schema.meta.name):
            return None
        row = conn.execute(
            select(schema.meta.c.value).where(schema.meta.c.key == "schema_version")
        ).first()
        return None if row is None else int(row[0])
