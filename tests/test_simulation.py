"""The real controller in simulated time (``hpo.testing.simulation``): limits and budgets
checked at every simulated instant, with no real agent and no waiting. An hour of
simulated optimization takes well under a second here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from hpo import relations
from hpo.automation import UniformParameterRange
from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.optimization.config import OptimizerConfig
from hpo.store import Store, open_store
from hpo.strategies.base import Objective
from hpo.strategies.random_search import RandomSearch
from hpo.testing.simulation import SimulatedClock, Simulation

TITLE, SERIES = "loss", "validation"


def curve(parameters: dict[str, Any], budget: int) -> list[float]:
    """A loss that falls towards x: 1 + x, x + 1/2, x + 1/3, ..."""
    return [float(parameters["x"]) + 1.0 / i for i in range(1, budget + 1)]


class RecordingRandom(RandomSearch):
    """Random search that remembers every result it hears."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.heard: dict[str, Sequence[float] | None] = {}

    def on_result(self, trial_id: str, values: Sequence[float] | None) -> None:
        self.heard[trial_id] = values


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = open_store(f"sqlite:///{tmp_path / 'hpo.db'}")
    yield store
    store.close()


def simulation(store: Store, *, strategy: str = "random", **settings: Any) -> Simulation:
    """An optimization of x in [0, 1] by ``strategy``; ``settings``: OptimizerConfig's
    fields, and the agent's options under their names."""
    agent_options = {k: settings.pop(k) for k in
                     ("workers", "iterations", "report_every") if k in settings}
    base = store.create_task("simulation-tests", "base", parameters={"General/x": 0.0})
    config = OptimizerConfig(
        base_task_id=base.id, hyper_parameters=[UniformParameterRange("x", 0.0, 1.0)],
        objectives=[Objective(TITLE, SERIES, "min")], strategy=strategy,
        strategy_kwargs={"seed": 1}, execution_queue="simulation-tests", **settings)
    return Simulation(store, config, curve, **agent_options)


def children(sim: Simulation) -> list[Any]:
    return sim.store.find_tasks(parent=sim.optimizer_task_id)


def test_total_max_jobs_launches_exactly_that_many_jobs(store):
    sim = simulation(store, total_max_jobs=7, max_number_of_concurrent_tasks=3,
                     iterations=4)

    result = sim.run()

    assert result.reason == "all jobs finished"
    jobs = children(sim)
    assert len(jobs) == 7
    assert {j.status for j in jobs} == {Status.completed}
    # 7 jobs of 4 s on 3 slots: three rounds of simulated time.
    assert result.seconds == 12.0


def test_the_concurrency_limit_is_never_exceeded_at_any_simulated_instant(store):
    # Given an agent with more slots than the optimization may use
    sim = simulation(store, total_max_jobs=12, max_number_of_concurrent_tasks=3,
                     workers=10, iterations=5)

    sim.run()

    # Then it never held more than the limit at once, and the limit was used.
    assert sim.agent.most_running == 3
    assert len(children(sim)) == 12


def test_max_iteration_per_job_stops_each_job_at_its_budget(store):
    # Given a script that would train 20 iterations and reports after each one
    sim = simulation(store, total_max_jobs=3, max_number_of_concurrent_tasks=3,
                     max_iteration_per_job=5, iterations=20, report_every=1)

    result = sim.run()

    # Then every job was stopped after the report at iteration 5 and nothing later ran.
    assert result.reason == "all jobs finished"
    assert result.seconds == 5.0
    for job in children(sim):
        assert job.status is Status.stopped
        reported = [s.iteration for s in store.task_scalars(job.id, title=TITLE)]
        assert reported == [1, 2, 3, 4, 5]
    assert sim.agent.iterations_run == 15


def test_optimization_time_limit_is_enforced_on_the_simulated_clock(store):
    # Given an unbounded search of 7-iteration jobs with a one-minute limit
    sim = simulation(store, max_number_of_concurrent_tasks=2, optimization_time_limit=1.0,
                     iterations=7, report_every=1)

    result = sim.run()

    # Then it ends at the first cycle past the minute, every job stopped or done.
    assert result.reason == "optimization_time_limit of 1 min reached"
    assert 60.0 <= result.seconds < 61.0
    assert sim.controller.elapsed_s() == result.seconds
    statuses = [j.status for j in children(sim)]
    assert all(s in FINAL_STATUSES for s in statuses)
    assert Status.stopped in statuses  # the jobs running at the limit were cut short
    assert statuses.count(Status.completed) == 16  # 2 slots x 8 jobs of 7 s in 56 s


