"""One job history, three readers: the controller's live loop, the store-only summary
(``hpo-controller status``, ``report``, ``hpo ui``) and a resumed controller score every
job alike and rank the jobs alike (``hpo.optimization.tally``: which reports count;
``hpo.optimization.objective``: what they score).

The history has reports past the iteration budget (the stop takes a moment), a NaN
before the budget and one after it, a second objective reported around the primary's
budget report, ASHA-style promoted jobs (``resume:``, one reporting nothing itself), a
job without a budget of its own, one stopped early and one failed. The real controller
runs it in simulated time; a hand-written agent reports one value per move.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from hpo.automation import UniformParameterRange
from hpo.controller.controller import Controller
from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.optimization.config import OptimizerConfig
from hpo.optimization.objective import job_result
from hpo.optimization.summary import summarize
from hpo.optimization.tally import JobTally, Tally
from hpo.queue.app import make_app
from hpo.store import ScalarReport, Store
from hpo.strategies.base import NoSuggestion, Objective, SearchStrategy, Suggestion
from hpo.testing.simulation import SimulatedClock

QUEUE = "scoring-tests"
NAN = math.nan


@dataclass(frozen=True)
class Plan:
    """A trial: its budget, the trial it continues, its reports in order ((title,
    iteration, value); the series is always "s") and how its script ends."""

    trial: str
    budget: int | None
    reports: list[tuple[str, int, float]]
    status: Status
    resume_from: str | None = None


PLANS = [
    # budget 2: the loss at 2 is the last report that counts; acc at 2 comes after it
    Plan("a", 2, [("loss", 1, 0.9), ("acc", 1, 0.5), ("loss", 2, 0.7), ("acc", 2, 0.99),
                  ("loss", 3, 0.1)], Status.stopped),
    Plan("b", 2, [("acc", 1, 0.4), ("loss", 1, 0.8), ("loss", 2, 0.75), ("loss", 3, 0.2)],
         Status.stopped),
    # no budget of its own: max_iteration_per_job (6) cuts it
    Plan("c", None, [("loss", 1, 0.6), ("loss", 2, 0.3), ("loss", 3, 0.55), ("acc", 3, 0.7),
                     ("loss", 6, 0.58), ("loss", 7, 0.0), ("acc", 7, 0.99)], Status.stopped),
    Plan("nan", None, [("loss", 1, 0.4), ("loss", 2, NAN), ("loss", 3, 0.2), ("acc", 3, 0.5)],
         Status.completed),
    Plan("late-nan", 2, [("loss", 1, 0.5), ("acc", 1, 0.5), ("loss", 2, 0.45),
                         ("loss", 3, NAN)], Status.stopped),
    Plan("failed", None, [("loss", 1, 0.05), ("acc", 1, 0.9)], Status.failed),
    Plan("early", None, [("loss", 1, 0.3), ("acc", 1, 0.3), ("loss", 2, 0.25)],
         Status.stopped),
    # promoted: a's curve goes on from iteration 3; b's child reports nothing itself
    Plan("a+", 6, [("loss", 3, 0.65), ("loss", 4, 0.6), ("acc", 4, 0.6), ("loss", 6, 0.5),
                   ("loss", 7, 0.01)], Status.stopped, resume_from="a"),
    Plan("b+", 6, [], Status.completed, resume_from="b"),
]
BY_TRIAL = {p.trial: p for p in PLANS}

# Worked out by hand from the plans (loss: the primary objective; acc: max_global).
EXPECTED = {
    "min": {"a": [0.7, 0.5], "b": [0.75, 0.4], "c": [0.58, 0.7], "nan": None,
            "late-nan": [0.45, 0.5], "failed": None, "early": [0.25, 0.3],
            "a+": [0.5, 0.6], "b+": [0.75, 0.4]},
    "min_global": {"a": [0.7, 0.5], "b": [0.75, 0.4], "c": [0.3, 0.7], "nan": None,
                   "late-nan": [0.45, 0.5], "failed": None, "early": [0.25, 0.3],
                   "a+": [0.5, 0.6], "b+": [0.75, 0.4]},
}
# Budget 6 (the full one, also for jobs without a budget of their own) before budget 2.
RANKED = {"min": ["early", "a+", "c", "b+", "late-nan", "a", "b"],
          "min_global": ["early", "c", "a+", "b+", "late-nan", "a", "b"]}


@dataclass
class Scripted(SearchStrategy):
    """Suggests the plans in order; a promoted trial once its parent's result is heard."""

    supports_multi_objective: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.next = 0
        self.heard: list[str] = []

    def suggest(self) -> Suggestion | NoSuggestion:
        if self.next == len(PLANS):
            return NoSuggestion.DONE
        plan = PLANS[self.next]
        if plan.resume_from is not None and plan.resume_from not in self.heard:
            return NoSuggestion.WAIT
        self.next += 1
        return Suggestion(plan.trial, {"x": 0.5}, plan.budget, plan.resume_from)

    def on_result(self, trial_id: str, values: Any) -> None:
        self.heard.append(trial_id)

    def state(self) -> dict[str, Any]:
        return {"next": self.next, "heard": self.heard}

    def restore(self, state: dict[str, Any]) -> None:
        self.next, self.heard = state["next"], list(state["heard"])


