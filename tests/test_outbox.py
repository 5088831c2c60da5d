"""An agent's final writes through a store outage: the recorder's numbered batches, the
outbox that keeps an outcome on disk until the store takes it, and the reaper's view of
its own contact with the store. On a real SQLite store, behind a switch that makes it
fail as an unreachable server does (before the write, or after the commit: the reply
lost)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from hpo.agent.outbox import Outbox, PendingOutcome
from hpo.agent.recorder import Batch, Recorder
from hpo.errors import StoreRefusedValue, StoreUnavailable
from hpo.lifecycle import Status
from hpo.queue.reaper import StoreContact
from hpo.store import ScalarReport, Store, open_store
from hpo.store.reports import Report

pytestmark = pytest.mark.timeout(60)

WRITES = ("append_batch", "finish", "requeue", "get_task")


class Switch:
    """The store, until ``mode`` says otherwise: "down" fails every write before it
    happens; "reply lost" lets it commit, then fails as a cut connection would."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.mode = "up"
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.store, name)
        if name not in WRITES:
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if self.mode == "down":
                raise StoreUnavailable("cannot reach the store: connection refused")
            result = target(*args, **kwargs)
            if self.mode == "reply lost" and name != "get_task":
                raise StoreUnavailable("server closed the connection unexpectedly")
            return result
        return call


@pytest.fixture
def store(hpo_env: dict[str, str]) -> Store:
    return open_store()


@pytest.fixture
def box_dir(tmp_path: Path) -> Path:
    """The outbox's folder (HPO_HOME is another folder of tmp_path)."""
    folder = tmp_path / "outbox"
    folder.mkdir()
    return folder


def claimed(store: Store) -> str:
    task_id = store.create_task("proj", "job").id
    store.enqueue(task_id, "q")
    assert store.claim(task_id, "me") == 1
    return task_id


def outcome(task_id: str, *batches: Batch, status: Status | None = Status.completed
            ) -> PendingOutcome:
    return PendingOutcome(task_id, 1, status, "exit code 0", 0, list(batches))


def reports(*values: float) -> list[ScalarReport]:
    return [ScalarReport("loss", "train", i, v, 1.0) for i, v in enumerate(values)]


def requeued(store: Store) -> Any:
    def requeue(task_id: str, attempt: int, message: str) -> bool:
        return store.requeue(task_id, attempt, message)
    return requeue


# ----- the outbox --------------------------------------------------------------------

def test_an_outcome_kept_through_an_outage_is_written_once_the_store_is_back(
        store: Store, box_dir: Path) -> None:
    # Given a run that ended while the store was away, with reports not written yet
    task_id = claimed(store)
    switch = Switch(store)
    box = Outbox(box_dir, switch, requeued(store))  # type: ignore[arg-type]
    switch.mode = "down"
    box.put(outcome(task_id, Batch(
        1, reports(3.0, 2.0), [(1.0, "stdout", "bye")],
        reports=[Report("table", "Summary", "accuracy", 0, {"data": [[0.93]]}, None, 1.0)],
        fields={"comment": "kept through an outage"})))
    # Then it waits, on disk, and the task still shows running (its agent vouches for it)
    assert box.deliver() == 1
    assert [p.name for p in box_dir.iterdir()] == [f"{task_id}.1.json"]
    assert box.task_ids() == {task_id}
    assert store.get_task(task_id).status is Status.running
    # When the store is back, the reports land, then the outcome, each once
    switch.mode = "up"
    assert box.deliver() == 0
    task = store.get_task(task_id)
    assert (task.status, task.exit_code, task.attempt) == (Status.completed, 0, 1)
    assert [s.value for s in store.task_scalars(task_id)] == [3.0, 2.0]
    assert [line.text for line in store.read_logs(task_id)] == ["bye"]
    # every kind a batch carries: a script's other reports and its task fields too
    assert [(r.kind, r.series) for r in store.task_reports(task_id)] == [("table",
                                                                         "accuracy")]
    assert task.comment == "kept through an outage"
    assert list(box_dir.iterdir()) == [] and box.task_ids() == set()


def test_a_kept_outcome_survives_the_agent_s_restart(store: Store, box_dir: Path) -> None:
    task_id = claimed(store)
    switch = Switch(store)
    switch.mode = "down"
    Outbox(box_dir, switch, requeued(store)).put(  # type: ignore[arg-type]
        outcome(task_id, Batch(1, reports(float("nan"), float("inf")))))
    # When the agent's next process opens the same folder with the store up
    again = Outbox(box_dir, store, requeued(store))
    assert again.task_ids() == {task_id}
    assert again.deliver() == 0
    assert store.get_task(task_id).status is Status.completed
    values = [s.value for s in store.task_scalars(task_id)]
    assert values[0] != values[0] and values[1] == float("inf")  # NaN, inf kept as such