def test_the_strategy_hears_every_result_as_the_job_reported_it(store):
    sim = simulation(store, strategy=f"{__name__}.RecordingRandom", total_max_jobs=4,
                     max_number_of_concurrent_tasks=2, iterations=3)

    sim.run()

    strategy = sim.controller.strategy
    assert isinstance(strategy, RecordingRandom)
    expected = {}
    for job in children(sim):
        trial = relations.tag_value(job.tags, relations.TRIAL)
        expected[trial] = [curve({"x": job.parameters["General/x"]}, 3)[-1]]
    assert strategy.heard == expected


def test_a_simulated_clock_moves_only_when_told():
    clock = SimulatedClock(start=10.0)
    moves: list[float] = []
    clock.while_asleep.append(lambda: moves.append(clock.monotonic()))

    assert clock.time() == clock.monotonic() == 10.0
    clock.advance(2.5)
    clock.sleep(1.5)  # the world moves while the caller sleeps, after the time passed
    clock.advance_to(20.0)

    assert clock.monotonic() == 20.0 and moves == [14.0]
    with pytest.raises(ValueError):
        clock.advance_to(19.0)


def test_a_publish_that_fails_clones_no_suggestion_twice(store, monkeypatch):
    # Given a broker that refuses the first three publishes (a Redis restart)
    from hpo.queue import dispatch
    from hpo.queue.app import BrokerUnavailable

    sim = simulation(store, total_max_jobs=5, max_number_of_concurrent_tasks=2,
                     iterations=2)
    refusals = iter(range(3))
    real_publish = dispatch.publish

    def flaky_publish(app: Any, task_id: str, queue: str) -> None:
        if next(refusals, None) is not None:
            raise BrokerUnavailable("cannot reach the broker: connection refused")
        real_publish(app, task_id, queue)

    monkeypatch.setattr(dispatch, "publish", flaky_publish)
    # When the controller's cycles fail and are retried, as run() retries them
    reason, failed = None, 0
    for _ in range(500):
        try:
            reason = sim.controller.step()
        except BrokerUnavailable:
            failed += 1
            continue
        if reason:
            break
        sim.agent.step()
    # Then every suggestion became exactly one job, and all five ran
    assert (reason, failed) == ("all jobs finished", 3)
    jobs = children(sim)
    trials = [relations.tag_value(j.tags, relations.TRIAL) for j in jobs]
    assert len(jobs) == 5 and len(set(trials)) == 5
    assert {j.status for j in jobs} == {Status.completed}


def test_jobs_cut_short_by_a_stop_run_again_on_resume_as_the_same_trials(store):
    from hpo.controller.controller import Controller
    from hpo.queue.app import make_app
    from hpo.testing.simulation import run_simulation

    # Given an optimization of 6 jobs, 2 at a time, stopped (Ctrl-C) while 2 jobs run
    sim = simulation(store, total_max_jobs=6, max_number_of_concurrent_tasks=2,
                     iterations=4, report_every=1)

    def two_done_two_running() -> bool:
        statuses = [c.status for c in children(sim)]
        return statuses.count(Status.completed) >= 2 and statuses.count(Status.running) == 2

    assert sim.run(stop_when=two_done_two_running).reason == "stop_when is true"
    sim.controller.request_stop("stopped by request")
    reason = run_simulation(sim.controller, sim.agent).reason
    assert sim.controller.end_status is Status.stopped
    cut = {c.id for c in children(sim) if c.status is Status.stopped}
    assert len(cut) == 2 and sim.controller.interrupted == cut
    assert reason.endswith("2 job(s) cut short run again on resume")

    # When the optimization is resumed
    config = sim.controller.config
    resumed = Controller(store, make_app("memory://"), config, sim.optimizer_task_id,
                         clock=sim.clock)
    assert run_simulation(resumed, sim.agent).reason == "all jobs finished"

    # Then the two ran again as the same tasks and trials, and 6 results exist, not 4
    jobs = children(sim)
    assert len(jobs) == 6 and {j.status for j in jobs} == {Status.completed}
    assert len({relations.tag_value(j.tags, relations.TRIAL) for j in jobs}) == 6
    rerun = {j.id: j for j in jobs if j.id in cut}
    assert {j.attempt for j in rerun.values()} == {2}
    # each with its second run's reports only: 4 iterations, not the cut run's too
    for task_id in cut:
        assert [s.iteration for s in store.task_scalars(task_id)] == [1, 2, 3, 4]
    assert len([j for j in resumed.jobs.values() if j.result is not None]) == 6