class HandAgent:
    """Claims the queued jobs and writes one report of each per move, then ends it."""

    def __init__(self, store: Store, optimizer_id: str) -> None:
        self.store, self.optimizer_id = store, optimizer_id
        self.held: dict[str, tuple[int, Plan, list[tuple[str, int, float]]]] = {}
        store.heartbeat("hand-agent", queues=[QUEUE], slots=["0", "1", "2"], pid=os.getpid())

    def move(self) -> None:
        for task_id, (attempt, plan, left) in list(self.held.items()):
            if left:
                title, iteration, value = left.pop(0)
                self.store.append_scalars(task_id, [ScalarReport(title, "s", iteration,
                                                                 value, 0.0)],
                                          attempt=attempt)
            else:
                self.store.finish(task_id, attempt, plan.status)
                del self.held[task_id]
        for task in self.store.find_tasks(parent=self.optimizer_id, status=Status.queued):
            attempt = self.store.claim(task.id, "hand-agent")
            assert attempt is not None
            plan = BY_TRIAL[next(t[len("trial:"):] for t in task.tags if t.startswith("trial:"))]
            self.held[task.id] = (attempt, plan, list(plan.reports))


def optimization(store: Store, sign: str) -> tuple[OptimizerConfig, str]:
    base = store.create_task("scoring-tests", "base", parameters={"General/x": 0.0})
    config = OptimizerConfig(
        base_task_id=base.id, hyper_parameters=[UniformParameterRange("x", 0.0, 1.0)],
        objectives=[Objective("loss", "s", sign), Objective("acc", "s", "max_global")],
        strategy="tests.test_scoring:Scripted", max_iteration_per_job=6,
        max_number_of_concurrent_tasks=3, execution_queue=QUEUE)
    config.validate()
    task = store.create_task("scoring-tests", "optimizer")
    store.set_status(task.id, Status.running)
    store.create_optimization(task.id, config.to_dict())
    return config, task.id


def controller(store: Store, config: OptimizerConfig, task_id: str) -> Controller:
    return Controller(store, make_app("memory://"), config, task_id, clock=SimulatedClock())