def test_writes_whose_reply_was_lost_are_not_stored_twice(
        store: Store, box_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Given a store that commits each write but whose reply is lost
    caplog.set_level(logging.INFO, "hpo.agent")
    task_id = claimed(store)
    switch = Switch(store)
    box = Outbox(box_dir, switch, requeued(store))  # type: ignore[arg-type]
    switch.mode = "reply lost"
    box.put(outcome(task_id, Batch(1, reports(1.0)), Batch(2, reports(5.0, 6.0))))
    assert box.deliver() == 1  # batch 1 committed, the agent saw a failure
    # When the outbox tries again with the connection back
    switch.mode = "up"
    assert box.deliver() == 0
    # Then every report is there once, and the outcome too
    assert [s.value for s in store.task_scalars(task_id)] == [1.0, 5.0, 6.0]
    assert store.get_task(task_id).status is Status.completed
    # And a finish whose reply was lost is recognised as written, not as a loss
    other = claimed(store)
    switch.mode = "reply lost"
    box.put(outcome(other))
    assert box.deliver() == 1
    switch.mode = "up"
    assert box.deliver() == 0
    assert "outcome completed written" in caplog.text
    assert "no longer owns" not in caplog.text


def test_a_kept_outcome_of_an_attempt_taken_over_is_dropped_unwritten(
        store: Store, box_dir: Path) -> None:
    # Given a kept outcome whose task was re-queued meanwhile and claimed by another agent
    task_id = claimed(store)
    switch = Switch(store)
    switch.mode = "down"
    Outbox(box_dir, switch, requeued(store)).put(  # type: ignore[arg-type]
        outcome(task_id, Batch(1, reports(9.0))))
    box = Outbox(box_dir, store, requeued(store))
    assert store.requeue(task_id, 1)
    assert store.claim(task_id, "other") == 2
    # Then none of it lands, and it is not kept any more
    assert box.deliver() == 0
    task = store.get_task(task_id)
    assert (task.status, task.attempt, task.worker) == (Status.running, 2, "other")
    assert store.task_scalars(task_id) == []
    assert list(box_dir.iterdir()) == []


def test_a_kept_requeue_puts_the_task_back_in_its_queue(store: Store, box_dir: Path) -> None:
    task_id = claimed(store)
    switch = Switch(store)
    box = Outbox(box_dir, switch, requeued(switch))  # type: ignore[arg-type]
    switch.mode = "down"
    box.put(outcome(task_id, status=None))
    assert box.deliver() == 1
    switch.mode = "reply lost"  # the re-queue commits, its reply is lost
    assert box.deliver() == 1
    switch.mode = "up"
    assert box.deliver() == 0
    task = store.get_task(task_id)
    assert (task.status, task.attempt) == (Status.queued, 1)


def test_an_unreadable_outcome_file_is_left_alone(store: Store, box_dir: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (box_dir / "x.1.json").write_text("{not json")
    box = Outbox(box_dir, store, requeued(store))
    assert len(box) == 0
    assert (box_dir / "x.1.json").exists()
    assert "unreadable pending outcome" in caplog.text


# ----- the recorder's numbered batches --------------------------------------------------

def test_a_batch_that_failed_is_sent_again_with_its_number_and_stored_once(
        store: Store) -> None:
    task_id = claimed(store)
    switch = Switch(store)
    recorder = Recorder(switch, task_id, 1, max_log_bytes=10_000)  # type: ignore[arg-type]
    recorder.close()  # the flusher stopped: every flush below is this test's
    recorder.add_scalars(reports(1.0, 2.0))
    switch.mode = "reply lost"
    with pytest.raises(StoreUnavailable):
        recorder.flush()
    switch.mode = "down"
    recorder.add_scalars(reports(3.0))
    with pytest.raises(StoreUnavailable):
        recorder.flush()
    switch.mode = "up"
    recorder.flush()
    assert [s.value for s in store.task_scalars(task_id)] == [1.0, 2.0, 3.0]
    assert recorder.scalar_count == 3


def test_a_recorder_closed_with_the_store_away_hands_over_what_it_holds(
        store: Store) -> None:
    task_id = claimed(store)
    switch = Switch(store)
    recorder = Recorder(switch, task_id, 1, max_log_bytes=10_000)  # type: ignore[arg-type]
    switch.mode = "down"
    recorder.add_scalars(reports(1.0))
    recorder.on_output("stdout", "last words\n")
    recorder.close()  # does not raise
    batches = recorder.unwritten()
    assert [b.seq for b in batches] == sorted(b.seq for b in batches)
    assert [r.value for b in batches for r in b.scalars] == [1.0]
    assert [line[2] for b in batches for line in b.logs] == ["last words"]


# ----- the reaper's contact with the store ------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_reaper_judges_agents_only_after_a_lost_after_period_of_answers() -> None:
    clock = FakeClock()
    contact = StoreContact(clock)
    assert contact.may_judge(30)  # no failure seen: at once
    contact.failed()
    assert not contact.may_judge(30)
    clock.now += 5
    contact.answered()
    clock.now += 29
    contact.answered()
    assert not contact.may_judge(30)  # other agents may not have beaten again yet
    clock.now += 1
    assert contact.may_judge(30)
    contact.failed()  # a new failure starts the wait again
    contact.answered()
    assert not contact.may_judge(30)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_an_agent_started_after_a_crash_writes_what_the_dead_one_kept(
        store: Store, hpo_env: dict[str, str], tmp_path: Path) -> None:
    from hpo.agent.outbox import outbox_folder
    from tests.agents import env_for, running_agent, wait_final

    # Given an agent that died with an outcome kept on disk (the store was away)
    task_id = claimed(store)
    switch = Switch(store)
    switch.mode = "down"
    Outbox(outbox_folder(), switch, requeued(store)).put(  # type: ignore[arg-type]
        outcome(task_id, Batch(1, reports(0.25), [(1.0, "stdout", "done")])))
    # When another agent starts on that host (its name is its own: HOST-PID by default)
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", "q") as agent:
        task = wait_final(store, task_id, timeout=30)
    # Then the dead agent's run counts: its reports and its outcome, once
    assert (task.status, task.attempt, task.worker) == (Status.completed, 1, "me")
    assert [s.value for s in store.task_scalars(task_id)] == [0.25]
    assert [line.text for line in store.read_logs(task_id)] == ["done"]
    assert list(outbox_folder().glob("*.json")) == []
    assert "kept by an earlier agent on this host" in agent.output()


class FailingReads:
    """The store, whose first ``failures`` writes before a re-run starts (dropping the
    earlier attempts' reports) fail as an unreachable server's."""

    def __init__(self, store: Store, failures: int) -> None:
        self.store, self.failures = store, failures

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def drop_earlier_attempts(self, task_id: str, attempt: int) -> Any:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("cannot reach the store: connection refused")
        return self.store.drop_earlier_attempts(task_id, attempt)


def runner_over(store: Any, kept: list[PendingOutcome]) -> Any:
    from hpo.agent.runner import RunnerConfig, TaskRunner
    from hpo.agent.slots import Slot

    return TaskRunner(store, RunnerConfig(worker="me"), Slot("cpu0", ()),
                      lambda task, attempt: None, kept.append)


def test_a_claim_the_store_cannot_follow_up_waits_for_it_rather_than_run_twice(
        store: Store) -> None:
    # Given a re-run's claim right before an outage: the store fails for two tries
    task_id = claimed(store)
    kept: list[PendingOutcome] = []
    runner = runner_over(FailingReads(store, 2), kept)
    # Then the runner waits for the store and goes on with the task, nothing given back
    assert runner._prepare(task_id, 2) is True and kept == []


class LostClaimReply:
    """The store, whose first claim commits but answers as a cut connection would
    (``went_through``), or fails before committing."""

    def __init__(self, store: Store, went_through: bool) -> None:
        self.store, self.went_through, self.failed = store, went_through, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def claim_task(self, task_id: str, worker: str) -> Any:
        if not self.failed:
            self.failed = True
            if self.went_through:
                self.store.claim_task(task_id, worker)
            raise StoreUnavailable("cannot reach the store: server closed the connection")
        return self.store.claim_task(task_id, worker)


@pytest.mark.parametrize("went_through", [True, False])
def test_a_claim_whose_reply_is_lost_runs_its_task_once_as_its_first_attempt(
        store: Store, went_through: bool) -> None:
    # Given a queued task whose claim fails as the connection is cut, after (or
    # before) its commit
    task_id = store.create_task("proj", "job").id
    store.enqueue(task_id, "q")
    runner = runner_over(LostClaimReply(store, went_through), [])
    # When the runner claims it
    task = runner._claim(task_id)
    # Then it is this run's first attempt either way: never given back to be re-queued
    # as an orphan and run again as attempt 2
    assert task is not None and task.attempt == 1 and task.worker == "me"
    assert store.get_task(task_id).attempt == 1


def test_a_claim_given_back_when_the_agent_stops_during_the_wait(store: Store) -> None:
    task_id = claimed(store)
    kept: list[PendingOutcome] = []
    runner = runner_over(FailingReads(store, 10**6), kept)
    from hpo.agent.runner import StopReason

    runner.stop(StopReason.requeue)  # the agent is shutting down
    assert runner._prepare(task_id, 2) is False
    assert [(o.task_id, o.attempt, o.status) for o in kept] == [(task_id, 2, None)]


class RefusingFirstBatch:
    """The store, which refuses batch 1 as PostgreSQL refuses a value it cannot hold."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append_batch(self, task_id: str, **kwargs: Any) -> int:
        if kwargs.get("seq") == 1:
            raise StoreRefusedValue("value too long for type character varying(255)")
        return self.store.append_batch(task_id, **kwargs)


def test_a_batch_the_store_refuses_for_good_does_not_hold_back_the_outcome(
        store: Store, box_dir: Path) -> None:
    # Given a kept outcome whose first batch holds a value the store refuses every time
    task_id = claimed(store)
    box = Outbox(box_dir, RefusingFirstBatch(store), requeued(store))  # type: ignore[arg-type]
    box.put(outcome(task_id, Batch(1, reports(1.0)), Batch(2, reports(2.0))))
    # When it is delivered, that batch is dropped and the rest is written, once
    assert box.deliver() == 0
    assert store.get_task(task_id).status is Status.completed
    assert [s.value for s in store.task_scalars(task_id)] == [2.0]


def test_the_recorder_drops_a_batch_the_store_refuses_for_good(store: Store) -> None:
    task_id = claimed(store)
    recorder = Recorder(RefusingFirstBatch(store), task_id, 1,  # type: ignore[arg-type]
                        max_log_bytes=10_000)
    recorder.close()  # the flusher stopped: the flushes below are this test's
    recorder.add_scalars(reports(1.0))
    recorder.flush()
    recorder.add_scalars(reports(2.0))
    recorder.flush()
    assert [s.value for s in store.task_scalars(task_id)] == [2.0]
    assert recorder.unwritten() == [] and recorder.lost is None


def test_an_outcome_the_store_rejects_does_not_hold_back_the_others(
        store: Store, box_dir: Path) -> None:
    # Given two kept outcomes, the older one with a batch the store rejects for good
    bad, good = claimed(store), claimed(store)
    switch = Switch(store)
    switch.mode = "down"
    box = Outbox(box_dir, switch, requeued(store))  # type: ignore[arg-type]
    box.put(outcome(bad, Batch(1, reports(1.0), reports=[
        Report("no-such-kind", "t", "s", 0, {}, None, 1.0)])))
    box.put(outcome(good, Batch(1, reports(2.0))))
    # When the store is back, the good one is written and the bad one kept, not lost
    switch.mode = "up"
    assert box.deliver() == 1
    assert store.get_task(good).status is Status.completed
    assert box.task_ids() == {bad}
    # And an outcome that keeps failing is given up at last: its run ends failed, saying
    # why, instead of its task running for ever under an agent that vouches for it
    from hpo import defaults
    for _ in range(defaults.OUTBOX_MAX_FAILURES):
        box.deliver()
    task = store.get_task(bad)
    assert task.status is Status.failed and box.task_ids() == set()
    assert "could not record this run's outcome" in (task.status_message or "")


class RefusingTooLong:
    """The store, which refuses a scalar title over 255 characters as PostgreSQL does."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def append_batch(self, task_id: str, **kwargs: Any) -> int:
        if any(len(r.title) > 255 for r in kwargs.get("scalars", ())):
            raise StoreRefusedValue("value too long for type character varying(255)")
        return self.store.append_batch(task_id, **kwargs)


def test_a_run_by_hand_drops_a_batch_the_store_refuses_for_good(
        store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    from hpo.sdk.store_backend import StoreBackend

    # Given a run by hand that reported a title the store cannot hold
    record = store.create_task("proj", "by hand")
    backend = StoreBackend(RefusingTooLong(store), record)  # type: ignore[arg-type]
    backend.report_scalar("x" * 300, "train", 1.0, 0)
    backend.flush()
    # When it reports on, the next batch is written: the refused one holds back nothing
    backend.report_scalar("loss", "train", 2.0, 1)
    backend.flush()
    assert [(s.title, s.value) for s in store.task_scalars(record.id)] == [("loss", 2.0)]
    assert "refused a batch" in capsys.readouterr().err