def test_an_objective_never_reported_stops_the_optimization_after_the_first_jobs(store):
    # Given a script that reports nothing the optimization looks for (its curve is empty)
    base = store.create_task("simulation-tests", "base", parameters={"General/x": 0.0})
    config = OptimizerConfig(
        base_task_id=base.id, hyper_parameters=[UniformParameterRange("x", 0.0, 1.0)],
        objectives=[Objective(TITLE, SERIES, "min")], strategy="random",
        strategy_kwargs={"seed": 1}, execution_queue="simulation-tests", total_max_jobs=20,
        max_number_of_concurrent_tasks=2)
    sim = Simulation(store, config, lambda parameters, budget: [], iterations=3)
    # When it runs
    result = sim.run()
    # Then it stops itself after the first 3 jobs, failed, saying what they reported
    assert sim.controller.gave_up == result.reason
    assert sim.controller.end_status is Status.failed
    assert result.reason.startswith("the first 3 jobs to finish all ended without a result")
    assert "without the objective loss/validation; it reported no scalars" in result.reason
    assert "fail_fast: 0" in result.reason
    assert len(children(sim)) < 20


def test_jobs_cut_short_by_the_end_of_the_optimization_are_not_judged_by_fail_fast(store):
    # Given an optimization ending on its time limit while its first jobs run, before
    # they could report (the simulated agent always reports before a limit is seen, so
    # their ends are handed to the judge directly, as _stop_everything's wait does)
    sim = simulation(store, max_number_of_concurrent_tasks=3, iterations=10)
    controller = sim.controller
    controller._stop_everything("optimization_time_limit of 1 min reached")
    for _ in range(3):
        controller._judge_first_ends((Status.stopped, "job 0123abcd stopped without the "
                                      "objective loss/validation; it reported no scalars"))
    # Then it ends on its limit, not failed as if its script never reported
    assert controller.gave_up is None


def test_fail_fast_0_goes_on_as_clearml_does(store):
    base = store.create_task("simulation-tests", "base", parameters={"General/x": 0.0})
    config = OptimizerConfig(
        base_task_id=base.id, hyper_parameters=[UniformParameterRange("x", 0.0, 1.0)],
        objectives=[Objective(TITLE, SERIES, "min")], strategy="random",
        strategy_kwargs={"seed": 1}, execution_queue="simulation-tests", total_max_jobs=6,
        max_number_of_concurrent_tasks=2, fail_fast=0)
    sim = Simulation(store, config, lambda parameters, budget: [], iterations=3)
    assert sim.run().reason == "all jobs finished"
    assert sim.controller.gave_up is None and len(children(sim)) == 6
    assert sim.controller.end_status is Status.completed


def test_a_tie_names_the_same_best_job_everywhere(store):
    from hpo.optimization.summary import summarize

    # Given jobs that all reach the same objective value
    sim = simulation(store, total_max_jobs=6, max_number_of_concurrent_tasks=3,
                     iterations=2)
    sim.agent.curve = lambda parameters, budget: [0.5] * budget
    assert sim.run().reason == "all jobs finished"
    # Then the live ranking and the store's name the same best job: the first to end
    jobs = children(sim)
    first = min(jobs, key=lambda j: (j.ended_at, j.id))
    assert sim.controller.best_jobs(1)[0].task_id == first.id
    assert summarize(store, sim.optimizer_task_id).best_task == first.id
    assert [r.task_id for r in summarize(store, sim.optimizer_task_id, top_k=6).top] == [
        j.task_id for j in sim.controller.best_jobs()]


@pytest.mark.parametrize(("strategy", "shown"), [("bohb", True), ("random", False)])
def test_the_jobs_table_shows_the_budget_when_the_strategy_has_budgets(
        store, capsys, strategy, shown):
    from hpo.controller import formatting
    from hpo.optimization.summary import summarize

    settings: dict[str, Any] = dict(strategy=strategy, total_max_jobs=6,
                                    max_number_of_concurrent_tasks=2,
                                    max_iteration_per_job=9)
    if strategy == "bohb":
        settings["min_iteration_per_job"] = 1
    sim = simulation(store, **settings)
    assert sim.run().reason in ("all jobs finished", "search space exhausted")
    summary = summarize(store, sim.optimizer_task_id, top_k=6)
    formatting.jobs_table(summary, summary.top, "best")
    header = next(line for line in capsys.readouterr().out.splitlines() if "iteration" in line)
    assert ("budget" in header) is shown, header


