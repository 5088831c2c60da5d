"""A client cut off (or frozen) inside a transaction on PostgreSQL holds its task's row
lock until its session ends. A reaper never waits on that lock (it runs in an agent's
heartbeat thread), and ends hpo's sessions stuck inside a transaction past
``defaults.PG_STUCK_SESSION_S``, so the lost task is re-queued all the same."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, select, text

from hpo import defaults
from hpo.lifecycle import Status
from hpo.queue.app import make_app
from hpo.queue.reaper import reap
from hpo.store import Store, schema
from tests.agents import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60),
              pytest.mark.parametrize("store_url", ["postgres"], indirect=True)]

T = schema.tasks
ALIVE = text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")


@contextlib.contextmanager
def row_held(store: Store, task_id: str) -> Iterator[int]:
    """A session of hpo's (the store's own engine) inside a transaction that holds
    ``task_id``'s row lock, as a write cut off before its commit does; its server pid."""
    conn = store.engine.connect()
    try:
        conn.begin()
        conn.execute(select(T.c.id).where(T.c.id == task_id).with_for_update())
        yield conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    finally:
        with contextlib.suppress(Exception):  # ended by the server: closing it fails
            conn.close()


def alive(store: Store, pid: int) -> bool:
    with store.engine.connect() as conn:
        return conn.execute(ALIVE, {"pid": pid}).scalar_one() == 1


def claimed_task(store: Store) -> str:
    task_id = store.create_task("stuck", "t").id
    store.enqueue(task_id, "default")
    assert store.claim(task_id, "gone-worker") == 1  # a worker never registered: lost
    return task_id


def test_a_reapers_requeue_skips_a_locked_row_instead_of_waiting(store: Store) -> None:
    task_id = claimed_task(store)
    with row_held(store, task_id):
        # While another session holds the row: refused at once, the task left running
        assert store.requeue(task_id, 1, "lost", skip_locked=True) is None
        assert store.get_task(task_id).status is Status.running
    # Once free: re-queued
    assert store.requeue(task_id, 1, "lost", skip_locked=True) is Status.queued


def test_only_hpos_sessions_stuck_inside_a_transaction_past_the_bound_are_ended(
        store: Store, store_url: str) -> None:
    task_id = claimed_task(store)
    other = create_engine(store_url, connect_args={"application_name": "someone-else"})
    try:
        with row_held(store, task_id) as stuck, other.connect() as theirs, \
                store.engine.connect() as idle:
            theirs.begin()
            their_pid = theirs.execute(text("SELECT pg_backend_pid()")).scalar_one()
            idle_pid = idle.execute(text("SELECT pg_backend_pid()")).scalar_one()
            idle.commit()  # hpo's, but not inside a transaction
            # Not stuck long enough: none ended
            assert store.end_stuck_sessions(3600) == []
            # Past the bound: the stuck one, and only it
            ended: list[int] = []
            wait_for("the stuck session to be ended",
                     lambda: ended.extend(store.end_stuck_sessions(0.2)) or ended,
                     timeout=20, period=0.1)
            assert ended == [stuck]
            wait_for("its backend to exit", lambda: not alive(store, stuck), timeout=20,
                     period=0.05)
            assert alive(store, their_pid) and alive(store, idle_pid)
    finally:
        other.dispose()


def test_a_lost_task_locked_by_a_stuck_session_is_requeued_once_the_session_is_ended(
        store: Store, hpo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = claimed_task(store)
    app = make_app()
    with row_held(store, task_id) as stuck:
        # A reaper round while the lock is young returns without waiting on it
        monkeypatch.setattr(defaults, "PG_STUCK_SESSION_S", 3600.0)
        assert reap(store, app, lost_after_s=0.0) == []
        assert store.get_task(task_id).status is Status.running
        # Once the session has been stuck past the bound, a round ends it, and a round
        # re-queues the task
        monkeypatch.setattr(defaults, "PG_STUCK_SESSION_S", 0.2)
        wait_for("the lost task to be re-queued",
                 lambda: bool(reap(store, app, lost_after_s=0.0)), timeout=30, period=0.1)
        assert not alive(store, stuck)
    task = store.get_task(task_id)
    assert (task.status, task.attempt, task.worker) == (Status.queued, 1, None)


def test_a_lost_task_out_of_retries_locked_by_a_stuck_session_fails_without_a_wait(
        store: Store, hpo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    task_id = claimed_task(store)
    app = make_app()
    with row_held(store, task_id):
        # No retries left: the reaper fails the task, but not while another session
        # holds its row (it returns at once), and then once the session is ended
        monkeypatch.setattr(defaults, "PG_STUCK_SESSION_S", 3600.0)
        assert reap(store, app, lost_after_s=0.0, retries=0) == []
        assert store.get_task(task_id).status is Status.running
        monkeypatch.setattr(defaults, "PG_STUCK_SESSION_S", 0.2)
        wait_for("the lost task to be failed",
                 lambda: bool(reap(store, app, lost_after_s=0.0, retries=0)), timeout=30,
                 period=0.1)
    assert store.get_task(task_id).status is Status.failed


def test_a_reaper_round_with_no_lost_task_looks_for_no_stuck_session(
        store: Store, hpo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a store with a running task whose agent is alive (nothing lost)
    task_id = store.create_task("stuck", "t").id
    store.enqueue(task_id, "default")
    store.claim(task_id, "live-worker")
    store.heartbeat("live-worker")
    swept: list[float] = []
    monkeypatch.setattr(store, "end_stuck_sessions", lambda s: swept.append(s) or [])
    # When a reaper round runs, Then it sweeps nothing (no query on the server's sessions)
    assert reap(store, make_app(), lost_after_s=60.0) == []
    assert swept == []
    # and a round that finds a lost task does
    assert reap(store, make_app(), lost_after_s=0.0, retries=1)
    assert swept == [defaults.PG_STUCK_SESSION_S]
