"""How a job ended (``hpo.optimization.ends``): one vocabulary, read from what the store
recorded, the same in the summary's counts, its rows and the tables. On SQLite and
PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import pytest

from hpo.controller.formatting import counts, status_fields
from hpo.lifecycle import Status, TaskType
from hpo.optimization.config import OptimizerConfig
from hpo.optimization.ends import End, StopCause, end_of, stop_job
from hpo.optimization.objective import Objective
from hpo.optimization.summary import summarize
from hpo.report.tables import rows
from hpo.space.ranges import UniformParameterRange
from hpo.store import Store

pytestmark = pytest.mark.timeout(60)


def running(store: Store, parent: str | None = None) -> tuple[str, int]:
    task = store.create_task("p", "job", parent=parent, parameters={"lr": 0.1})
    store.enqueue(task.id, "q")
    attempt = store.claim(task.id, "agent-a")
    assert attempt is not None
    return task.id, attempt


def test_a_stop_the_optimization_asked_for_reads_stopped_by_a_limit(store):
    # Given a running job the controller stops for its budget
    task_id, attempt = running(store)
    stop_job(store, task_id, StopCause.limit, "max_iteration_per_job reached (5 >= 5)")
    # When its agent ends it as stopped
    store.finish(task_id, attempt, Status.stopped, message="max_iteration_per_job reached")
    # Then it was stopped by a limit, with or without a result
    assert end_of(store.get_task(task_id), has_result=True) is End.limit
    assert end_of(store.get_task(task_id), has_result=False) is End.limit


def test_a_stop_the_user_asked_for_reads_stopped_by_the_user(store):
    task_id, attempt = running(store)
    stop_job(store, task_id, StopCause.user, "stopped by hpo task abort")
    store.finish(task_id, attempt, Status.stopped, message="stopped by hpo task abort")
    assert end_of(store.get_task(task_id), has_result=True) is End.user


def test_a_queued_job_stopped_by_the_user_never_ran_and_reads_so(store):
    task = store.create_task("p", "job")
    store.enqueue(task.id, "q")
    stopped = stop_job(store, task.id, StopCause.user, "stopped")
    assert stopped.status is Status.stopped
    assert end_of(store.get_task(task.id), has_result=False) is End.user


def test_a_run_its_agent_stopped_unasked_was_stopped_by_its_time_limit(store):
    # Given a run no one asked to stop, ended stopped by its agent (time_limit_per_job)
    task_id, attempt = running(store)
    store.finish(task_id, attempt, Status.stopped, message="time limit of 60s reached")
    assert end_of(store.get_task(task_id), has_result=False) is End.limit


def test_an_untagged_stop_someone_asked_for_reads_stopped_by_the_user(store):
    # Given a stop asked for without a cause (an older client, the SDK's abort)
    task_id, attempt = running(store)
    store.request_stop(task_id, "aborted")
    store.finish(task_id, attempt, Status.stopped, message="aborted")
    assert end_of(store.get_task(task_id), has_result=False) is End.user


def test_the_cause_belongs_to_the_attempt_it_stopped(store):
    # Given a job stopped by the user, then reset and run again (a resume re-runs it)
    task_id, attempt = running(store)
    stop_job(store, task_id, StopCause.user, "stopped")
    store.finish(task_id, attempt, Status.stopped)
    store.reset(task_id)
    store.enqueue(task_id, "q")
    again = store.claim(task_id, "agent-b")
    assert again is not None and again != attempt
    # When its agent stops the new attempt at its time limit, no one asking
    store.finish(task_id, again, Status.stopped, message="time limit of 60s reached")
    # Then the earlier attempt's cause does not stick to it
    assert end_of(store.get_task(task_id), has_result=False) is End.limit


def test_completed_and_failed_say_whether_there_is_a_result(store):
    done, attempt = running(store)
    store.finish(done, attempt, Status.completed)
    broken, attempt = running(store)
    store.finish(broken, attempt, Status.failed)
    assert end_of(store.get_task(done), has_result=True) is End.result
    assert end_of(store.get_task(done), has_result=False) is End.no_objective
    assert end_of(store.get_task(broken), has_result=False) is End.failed
    assert end_of(store.get_task(running(store)[0]), has_result=False) is None


def test_every_line_and_table_counts_the_same_ends(store):
    # Given an optimization whose jobs ended each way
    opt = store.create_task("p", "opt", type=TaskType.optimizer)
    config = OptimizerConfig(base_task_id="template",
                             hyper_parameters=[UniformParameterRange("lr", 0.0, 1.0)],
                             objectives=[Objective("val", "loss", "min")], strategy="random",
                             total_max_jobs=9)
    store.create_optimization(opt.id, config.to_dict())
    store.set_status(opt.id, Status.running)

    def ended(status: Status, *, loss: float | None = None,
              cause: StopCause | None = None) -> str:
        task_id, attempt = running(store, opt.id)
        if loss is not None:
            store.append_scalars(task_id, [("val", "loss", 0, loss, 0.0)], attempt=attempt)
        if cause is not None:
            stop_job(store, task_id, cause, "stop")
        store.finish(task_id, attempt, status)
        return task_id

    ended(Status.completed, loss=0.5)
    ended(Status.completed, loss=0.4)
    ended(Status.completed)  # never reported the objective
    ended(Status.stopped, loss=0.3, cause=StopCause.limit)  # a result that counts
    ended(Status.stopped, cause=StopCause.user)
    ended(Status.failed, loss=0.1)  # a failed job's reports do not count
    running(store, opt.id)
    # When the summary is read
    s = summarize(store, opt.id, all_jobs=True)
    # Then the counts, the lines and the rows say the same, in the same words
    assert s.ends == {"completed": 2, "completed without objective": 1,
                      "stopped by a limit": 1, "stopped by the user": 1, "failed": 1}
    assert s.failed == 1 and s.done == 6 and s.running == 1
    assert counts(s) == ("7/9 launched, 1 running, 0 queued; ended: 2 completed, 1 completed "
                         "without objective, 1 stopped by a limit, 1 stopped by the user, "
                         "1 failed")
    fields = dict(status_fields(s))
    assert fields["ended"] == counts(s).split("ended: ")[1]
    assert "by status" not in fields
    states = sorted(r.state for r in s.jobs)
    assert states == sorted(["completed", "completed", "completed without objective",
                             "stopped by a limit", "stopped by the user", "failed",
                             "running"])
    table = {r["task_id"]: r["status"] for r in rows(s)}
    assert sorted(table.values()) == ["completed", "completed", "stopped by a limit"]
    assert s.best_value == pytest.approx(0.3)  # the limited job's result counts
    assert s.to_dict()["ends"] == s.ends
