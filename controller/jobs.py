"""What the controller knows about each job (a cloned task running one trial)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpo.lifecycle import Status
from hpo.optimization.objective import Objective
from hpo.optimization.tally import JobTally
from hpo.records import TaskRecord


@dataclass
class Job:
    task_id: str
    trial_id: str
    parameters: dict[str, Any]
    max_iteration: int | None  # the budget its strategy gave it (BOHB, ASHA)
    objectives: list[Objective]
    resume_from: str | None = None
    # The iteration whose first report ends what counts (hpo.optimization.tally).
    budget: int | None = None
    status: Status = Status.queued
    cursor: int = 0  # last scalar id read for this job
    started_at: float | None = None
    ended_at: float | None = None
    finished: bool = False  # the strategy has heard its result
    stop_sent: bool = False
    # The reports that count, by the one rule the summary and resume use too.
    reports: JobTally = field(init=False)
    # Set when the job ends: the values that count, None for a failed job.
    result: list[float] | None = None

    def __post_init__(self) -> None:
        self.reports = JobTally(list(self.objectives), self.budget)

    def inherit(self, parent: Job) -> None:
        """Start from the reports of the job this one continues from a checkpoint: its
        curve goes on from there (and a parent that already trained to the end leaves
        this job nothing to report but a result all the same)."""
        self.reports.continue_from(parent.reports.scored())

    def objective_index(self, title: str, series: str) -> int | None:
        for i, objective in enumerate(self.objectives):
            if objective.title == title and objective.series == series:
                return i
        return None

    def record(self, index: int, iteration: int, value: float, attempt: int = 0) -> bool:
        """One reported objective value; False when it does not count (it came after the
        report that reached the iteration budget, or from a lost attempt)."""
        return self.reports.add(index, iteration, value, attempt)

    @property
    def budget_reached(self) -> bool:
        return self.reports.budget_reached

    def last_values(self) -> list[float | None]:
        """Each objective's last value so far, for the strategy's ``on_report``."""
        return [t.last for t in self.reports.scored()]

    def values(self) -> list[float] | None:
        """The objective values that count (hpo.optimization.objective's rule, on the
        reports up to the iteration budget); None: the job counts as failed."""
        return self.reports.result()

    def reached(self) -> int:
        """The last iteration it reported of the primary objective (-1: none)."""
        return self.reports.scored()[0].last_iteration

    def iteration(self) -> int:
        """The iteration the primary objective value comes from."""
        primary = self.reports.scored()[0]
        return primary.best_iteration if self.objectives[0].use_best else primary.last_iteration

    def update_from(self, task: TaskRecord) -> None:
        self.status = task.status
        self.started_at = task.started_at
        self.ended_at = task.ended_at

    def compute_seconds(self, now: float) -> float:
        if self.started_at is None:
            return 0.0
        return max(0.0, (self.ended_at or now) - self.started_at)