def test_a_job_whose_stop_lands_after_the_session_ended_runs_again_on_resume(
        store, monkeypatch):
    from hpo.controller.controller import Controller
    from hpo.queue.app import make_app
    from hpo.testing.simulation import run_simulation

    # Given a stop (Ctrl-C) whose jobs do not end within the controller's wait
    sim = simulation(store, total_max_jobs=4, max_number_of_concurrent_tasks=2,
                     iterations=200, report_every=10)  # 200 s: longer than STOP_WAIT_S
    assert sim.run(stop_when=lambda: sum(
        c.status is Status.running for c in children(sim)) == 2).reason == "stop_when is true"
    with monkeypatch.context() as deaf:
        deaf.setattr(sim.agent, "_end_stopped", lambda: False)
        sim.controller.request_stop("stopped by request")
        run_simulation(sim.controller, sim.agent)
    cut = {c.id for c in children(sim) if c.status is Status.running}
    assert len(cut) == 2
    # When the optimization is resumed and their stops land (the agent ends them now)
    resumed = Controller(store, make_app("memory://"), sim.controller.config,
                         sim.optimizer_task_id, clock=sim.clock)
    assert run_simulation(resumed, sim.agent).reason == "all jobs finished"
    # Then they ran again, whole, and every configuration has its result: 4, not 2
    jobs = children(sim)
    assert len(jobs) == 4 and {j.status for j in jobs} == {Status.completed}
    assert all(len(store.task_scalars(t)) == 200 for t in cut)
    assert len([j for j in resumed.jobs.values() if j.result is not None]) == 4


def test_a_crash_between_the_launch_commit_and_the_publish_runs_each_trial_once(
        store, monkeypatch):
    from hpo.controller import controller as controller_module
    from hpo.controller.controller import Controller
    from hpo.queue import dispatch
    from hpo.queue.app import make_app
    from hpo.testing.simulation import run_simulation

    class Crash(Exception):
        """The controller's process dies: nothing after this point runs."""

    # Given a controller that dies right after its first launch committed (the state
    # naming the suggestions pending, their clones queued) and before any publish
    sim = simulation(store, total_max_jobs=4, max_number_of_concurrent_tasks=2,
                     iterations=3)

    def crash(*args: Any) -> None:
        raise Crash

    with monkeypatch.context() as dying:
        dying.setattr(dispatch, "publish_queued", crash)
        with pytest.raises(Crash):
            sim.controller.step()
    launched = children(sim)
    assert len(launched) == 2 and {c.status for c in launched} == {Status.queued}
    _config, state = store.load_optimization(sim.optimizer_task_id)
    assert len(state["pending"]) == 2 and state["strategy"]["suggested"] == 2

    # When a new controller resumes from the store
    published: list[str] = []
    real_publish = controller_module.publish

    def recording_publish(app: Any, task_id: str, queue: str) -> None:
        published.append(task_id)
        real_publish(app, task_id, queue)

    monkeypatch.setattr(controller_module, "publish", recording_publish)
    resumed = Controller(store, make_app("memory://"), sim.controller.config,
                         sim.optimizer_task_id, clock=sim.clock)
    assert run_simulation(resumed, sim.agent).reason == "all jobs finished"

    # Then it cloned them not again but published them, and each trial ran once
    assert sorted(published) == sorted(c.id for c in launched)
    jobs = children(sim)
    trials = [relations.tag_value(j.tags, relations.TRIAL) for j in jobs]
    assert len(jobs) == 4 and sorted(trials) == ["t0", "t1", "t2", "t3"]
    assert {j.status for j in jobs} == {Status.completed}
    assert {j.attempt for j in jobs} == {1} and sim.agent.iterations_run == 4 * 3
    assert len([j for j in resumed.jobs.values() if j.result is not None]) == 4


def test_a_launch_whose_commit_is_not_acknowledged_clones_no_suggestion_twice(
        store, monkeypatch):
    from hpo.errors import StoreError

    # Given a store whose first launch commits but whose answer is lost (the connection
    # drops after the COMMIT reached the server)
    sim = simulation(store, total_max_jobs=4, max_number_of_concurrent_tasks=2,
                     iterations=2)
    real_launch = store.launch_clones
    lost = iter([True])

    def unacknowledged(*args: Any, **kwargs: Any) -> list[str]:
        ids = real_launch(*args, **kwargs)
        if next(lost, False):
            raise StoreError("store error: server closed the connection unexpectedly")
        return ids

    monkeypatch.setattr(store, "launch_clones", unacknowledged)
    # When the controller's cycles fail and are retried, as run() retries them
    with pytest.raises(StoreError):
        sim.controller.step()
    assert len(children(sim)) == 2
    assert sim.run().reason == "all jobs finished"
    # Then the retry made the same two clones, not two more: each trial ran once
    jobs = children(sim)
    trials = [relations.tag_value(j.tags, relations.TRIAL) for j in jobs]
    assert len(jobs) == 4 and sorted(trials) == ["t0", "t1", "t2", "t3"]
    assert {j.status for j in jobs} == {Status.completed} and {j.attempt for j in jobs} == {1}
