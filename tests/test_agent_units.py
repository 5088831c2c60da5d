"""The agent's decisions, one unit at a time, with no broker and no sleeps: the stop
poll's verdict, a stop for a loss the store does not confirm, a failed claim whose log
line cannot be chosen, the recorder's one-transaction batch, and what the consumer does
with a message Celery fails on."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kombu import Message

from hpo.agent.consumer import AgentConsumer
from hpo.agent.outbox import PendingOutcome
from hpo.agent.recorder import Recorder
from hpo.agent.runner import RunnerConfig, StopReason, TaskRunner
from hpo.agent.slots import Slot
from hpo.agent.worker import stop_decisions, stop_look_needed
from hpo.errors import LostOwnership, StoreError
from hpo.lifecycle import Status
from hpo.queue.app import RUN_TASK
from hpo.queue.messages import message_problem
from hpo.records import TaskRecord
from hpo.store import ScalarReport, Store, open_store
from hpo.wakeups import StoreChange
from tests.agents import wait_for

# ----- the stop poll -------------------------------------------------------------------

BASE = TaskRecord(
    id="t", project="p", name="n", type="training", status=Status.running, parent=None,
    tags=[], queue="q", script=None, parameters={}, time_limit=None, worker="me",
    attempt=1, stop_requested=False, status_message=None, exit_code=None,
    created_at=0.0, updated_at=0.0, started_at=0.0, ended_at=None)


def seen(**changes: Any) -> TaskRecord:
    return dataclasses.replace(BASE, **changes)


def test_a_read_older_than_the_claim_is_no_loss() -> None:
    # The claim committed between the attempts' snapshot and the read: the read still
    # shows the task queued (attempt 0), or an earlier attempt, re-queued
    assert stop_decisions({"t": 1}, [seen(status=Status.queued, attempt=0)]) == {}
    assert stop_decisions({"t": 2}, [seen(status=Status.queued, attempt=1)]) == {}
    # A runner not yet claimed at the snapshot is not judged at all
    assert stop_decisions({}, [seen(status=Status.queued, attempt=0)]) == {}
    assert stop_decisions({}, [seen(attempt=5, stop_requested=True)]) == {}


def test_a_newer_attempt_or_the_same_attempt_not_running_is_a_loss() -> None:
    assert stop_decisions({"t": 1}, [seen(attempt=2)]) == {"t": StopReason.lost}
    assert stop_decisions({"t": 1}, [seen(attempt=2, status=Status.queued)]) == {
        "t": StopReason.lost}
    for status in (Status.queued, Status.completed, Status.failed, Status.stopped):
        assert stop_decisions({"t": 1}, [seen(status=status)]) == {"t": StopReason.lost}


def test_the_owner_running_is_left_alone_or_stopped_on_request() -> None:
    assert stop_decisions({"t": 1}, [seen()]) == {}
    assert stop_decisions({"t": 1}, [seen(stop_requested=True)]) == {
        "t": StopReason.requested}
    # a request made on a newer attempt is that attempt's: this one is lost
    assert stop_decisions({"t": 1}, [seen(attempt=2, stop_requested=True)]) == {
        "t": StopReason.lost}
    # several at once, each by its own snapshot
    assert stop_decisions({"a": 1, "b": 3}, [seen(id="a"), seen(id="b", attempt=4)]) == {
        "b": StopReason.lost}


def test_a_change_calls_for_a_stop_look_only_while_a_script_here_runs(store: Store) -> None:
    running, ended = runner_for(store), runner_for(store)
    ended.script_ended = True  # its finish is heard before its runner leaves
    runners = {"run": running, "end": ended}
    assert stop_look_needed(None, runners)  # a gap in the wake-ups: anything may have
    assert stop_look_needed(StoreChange("run"), runners)
    assert not stop_look_needed(StoreChange("run", reported=True), runners)
    assert not stop_look_needed(StoreChange("end"), runners)
    assert not stop_look_needed(StoreChange("elsewhere"), runners)


# ----- the runner ------------------------------------------------------------------------

@pytest.fixture
def store(hpo_env: dict[str, str]) -> Store:
    return open_store()


def runner_for(store: Any, kept: list[PendingOutcome] | None = None) -> TaskRunner:
    kept = [] if kept is None else kept
    return TaskRunner(store, RunnerConfig(worker="me"), Slot("cpu0", ()),
                      lambda task, attempt: None, kept.append)


def claimed(store: Store) -> str:
    task_id = store.create_task("proj", "job").id
    store.enqueue(task_id, "q")
    assert store.claim(task_id, "me") == 1
    return task_id


def test_a_stop_for_a_loss_the_store_does_not_confirm_fails_the_task(store: Store) -> None:
    # Given a runner stopped as lost while the store still shows its attempt running
    task_id = claimed(store)
    runner_for(store)._end_if_still_owned(task_id, 1)
    # Then the task does not stay running forever: its attempt is recorded as failed
    task = store.get_task(task_id)
    assert (task.status, task.attempt) == (Status.failed, 1)
    assert "lost" in (task.status_message or "")


def test_a_stop_for_a_real_loss_leaves_the_new_owner_alone(store: Store) -> None:
    task_id = claimed(store)
    assert store.requeue(task_id, 1)
    assert store.claim(task_id, "other") == 2
    runner_for(store)._end_if_still_owned(task_id, 1)
    task = store.get_task(task_id)
    assert (task.status, task.attempt, task.worker) == (Status.running, 2, "other")


class UnreadableStore:
    """Refuses the claim (a stale message), then cannot read the task."""

    def claim_task(self, task_id: str, worker: str) -> None:
        return None

    def get_tasks(self, task_ids: list[str]) -> list[TaskRecord]:
        raise StoreError("the store is away")


def test_a_failed_claim_whose_task_cannot_be_read_drops_the_message_quietly(
        caplog: pytest.LogCaptureFixture) -> None:
    # No StoreError reaches the agent, which would return the stale message to the
    # broker, to come back again and again
    caplog.set_level(logging.INFO, "hpo.agent")
    assert runner_for(UnreadableStore()).run(uuid.uuid4().hex) is None
    assert "not claimed" in caplog.text


# ----- the recorder ------------------------------------------------------------------------

class BatchStore:
    def __init__(self, refuse: bool = False) -> None:
        self.batches: list[dict[str, Any]] = []
        self.refuse = refuse

    def append_batch(self, task_id: str, **batch: Any) -> int:
        if self.refuse:
            raise LostOwnership("attempt 1 no longer owns it")
        self.batches.append({"task_id": task_id, **batch})
        return len(batch["scalars"])


def test_the_recorder_writes_each_flush_as_one_batch() -> None:
    store = BatchStore()
    recorder = Recorder(store, "t", 1, max_log_bytes=10_000)  # type: ignore[arg-type]
    recorder.close()  # the flusher stopped: every flush below is this test's
    report = ScalarReport("loss", "train", 0, 1.0, 2.0)
    recorder.add_scalars([report])
    recorder.on_output("stdout", "hello\n")
    recorder.on_message({"kind": "params", "values": {"General/x": 1}})
    recorder.flush()
    recorder.flush()  # nothing left: no write at all
    assert store.batches == [{"task_id": "t", "attempt": 1, "seq": 1, "scalars": [report],
                              "logs": [(store.batches[0]["logs"][0][0], "stdout", "hello")],
                              "parameters": {"General/x": 1}, "reports": [],
                              "artifacts": [], "fields": {}}]
    assert recorder.scalar_count == 1


def test_the_recorder_skips_a_scalar_the_store_could_never_hold() -> None:
    # A name over 255 characters, a NUL byte or an iteration beyond 32 bits makes
    # PostgreSQL refuse the whole batch on every resend: the run's outcome would wait
    # behind it forever. Such a scalar is skipped, as a malformed message is.
    store = BatchStore()
    recorder = Recorder(store, "t", 1, max_log_bytes=10_000)  # type: ignore[arg-type]
    recorder.close()
    good = {"kind": "scalar", "title": "loss", "series": "train", "iteration": 3,
            "value": 0.5, "time": 2.0}
    for bad in ({"title": "x" * 256}, {"series": "a\x00b"}, {"iteration": 2**31}):
        recorder.on_message({**good, **bad})
    recorder.on_message(good)
    recorder.flush()
    assert [b["scalars"] for b in store.batches] == [[ScalarReport("loss", "train", 3, 0.5,
                                                                   2.0)]]


def test_a_refused_batch_loses_the_attempt_once_and_keeps_nothing() -> None:
    store = BatchStore(refuse=True)
    lost: list[str] = []
    recorder = Recorder(store, "t", 1, max_log_bytes=10_000,  # type: ignore[arg-type]
                        on_lost=lost.append)
    recorder.close()
    recorder.on_output("stdout", "hello\n")
    recorder.flush()
    recorder.on_output("stdout", "more\n")
    recorder.flush()
    assert lost == ["attempt 1 no longer owns it"]
    assert recorder.lost == lost[0]
    assert recorder.scalar_count == 0


# ----- messages --------------------------------------------------------------------------

def task_message(**headers: Any) -> Message:
    body = json.dumps([[uuid.uuid4().hex], {}, {}])
    return Message(body=body, content_type="application/json", content_encoding="utf-8",
                   headers={"task": RUN_TASK, "id": str(uuid.uuid4()), "eta": None,
                            "expires": None, "timelimit": [None, None], "retries": 0,
                            **headers},
                   channel=FakeChannel(), delivery_tag="tag")


class FakeChannel:
    def __init__(self) -> None:
        self.rejected: list[bool] = []

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        self.rejected.append(requeue)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"eta": "soon"}, "invalid ETA value 'soon'"),
    ({"eta": 5}, "invalid ETA value 5"),
    ({"expires": "never"}, "invalid expires value 'never'"),
    ({"expires": 42}, "invalid expires value 42"),
    ({"timelimit": 5}, "timelimit 5 is no [soft, hard] pair"),
    ({"timelimit": [1, 2, 3]}, "is no [soft, hard] pair"),
    ({"timelimit": ["a", None]}, "is no [soft, hard] pair"),
    ({"retries": "x"}, "retries 'x' is no integer"),
    ({"retries": True}, "retries True is no integer"),
    ({"shadow": ["x"]}, "shadow ['x'] is no string"),
])
def test_headers_celery_would_raise_on_are_a_message_problem(
        headers: dict[str, Any], expected: str) -> None:
    problem = message_problem(task_message(**headers))
    assert problem is not None and expected in problem


def test_what_celery_itself_sends_has_no_header_problem() -> None:
    assert message_problem(task_message()) is None
    assert message_problem(task_message(eta="2026-01-01T00:00:00+00:00",
                                        expires="2026-01-02T00:00:00", timelimit=[1, 2.5],
                                        retries=3)) is None


def test_a_sound_message_celery_fails_on_goes_back_to_the_broker_logged_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    from celery.worker.consumer import Consumer

    def failing_handler(self: Any, promise: Any = None) -> Any:
        def handle(message: Any) -> None:
            raise RuntimeError("Celery broke")
        return handle

    monkeypatch.setattr(Consumer, "create_task_handler", failing_handler)
    consumer = AgentConsumer.__new__(AgentConsumer)
    consumer._given_back = set()
    consumer.connection_errors = ()
    handler = consumer.create_task_handler()
    message = task_message()
    again = Message(body=message.body, content_type="application/json",
                    content_encoding="utf-8", headers=dict(message.headers),
                    channel=FakeChannel(), delivery_tag="tag2")
    for each in (message, again):  # the same message, delivered again
        handler(each)
        assert each.channel.rejected == [True]  # re-queued, never dropped
    assert caplog.text.count("returned to the broker") == 1
    assert "message dropped" not in caplog.text
    # a message with a problem is still dropped, not re-queued
    hostile = task_message(eta="soon")
    handler(hostile)
    assert hostile.channel.rejected == [False]


def test_celery_s_reconnect_lines_name_hpo_s_broker_setting() -> None:
    from hpo.agent.cli import _BrokerHint

    record = logging.LogRecord(
        "celery.worker.consumer.consumer", logging.ERROR, __file__, 1,
        "consumer: Cannot connect to %s: %s.\nTrying again in %.2f seconds... (%s/%s)\n",
        ("redis://127.0.0.1:1/0", "Connection refused", 2.0, 1, None), None)
    assert _BrokerHint().filter(record)
    assert record.getMessage() == (
        "consumer: Cannot connect to redis://127.0.0.1:1/0: Connection refused. Trying "
        "again in 2.00 seconds... (1/None) [hpo-agent: the broker is $HPO_BROKER_URL / "
        "--broker; the agent keeps trying]")


def test_two_copies_of_one_message_arriving_together_run_the_task_once(
        hpo_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an agent with two free slots, and a runner that holds its task a while
    from hpo.agent import worker

    agent = worker.Agent(worker.AgentConfig(
        name="me", queues=["q"], slots=[Slot("cpu0", ()), Slot("cpu1", ())],
        runner=RunnerConfig(worker="me"), broker_url="memory://",
        outbox_dir=tmp_path / "outbox"))
    both_in = threading.Barrier(2, timeout=10)
    taken = agent.pool.taken

    def taken_together() -> Any:
        both_in.wait()  # the two copies pass this point together
        return taken()

    runs: list[str] = []

    def run(self: Any, task_id: str) -> None:
        runs.append(task_id)
        time.sleep(0.2)

    monkeypatch.setattr(agent.pool, "taken", taken_together)
    monkeypatch.setattr(worker.TaskRunner, "run", run)
    # When two copies of one task's message are handled at once
    threads = [threading.Thread(target=agent.handle, args=("t" * 32,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    # Then one runs it; the other is dropped and takes no runner's place
    assert runs == ["t" * 32]
    assert agent.runners == {}


def test_the_agent_writes_hpos_bytecode_cache_even_where_python_would_not(monkeypatch):
    # Given PYTHONDONTWRITEBYTECODE, as Docker images set it: imports write no cache
    import importlib.util

    import hpo
    from hpo.agent import bytecode

    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    # When the agent writes the cache
    assert bytecode.write_cache() is True
    # Then the SDK modules every task imports have theirs, newer than their source
    for module in ("sdk/task.py", "sdk/agent_backend.py", "__init__.py"):
        source = Path(hpo.__file__).parent / module
        cached = Path(importlib.util.cache_from_source(str(source)))
        assert cached.is_file() and cached.stat().st_mtime >= source.stat().st_mtime


# ----- Celery's events -----------------------------------------------------------------

def _events_step(events_flag: list[str]) -> tuple[bool, Any, bool]:
    """(task events on, the Events step's (sending, groups), heartbeat on) of the Celery
    worker an ``hpo-agent`` with these options builds (not started: no broker)."""
    from celery import Celery

    from hpo.agent import cli, worker
    from hpo.agent.slots import make_slots
    from hpo.queue.app import make_app

    args = cli.build_parser().parse_args(events_flag)
    # The app hpo's agents use, on a broker that needs no server
    assert make_app("memory://").conf.worker_send_task_events is False
    app = Celery("hpo-test", broker="memory://", set_as_current=False)
    config = worker.AgentConfig(name="a", queues=["q"], slots=make_slots(None, None, True, 1),
                                runner=RunnerConfig(worker="a"), events=args.events)
    steps = worker.celery_worker(app, config).consumer.blueprint.steps
    events = steps["celery.worker.consumer.events.Events"]
    heart = steps["celery.worker.consumer.heart.Heart"]
    return config.events, (events.send_events, events.groups), heart.enabled


def test_task_events_are_off_unless_asked_and_the_worker_heartbeat_stays_on() -> None:
    # Without --events: no task events, but worker events (the heartbeat Flower's Workers
    # page lists an agent by) are still sent
    assert _events_step([]) == (False, (True, ["worker"]), True)
    # With --events: every group, task events included (Flower's Tasks page)
    assert _events_step(["--events"]) == (True, (True, None), True)


def _flushers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hpo-rec-lazy")]


def test_the_recorder_starts_its_flush_at_the_first_report_and_none_after_its_end() -> None:
    """No thread before anything is buffered (a task's start does not wait for one);
    from the first report on, the periodic flush writes on its own; none after end()."""
    store = BatchStore()
    recorder = Recorder(store, "lazy" + "0" * 28, 1,  # type: ignore[arg-type]
                        max_log_bytes=10_000)
    assert _flushers() == []
    recorder.on_output("stdout", "hello\n")
    assert len(_flushers()) == 1
    wait_for("the periodic flush", lambda: store.batches)
    assert [line for b in store.batches for _, _, line in b["logs"]] == ["hello"]
    assert recorder.end() == []
    assert _flushers() == []
    recorder.on_output("stdout", "late\n")  # after the end: kept, never flushed on its own
    assert _flushers() == []


def test_the_task_spec_is_rewritten_whole_in_place(tmp_path: Path) -> None:
    from hpo.agent.runner import _rewrite

    spec = tmp_path / "spec.json"
    _rewrite(spec, b'{"id": "a-long-first-spec", "parameters": {"x": 1}}')
    inode = spec.stat().st_ino
    _rewrite(spec, b'{"id": "b"}')  # shorter: no tail of the first left
    assert spec.read_bytes() == b'{"id": "b"}'
    assert spec.stat().st_ino == inode and spec.stat().st_mode & 0o777 == 0o600


def test_loading_celerys_modules_ahead_opens_nothing_and_starts_no_thread() -> None:
    """hpo-controller calls it before forking its local agents: a connection or a
    thread there would be shared with (or missing from) every fork."""
    from hpo.queue.app import load_app_modules

    before = threading.active_count()
    load_app_modules("redis://127.0.0.1:9/0")  # nothing listens there: nothing is tried
    assert threading.active_count() == before
