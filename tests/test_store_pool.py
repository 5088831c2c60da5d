"""PostgreSQL connections: pinged only after they sat idle, and a dead one is replaced
rather than handed out."""

from __future__ import annotations

import pytest

from hpo.errors import StoreError, StoreUnavailable
from hpo.lifecycle import TaskType
from hpo.store import NewClone, open_store
from tests.conftest import kill_connections_of

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]


def test_an_idle_connection_cut_by_the_server_is_replaced_before_use(
        pg_database_url, monkeypatch):
    # Given a store whose pooled connection was used, then cut by the server while idle
    monkeypatch.setattr("hpo.store.engine.PG_PING_IDLE_S", 0.0)  # every one counts idle
    store = open_store(pg_database_url)
    task = store.create_task("p", "t")
    assert kill_connections_of(pg_database_url) >= 1
    # When the store is used again: Then the ping found it dead and another served
    assert store.get_task(task.id).id == task.id
    store.close()


def test_a_connection_used_a_moment_ago_is_not_pinged_and_a_cut_fails_once(
        pg_database_url, monkeypatch):
    # Given a store whose connection was used just now (no ping: a round trip saved on
    # every transaction), cut by the server
    monkeypatch.setattr("hpo.store.engine.PG_PING_IDLE_S", 3600.0)
    store = open_store(pg_database_url)
    task = store.create_task("p", "t")
    assert kill_connections_of(pg_database_url) >= 1
    # Then its next use fails as a store error (which every caller retries), and the
    # one after that works on a fresh connection
    with pytest.raises(StoreError):
        store.get_task(task.id)
    assert store.get_task(task.id).id == task.id
    store.close()


def test_a_cut_under_the_reads_on_the_drivers_cursor_fails_once_as_the_store_unreachable(
        pg_database_url, monkeypatch):
    """The controller's every-cycle reads run on psycopg's own cursor (hpo.store.driver):
    a connection cut under them is invalidated as SQLAlchemy would, so the error is the
    same one line (StoreUnavailable) and the next read gets a fresh connection."""
    monkeypatch.setattr("hpo.store.engine.PG_PING_IDLE_S", 3600.0)
    store = open_store(pg_database_url)
    task = store.create_task("p", "t")
    cursors = {task.id: 0}
    assert store.read_jobs([task.id], cursors, titles=["loss"]) == ([store.get_task(task.id)],
                                                                     [])
    assert kill_connections_of(pg_database_url) >= 1
    with pytest.raises(StoreUnavailable, match="cannot reach the store"):
        store.read_jobs([task.id], cursors, titles=["loss"])
    records, scalars = store.read_jobs([task.id], cursors, titles=["loss"])
    assert [r.id for r in records] == [task.id] and scalars == []
    store.close()


def test_a_cut_seen_on_the_drivers_cursor_replaces_every_pooled_connection(
        pg_database_url, monkeypatch):
    """As SQLAlchemy does on a disconnect: after a server restart every pooled connection
    is dead, so the first one found dead takes the others with it, and the next use of
    the store (not pinged: used a moment ago) gets a fresh one instead of failing too."""
    monkeypatch.setattr("hpo.store.engine.PG_PING_IDLE_S", 3600.0)
    store = open_store(pg_database_url)
    task = store.create_task("p", "t")
    with store._read() as first, store._read() as second:  # two pooled connections
        assert first.connection.dbapi_connection is not second.connection.dbapi_connection
    assert kill_connections_of(pg_database_url) >= 2
    with pytest.raises(StoreUnavailable):
        store.read_jobs([task.id], {task.id: 0})
    assert store.get_task(task.id).id == task.id
    assert store.get_task(task.id).id == task.id
    store.close()


def test_a_launch_cut_by_the_server_fails_once_and_its_retry_stores_each_clone_once(
        pg_database_url, monkeypatch):
    """A later launch is one statement on the driver's cursor (hpo.store.launches): cut
    by the server, it stores nothing or all, and fails as the store unreachable; the
    controller's retry (only_missing, the long way) then stores the state and each
    clone once."""
    monkeypatch.setattr("hpo.store.engine.PG_PING_IDLE_S", 3600.0)
    store = open_store(pg_database_url)
    source = store.create_task("p", "base")
    optimizer = store.create_task("p", "optimizer", type=TaskType.optimizer).id
    store.create_optimization(optimizer, {"c": 1})
    store.launch_clones(optimizer, {"step": 1}, source.id, [NewClone("a")], queue="q",
                        parent=optimizer)
    clone = NewClone("b")
    assert kill_connections_of(pg_database_url) >= 1
    with pytest.raises(StoreUnavailable):
        store.launch_clones(optimizer, {"step": 2}, source.id, [clone], queue="q",
                            parent=optimizer)
    assert store.launch_clones(optimizer, {"step": 2}, source.id, [clone], queue="q",
                               parent=optimizer, only_missing=True) == [clone.id]
    assert sorted(t.name for t in store.find_tasks(parent=optimizer)) == ["a", "b"]
    assert store.load_optimization(optimizer)[1] == {"step": 2}
    store.close()
