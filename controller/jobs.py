"""What the controller knows about each job (a cloned task running one trial)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hpo.lifecycle import Status
from hpo.optimization.objective import Objective, counted_value, is_better, job_result
from hpo.records import TaskRecord


@dataclass
class Job:
    task_id: str
    trial_id: str
    parameters: dict[str, Any]
    max_iteration: int | None
    objectives: list[Objective]
    resume_from: str | None = None
    status: Status = Status.queued
    cursor: int = 0  # last scalar id read for this job
    started_at: float | None = None
    ended_at: float | None = None
    finished: bool = False  # the strategy has heard its result
    stop_sent: bool = False
    last: list[float | None] = field(default_factory=list)
    last_iteration: list[int] = field(default_factory=list)
    best: list[float | None] = field(default_factory=list)
    best_iteration: list[int] = field(default_factory=list)
    saw_nan: bool = False
    # Reports after the one that reached the iteration budget do not count: jobs stopped
    # at the same budget are compared at the same iteration.
    budget_reached: bool = False
    # Set when the job ends: the values that count, None for a failed job.
    result: list[float] | None = None

    def __post_init__(self) -> None:
        n = len(self.objectives)
        self.last = [None] * n
        self.last_iteration = [-1] * n
        self.best = [None] * n
        self.best_iteration = [-1] * n

    def inherit(self, parent: Job) -> None:
        """Start from the reports of the job this one continues from a checkpoint: its
        curve goes on from there (and a parent that already trained to the end leaves
        this job nothing to report but a result all the same)."""
        self.last = list(parent.last)
        self.last_iteration = list(parent.last_iteration)
        self.best = list(parent.best)
        self.best_iteration = list(parent.best_iteration)
        self.saw_nan = parent.saw_nan

    def objective_index(self, title: str, series: str) -> int | None:
        for i, objective in enumerate(self.objectives):
            if objective.title == title and objective.series == series:
                return i
        return None

    def record(self, index: int, iteration: int, value: float) -> None:
        """One reported objective value."""
        if math.isnan(value):
            self.saw_nan = True
        if iteration >= self.last_iteration[index]:
            self.last[index] = value
            self.last_iteration[index] = iteration
        if is_better(self.objectives[index], value, self.best[index]):
            self.best[index] = value
            self.best_iteration[index] = iteration

    def values(self) -> list[float] | None:
        """The objective values that count (hpo.optimization.objective's rule, on the
        reports up to the iteration budget); None: the job counts as failed."""
        return job_result([counted_value(o, self.last[i], self.best[i], self.saw_nan)
                           for i, o in enumerate(self.objectives)])

    def iteration(self) -> int:
        """The iteration the primary objective value comes from."""
        if self.objectives[0].use_best:
            return self.best_iteration[0]
        return self.last_iteration[0]

    def update_from(self, task: TaskRecord) -> None:
        self.status = task.status
        self.started_at = task.started_at
        self.ended_at = task.ended_at

    def compute_seconds(self, now: float) -> float:
        if self.started_at is None:
            return 0.0
        return max(0.0, (self.ended_at or now) - self.started_at)
