"""Wake-ups (hpo.wakeups): a doorbell between processes, PostgreSQL NOTIFY on commit, a
listener that outlives its connection, and the embedded broker that hands a message to a
waiting consumer without its poll in between. No timed assertions: where "at once" is
the point, the fallback poll is set to an hour, so only the wake-up can explain it."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from kombu import Connection
from sqlalchemy import text

from hpo.queue import embedded
from hpo.queue.app import make_app
from hpo.store import Store, open_store
from hpo.wakeups import Doorbell, DoorbellListener, StoreChange, bell_folder, listen_to_store
from tests.agents import wait_for

pytestmark = pytest.mark.timeout(120)

# How long a test waits for what must come at once; a hang fails here, not at the
# pytest timeout (a deadline, not a measure of speed).
DEADLINE_S = 30.0


def run_python(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=60)


# ----- the doorbell ------------------------------------------------------------------


def test_a_doorbell_rung_in_another_process_wakes_a_listener(tmp_path: Path) -> None:
    folder = bell_folder(tmp_path / "store.db", ".events")
    heard: queue.Queue[str | None] = queue.Queue()
    with DoorbellListener(folder, heard.put):
        run_python("import sys; from pathlib import Path; from hpo.wakeups import Doorbell;"
                   "Doorbell(Path(sys.argv[1])).ring('task-1')", str(folder))
        assert heard.get(timeout=DEADLINE_S) == "task-1"
    assert list(folder.iterdir()) == []  # its socket is removed on close


def test_a_dead_listener_s_socket_is_removed_by_the_next_ring(tmp_path: Path) -> None:
    # Given a listener whose process died without closing it (its socket file stays)
    folder = bell_folder(tmp_path / "store.db", ".events")
    run_python("import os, sys; from pathlib import Path; from hpo.wakeups import "
               "DoorbellListener; DoorbellListener(Path(sys.argv[1]), print); os._exit(0)",
               str(folder))
    [dead] = list(folder.iterdir())
    heard: queue.Queue[str | None] = queue.Queue()
    with DoorbellListener(folder, heard.put):
        # When the doorbell rings
        Doorbell(folder).ring("task-2")
        # Then the live listener hears it, and the dead one's socket is gone
        assert heard.get(timeout=DEADLINE_S) == "task-2"
        assert not dead.exists()


def test_a_ring_neither_blocks_nor_raises_when_a_listener_does_not_read(
        tmp_path: Path) -> None:
    folder = tmp_path / "bell"
    release = threading.Event()
    heard: list[str | None] = []

    def slow(payload: str | None) -> None:
        heard.append(payload)
        release.wait(DEADLINE_S)

    with DoorbellListener(folder, slow):
        bell = Doorbell(folder)
        for n in range(200):  # far more than a datagram socket's queue holds
            bell.ring(f"task-{n}")
        release.set()
        wait_for("the first ring to be heard", lambda: heard)
    Doorbell(tmp_path / "no-such-folder").ring("nobody")  # no folder: nothing, no error


def test_a_folder_too_deep_for_a_socket_path_moves_under_the_temp_dir(tmp_path: Path) -> None:
    resource = tmp_path / ("deep" * 30) / "store.db"
    folder = bell_folder(resource, ".events")
    assert folder.parent == Path(tempfile.gettempdir())
    assert bell_folder(resource, ".events") == folder  # every process finds the same one
    heard: queue.Queue[str | None] = queue.Queue()
    with DoorbellListener(folder, heard.put):
        Doorbell(bell_folder(resource, ".events")).ring("task-3")
        assert heard.get(timeout=DEADLINE_S) == "task-3"


# ----- a store's announcements ---------------------------------------------------------


def running_task(store: Store) -> tuple[str, int]:
    task = store.create_task("wakeups", "job")
    store.enqueue(task.id, "q")
    attempt = store.claim(task.id, "agent")
    assert attempt is not None
    return task.id, attempt


def test_a_store_announces_reports_and_ends_on_commit_never_on_rollback(
        store: Store) -> None:
    heard: queue.Queue[StoreChange | None] = queue.Queue()
    with listen_to_store(store.engine, heard.put):
        rolled_back, _ = running_task(store)
        committed, attempt = running_task(store)
        # Given a write that announces and then fails (rolled back)
        with pytest.raises(RuntimeError), store._write() as conn:
            store._changed(conn, rolled_back)
            raise RuntimeError("the write fails after announcing")
        # When a report and an end are committed
        store.append_scalars(committed, [("loss", "total", 0, 1.0, 0.0)], attempt=attempt)
        store.finish(committed, attempt, "completed")
        # Then the commits are heard, in order, and the rollback never is
        assert [heard.get(timeout=DEADLINE_S) for _ in range(2)] == [
            StoreChange(committed, reported=True), StoreChange(committed)]
        store.set_status(rolled_back, "failed")  # a final status: announced
        assert heard.get(timeout=DEADLINE_S) == StoreChange(rolled_back)


def test_a_runs_last_batch_and_its_end_are_announced_once(store: Store) -> None:
    heard: queue.Queue[StoreChange | None] = queue.Queue()
    with listen_to_store(store.engine, heard.put):
        task_id, attempt = running_task(store)
        other, other_attempt = running_task(store)
        # When a run's last batch (new scalars) and its end are written together, then
        # another task ends
        assert store.finish_with_batches(task_id, attempt, "completed", batches=[
            {"scalars": [("loss", "total", 0, 1.0, 0.0)], "seq": 1}])
        store.finish(other, other_attempt, "completed")
        # Then the end is heard, with no announcement of its reports before it (heard
        # in commit order), and its reports are there for whoever it wakes
        assert [heard.get(timeout=DEADLINE_S) for _ in range(2)] == [
            StoreChange(task_id), StoreChange(other)]
        assert [s.value for s in store.task_scalars(task_id)] == [1.0]


@pytest.mark.postgres
def test_a_postgres_listener_survives_its_connection_being_cut_and_wakes_its_waiter(
        pg_database_url: str) -> None:
    store = open_store(pg_database_url)
    heard: queue.Queue[StoreChange | None] = queue.Queue()
    try:
        with listen_to_store(store.engine, heard.put) as listener:
            # Given the server ends the listening connection
            pid = listener.backend_pid  # type: ignore[attr-defined]
            with store.engine.begin() as conn:
                conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            # Then the listener connects again and wakes its waiter (a gap: None)
            assert heard.get(timeout=DEADLINE_S) is None
            assert listener.backend_pid != pid  # type: ignore[attr-defined]
            # And it hears what is committed after that
            task_id, attempt = running_task(store)
            store.finish(task_id, attempt, "completed")
            assert heard.get(timeout=DEADLINE_S) == StoreChange(task_id)
    finally:
        store.close()


# ----- the controller's pause ----------------------------------------------------------


def launched_controller(tmp_path: Path) -> Any:
    """A real controller whose first cycle launched two jobs (on the in-memory broker)."""
    from hpo.automation import UniformParameterRange
    from hpo.controller.controller import Controller
    from hpo.lifecycle import Status
    from hpo.optimization.config import OptimizerConfig
    from hpo.strategies.base import Objective

    store = open_store(f"sqlite:///{tmp_path / 'hpo.db'}")
    base = store.create_task("wakeups", "base", parameters={"General/x": 0.0})
    config = OptimizerConfig(
        base_task_id=base.id, hyper_parameters=[UniformParameterRange("x", 0.0, 1.0)],
        objectives=[Objective("loss", "total", "min")], strategy="random",
        max_number_of_concurrent_tasks=2, total_max_jobs=4, execution_queue="wakeups")
    optimizer = store.create_task("wakeups", "optimizer")
    store.set_status(optimizer.id, Status.running)
    store.create_optimization(optimizer.id, config.to_dict())
    ctrl = Controller(store, make_app("memory://"), config, optimizer.id)
    ctrl.step()
    assert len(ctrl.active) == 2
    return ctrl


def test_the_controller_takes_reports_in_batches_but_wakes_at_once_for_an_end(
        tmp_path: Path) -> None:
    ctrl = launched_controller(tmp_path)
    ctrl.poll_s = 3600.0  # a report alone would end the pause only in an hour
    job = next(iter(ctrl.active))
    events: list[str] = []
    pausing = threading.Thread(target=lambda: (
        ctrl._pause(ctrl.clock.monotonic(), 3600.0), events.append("woke")))
    pausing.start()
    # Given reports of its job and an end of a task not its own
    ctrl._on_change(StoreChange(job, reported=True))
    ctrl._on_change(StoreChange("f" * 32))
    events.append("end sent")
    # When its job ends, the pause ends
    ctrl._on_change(StoreChange(job))
    pausing.join(DEADLINE_S)
    assert events == ["end sent", "woke"]
    ctrl.store.close()


# ----- the embedded broker -------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An embedded broker whose fallback poll is an hour: only a ring or an ack can
    wake a waiting consumer within a test."""
    monkeypatch.setattr(embedded, "EMBEDDED_FALLBACK_POLL_S", 3600.0)
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    make_app(url)  # installs the transport and creates the tables
    return url


