"""The embedded broker keeps kombu's SQLAlchemy transport's tables, in Core
(``hpo.queue.embedded_tables``): a broker file either transport made serves the other,
so files from before, or shared with a plain kombu or Celery program, keep working."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import kombu
import pytest
from kombu.transport import sqlalchemy as kombu_sqla

from hpo.queue.app import install_embedded_transport

pytestmark = pytest.mark.timeout(60)


def schema(path: Path) -> list[tuple[str, str, str]]:
    """Every table and index of a SQLite file, with the SQL that made it (spaces
    normalised: the two make the same statements, laid out alike or not)."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, name, sql FROM sqlite_master "
                          "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name").fetchall()
    return [(kind, name, " ".join((sql or "").split())) for kind, name, sql in rows]


def kombus_own(path: Path) -> kombu.Connection:
    """A connection through kombu's stock SQLAlchemy transport (its ORM models)."""
    return kombu.Connection(f"sqlite:///{path}", transport=kombu_sqla.Transport)


def ours(path: Path) -> kombu.Connection:
    install_embedded_transport()
    return kombu.Connection(f"sqla+sqlite:///{path}")


def put(connection: kombu.Connection, queue: str, body: str) -> None:
    with connection:
        connection.SimpleQueue(queue).put(body)


def take(connection: kombu.Connection, queue: str) -> str:
    with connection:
        message = connection.SimpleQueue(queue).get(timeout=5)
        message.ack()
        return str(message.payload)


def test_the_tables_are_kombus_column_for_column_and_index_for_index(tmp_path: Path) -> None:
    put(kombus_own(tmp_path / "kombu.db"), "q", "x")
    put(ours(tmp_path / "hpo.db"), "q", "x")
    assert schema(tmp_path / "hpo.db") == schema(tmp_path / "kombu.db")
    assert {name for kind, name, _ in schema(tmp_path / "hpo.db") if kind == "index"} >= {
        "ix_kombu_message_timestamp_id", "ix_kombu_message_visible"}


def test_a_file_made_by_kombus_transport_serves_ours_and_the_other_way(
        tmp_path: Path) -> None:
    put(kombus_own(tmp_path / "a.db"), "q", "from kombu")
    put(ours(tmp_path / "a.db"), "q", "from hpo")
    assert take(ours(tmp_path / "a.db"), "q") == "from kombu"
    assert take(ours(tmp_path / "a.db"), "q") == "from hpo"

    put(ours(tmp_path / "b.db"), "q", "from hpo")
    assert take(kombus_own(tmp_path / "b.db"), "q") == "from hpo"


def test_purge_and_size_count_the_waiting_messages_of_one_queue(tmp_path: Path) -> None:
    with ours(tmp_path / "c.db") as connection:
        for n in range(3):
            connection.SimpleQueue("q").put(f"m{n}")
        connection.SimpleQueue("other").put("kept")
        channel = connection.default_channel
        assert channel.queue_declare("q", passive=True).message_count == 3
        assert channel.queue_purge("q") == 3
        assert channel.queue_declare("q", passive=True).message_count == 0
        assert channel.queue_declare("other", passive=True).message_count == 1


def test_a_closed_channel_gives_its_connection_back(tmp_path: Path) -> None:
    with ours(tmp_path / "d.db") as connection:
        channel = connection.channel()
        channel.queue_declare("q")
        engine = channel.engine()
        before = engine.pool.checkedout()
        channel.close()
        assert engine.pool.checkedout() == before - 1


@pytest.mark.postgres
def test_a_take_whose_connection_the_server_cut_fails_once_and_the_channel_serves_on(
        pg_database_url: str) -> None:
    """The embedded broker on PostgreSQL (``sqla+postgresql``): a server that cuts the
    channel's connection (a restart) fails that take only; the message stays, and the
    same channel takes it on a new connection (a failed take is rolled back, not
    committed: a commit would leave the connection refusing every statement)."""
    from sqlalchemy.exc import OperationalError

    from tests.conftest import kill_connections_of

    install_embedded_transport()
    with kombu.Connection(f"sqla+{pg_database_url}") as connection:
        channel = connection.default_channel
        channel._put("cut-q", {"n": 1})
        assert kill_connections_of(pg_database_url) >= 1
        with pytest.raises(OperationalError):
            channel._get("cut-q")
        assert channel._get("cut-q") == {"n": 1}