@pytest.mark.parametrize("sign", ["min", "min_global"])
def test_the_live_loop_the_summary_and_resume_score_and_rank_every_job_alike(
        store: Store, sign: str) -> None:
    # Given the history played through the real controller
    config, optimizer_id = optimization(store, sign)
    live = controller(store, config, optimizer_id)
    agent = HandAgent(store, optimizer_id)
    for _ in range(500):
        if live.step():
            break
        agent.move()
    assert live.strategy.state()["next"] == len(PLANS) and not live.active
    trial_of = {j.task_id: j.trial_id for j in live.jobs.values()}

    # When the store-only summary and a resumed controller read it back
    summary = summarize(store, optimizer_id, top_k=len(PLANS), all_jobs=True)
    resumed = controller(store, config, optimizer_id)
    resumed.step()  # restores from the store; nothing is left to launch

    # Then all three give every job the values worked out by hand
    rows = {trial_of[r.task_id]: r for r in summary.jobs}
    assert {j.trial_id: j.result for j in live.jobs.values()} == EXPECTED[sign]
    assert {t: (job_result(r.objectives) if r.status != Status.failed.value else None)
            for t, r in rows.items()} == EXPECTED[sign]
    assert {j.trial_id: j.result for j in resumed.jobs.values()} == EXPECTED[sign]
    assert all(Status(r.status) in FINAL_STATUSES for r in rows.values())
    # ... rank them alike, budget first
    assert [j.trial_id for j in live.best_jobs()] == RANKED[sign]
    assert [trial_of[r.task_id] for r in summary.top] == RANKED[sign]
    assert [j.trial_id for j in resumed.best_jobs()] == RANKED[sign]
    assert summary.best_task == live.best.task_id == resumed.best.task_id  # type: ignore[union-attr]
    # ... and name the same iteration for each value and reached budget
    for job in live.jobs.values():
        row = rows[job.trial_id]
        if job.result is not None:
            assert row.iteration == job.iteration(), job.trial_id
        assert (row.reached if row.reached is not None else -1) == job.reached(), job.trial_id


def test_a_controller_resumed_while_a_promoted_job_runs_still_counts_its_parents_reports(
        store: Store) -> None:
    # Given a controller that dies while b's promoted job (which reports nothing) runs
    config, optimizer_id = optimization(store, "min")
    first = controller(store, config, optimizer_id)
    agent = HandAgent(store, optimizer_id)
    while not any(plan.trial == "b+" for _, plan, _ in agent.held.values()):
        assert first.step() is None
        agent.move()

    # When a new controller resumes it and the run goes on to the end
    resumed = controller(store, config, optimizer_id)
    for _ in range(500):
        if resumed.step():
            break
        agent.move()

    # Then the promoted job still has its parent's result, and every job its own
    assert {j.trial_id: j.result for j in resumed.jobs.values()} == EXPECTED["min"]
    assert [j.trial_id for j in resumed.best_jobs()] == RANKED["min"]


def test_a_promoted_job_continues_its_parents_tally_as_one_curve() -> None:
    # Given random report sequences split at random into a parent's and its child's
    rng = random.Random(5)
    for objective in (Objective("t", "s", "min"), Objective("t", "s", "max_global")):
        for _ in range(300):
            reports = [(rng.randint(0, 6), rng.choice([NAN, *range(5)]))
                       for _ in range(rng.randint(0, 8))]
            split = rng.randint(0, len(reports))
            whole, parent, child = Tally(objective), Tally(objective), Tally(objective)
            for i, (iteration, value) in enumerate(reports):
                whole.add(iteration, float(value))
                (parent if i < split else child).add(iteration, float(value))
            # Then continuing the parent's tally with the child's is feeding them all
            assert _same(parent.then(child), whole), (reports, split)


def test_a_rerun_counts_only_the_new_attempts_reports() -> None:
    # Given a job whose first attempt reached its budget before its agent was lost
    job = JobTally([Objective("t", "s", "min")], budget=3)
    for iteration, value in ((1, 0.9), (2, 0.1), (3, 0.05)):
        assert job.add(0, iteration, value, attempt=1)
    assert job.budget_reached and not job.add(0, 4, 0.01, attempt=1)
    # When the re-run reports again (the store drops the lost attempt's reports)
    assert job.add(0, 1, 0.8, attempt=2)
    assert not job.add(0, 3, 0.0, attempt=1)  # late, from the lost attempt
    assert job.add(0, 2, 0.7, attempt=2)
    # Then only the new attempt counts, and its own budget report closes it
    assert job.result() == [0.7] and not job.budget_reached


def _same(a: Tally, b: Tally) -> bool:
    def same(x: float | None, y: float | None) -> bool:
        return x == y or (x is not None and y is not None and math.isnan(x) and math.isnan(y))

    return (same(a.last, b.last) and a.last_iteration == b.last_iteration
            and same(a.best, b.best) and a.best_iteration == b.best_iteration
            and a.saw_nan == b.saw_nan and a.count == b.count and a.value() == b.value())