def consume_one(connection: Connection, name: str, received: queue.Queue[Any]) -> Any:
    """A consumer of ``name`` with a prefetch of one, waiting on a thread: each message
    it takes goes to ``received`` (unacknowledged)."""
    simple = connection.SimpleQueue(name)
    simple.consumer.qos(prefetch_count=1)

    def take() -> None:
        received.put(simple.get(block=True, timeout=600))

    return simple, take


def test_a_waiting_consumer_of_the_embedded_broker_takes_a_message_published_elsewhere(
        broker: str) -> None:
    received: queue.Queue[Any] = queue.Queue()
    with Connection(broker) as connection:
        simple, take = consume_one(connection, "wake-q", received)
        waiting = threading.Thread(target=take, daemon=True)
        waiting.start()
        folder = bell_folder(Path(broker.split(":///", 1)[1]), embedded.BELL_SUFFIX)
        wait_for("the consumer to wait on its doorbell",
                 lambda: folder.is_dir() and any(folder.iterdir()))
        # When another process publishes
        run_python("import sys; from kombu import Connection; from hpo.queue import "
                   "app; app.install_embedded_transport(); c = Connection(sys.argv[1]); "
                   "c.SimpleQueue('wake-q').put({'n': 1}); c.close()", broker)
        # Then the waiting consumer has it (its poll would come only in an hour)
        message = received.get(timeout=DEADLINE_S)
        assert message.payload == {"n": 1}
        message.ack()
        simple.close()


class CountedWaits(threading.Event):
    """A transport's wake-up event that counts the waits begun on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def test_an_ack_that_frees_the_prefetch_lets_a_waiting_consumer_take_the_next(
        broker: str) -> None:
    received: queue.Queue[Any] = queue.Queue()
    with Connection(broker) as connection:
        simple, take = consume_one(connection, "ack-q", received)
        with Connection(broker) as publisher:
            publisher.SimpleQueue("ack-q").put({"n": 1})
            take()
            first = received.get_nowait()
            # Given the consumer holds one message (its prefetch) and waits for more
            woken = connection.transport._woken = CountedWaits()
            waiting = threading.Thread(target=take, daemon=True)
            waiting.start()
            wait_for("the consumer to wait", lambda: woken.waits >= 1)
            publisher.SimpleQueue("ack-q").put({"n": 2})
            # rung, it looks, and waits again: it may not take a second one before the
            # first is acked
            wait_for("the consumer to wait again", lambda: woken.waits >= 2)
            assert received.empty()
            # When the first is acked, the second is taken (the ack wakes it)
            first.ack()
            second = received.get(timeout=DEADLINE_S)
            assert second.payload == {"n": 2}
            second.ack()
        simple.close()


def test_no_doorbell_folder_means_polling_as_before(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker file whose folder cannot hold the doorbell: consumers poll every
    EMBEDDED_POLL_S and publishes go through."""
    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    make_app(url)
    (tmp_path / f"broker.db{embedded.BELL_SUFFIX}").write_text("a file, not a folder")
    with Connection(url) as connection:
        simple = connection.SimpleQueue("poll-q")
        simple.put({"n": 3})
        message = simple.get(block=True, timeout=DEADLINE_S)
        assert message.payload == {"n": 3}
        message.ack()
        assert os.path.isfile(tmp_path / f"broker.db{embedded.BELL_SUFFIX}")
        simple.close()
