"""Which of a job's reports count, and what they add up to, in one place for the three
readers that score a job: the controller's live loop (``Job``), resume and the
store-only summary (``hpo.optimization.summary``: ``hpo-controller status``, ``report``,
``hpo ui``).

The rule:

* A job's iteration budget is its own (``budget:<n>``: BOHB, ASHA) or else the
  optimization's ``max_iteration_per_job`` (``iteration_budget``). The first report of
  the primary objective at or past it, in the order reported (by row id), is the last
  report that counts, of every objective: the stop takes a moment to arrive, and the
  jobs of one rung are compared at the same iteration.
* Of the reports that count, an objective keeps the last value (at the highest
  iteration; a later report wins a tie), the best value and whether one was NaN
  (``Tally``); ``hpo.optimization.objective`` turns that into the value that counts.
* A job that continues another's checkpoint (``resume:<task id>``, a promoted ASHA
  trial) continues that job's curve: its own reports count after its parent's
  (``Tally.then``), so one that reports nothing itself still has its parent's result.
  Its budget cuts only its own reports.
* A re-run of a job (a new attempt) starts its own reports over: the store drops the
  lost attempt's (``Store.drop_earlier_attempts``).

The controller feeds reports one by one (``JobTally.add``). The summary and resume read
``Store.scalar_summary`` with each task's budget, which applies the cut in SQL, and
continue each job from its parent's tally (``stored_tallies``): the same arithmetic as
feeding the parent's reports and then the job's own to one tally.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from hpo import relations
from hpo.optimization.objective import Objective, counted_value, is_better, job_result
from hpo.optimization.ranking import budget_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hpo.records import MetricSummary, TaskRecord
    from hpo.store import Store


def iteration_budget(own: int | None, full: int | None) -> int | None:
    """The iteration a job is stopped at: its own budget (BOHB, ASHA; 0 is none), else
    the optimization's ``max_iteration_per_job``; None: it runs until it ends."""
    return own or full


@dataclass
class Tally:
    """The reports of one objective of one job that count, reduced to what scores it."""

    objective: Objective
    last: float | None = None
    last_iteration: int = -1
    best: float | None = None
    best_iteration: int = -1  # -1 also when only a store summary was read (it has no such)
    saw_nan: bool = False
    count: int = 0

    def add(self, iteration: int, value: float) -> None:
        """One report, in the order reported."""
        if math.isnan(value):
            self.saw_nan = True
        if not self.count or iteration >= self.last_iteration:
            self.last, self.last_iteration = value, iteration
        if is_better(self.objective, value, self.best):
            self.best, self.best_iteration = value, iteration
        self.count += 1

    def then(self, later: Tally) -> Tally:
        """This tally continued by ``later`` (a promoted job's own reports after its
        parent's): what adding ``later``'s reports after this one's would give."""
        took_last = later.count > 0 and (not self.count
                                     or later.last_iteration >= self.last_iteration)
        last = later if took_last else self
        took_best = later.best is not None and is_better(self.objective, later.best,
                                                         self.best)
        best = later if took_best else self
        return Tally(self.objective, last.last, last.last_iteration, best.best,
                     best.best_iteration, self.saw_nan or later.saw_nan,
                     self.count + later.count)

    @classmethod
    def of_summary(cls, objective: Objective, metric: MetricSummary | None) -> Tally:
        """The tally of a store summary of the objective's series (None: no report)."""
        if metric is None:
            return cls(objective)
        best = metric.min if objective.minimize else metric.max
        return cls(objective, last=metric.last, last_iteration=metric.last_iteration,
                   best=None if math.isnan(best) else best,  # NaN: every report was NaN
                   saw_nan=metric.nans > 0, count=metric.count)

    def value(self) -> float | None:
        """The value that counts (``objective.counted_value``)."""
        return counted_value(self.objective, self.last, self.best, self.saw_nan)


@dataclass
class JobTally:
    """Every objective's tally of one job: its own reports up to its iteration budget,
    after those of the job it continues (``inherited``)."""

    objectives: list[Objective]
    budget: int | None = None
    own: list[Tally] = field(default_factory=list)
    inherited: list[Tally] | None = None
    budget_reached: bool = False  # later reports do not count
    attempt: int = 0  # the attempt whose reports ``own`` holds

    def __post_init__(self) -> None:
        if not self.own:
            self.own = [Tally(o) for o in self.objectives]

    def add(self, index: int, iteration: int, value: float, attempt: int = 0) -> bool:
        """One report of objective ``index``, in the order reported; False when it does
        not count (after the report that reached the budget, or of a lost attempt)."""
        if attempt > self.attempt:  # a re-run: the lost attempt's reports are dropped
            self.own = [Tally(o) for o in self.objectives]
            self.budget_reached, self.attempt = False, attempt
        if self.budget_reached or attempt < self.attempt:
            return False
        self.own[index].add(iteration, value)
        if index == 0 and self.budget is not None and iteration >= self.budget:
            self.budget_reached = True
        return True

    def continue_from(self, parent: list[Tally]) -> None:
        """Count the reports of the job this one continues from a checkpoint first."""
        self.inherited = [replace(t) for t in parent]

    def scored(self) -> list[Tally]:
        """Every objective's tally, the inherited reports continued by the own."""
        if self.inherited is None:
            return self.own
        return [p.then(o) for p, o in zip(self.inherited, self.own, strict=True)]

    def values(self) -> list[float | None]:
        return [t.value() for t in self.scored()]

    def result(self) -> list[float] | None:
        """The job's result (``objective.job_result``); None: it counts as failed."""
        return job_result(self.values())


def stored_tallies(store: Store, objectives: Sequence[Objective],
                   children: Sequence[TaskRecord], full_budget: int | None
                   ) -> dict[str, JobTally]:
    """Each child's ``JobTally`` as the live loop holds it at the job's end, from the
    store: its own reports up to its budget (one ``scalar_summary`` per objective title,
    the cut made in SQL), after its parent's when its ``resume:`` parent is a child."""
    objectives = list(objectives)
    primary = objectives[0]
    budgets = {c.id: b for c in children
               if (b := iteration_budget(budget_of(c.tags), full_budget)) is not None}
    ids = [c.id for c in children]
    metrics: dict[tuple[str, str, str], MetricSummary] = {}
    for title in sorted({o.title for o in objectives}):
        series = {o.series for o in objectives if o.title == title}
        for m in store.scalar_summary(
                ids, title=title, series=next(iter(series)) if len(series) == 1 else None,
                budgets=budgets, budget_series=(primary.title, primary.series)):
            metrics[(m.task_id, m.title, m.series)] = m
    tallies: dict[str, JobTally] = {}
    for child in children:
        own = [Tally.of_summary(o, metrics.get((child.id, o.title, o.series)))
               for o in objectives]
        budget = budgets.get(child.id)
        tallies[child.id] = JobTally(
            objectives, budget, own,
            budget_reached=budget is not None and own[0].count > 0
            and own[0].last_iteration >= budget)
    parents = {c.id: p for c in children
               if (p := relations.tag_value(c.tags, relations.RESUME)) in tallies}
    _continue_chains(tallies, parents)
    return tallies


def _continue_chains(tallies: Mapping[str, JobTally], parents: Mapping[str, str]) -> None:
    """Each job continues its parent's scored tally, the parent's own chain first (ASHA
    promotes a trial rung after rung)."""
    done: set[str] = set()

    def settle(task_id: str, seen: frozenset[str]) -> None:
        parent = parents.get(task_id)
        if task_id in done or parent is None or parent in seen:  # seen: a malformed loop
            done.add(task_id)
            return
        settle(parent, seen | {task_id})
        tallies[task_id].continue_from(tallies[parent].scored())
        done.add(task_id)

    for task_id in parents:
        settle(task_id, frozenset())


def replay(store: Store, objective: Objective, task_id: str,
           tasks: Mapping[str, TaskRecord], full_budget: int | None) -> Tally:
    """The primary ``objective``'s tally of one job fed report by report from the store,
    after its ``resume:`` parents' (those in ``tasks``): for what a summary does not
    give, the iteration of the best value. Reads the series of each job in the chain."""
    chain = [task_id]
    parent = relations.tag_value(tasks[task_id].tags, relations.RESUME)
    while parent is not None and parent in tasks and parent not in chain:
        chain.append(parent)
        parent = relations.tag_value(tasks[parent].tags, relations.RESUME)
    scored: list[Tally] = []
    for job_id in reversed(chain):  # the first parent first
        job = JobTally([objective], iteration_budget(budget_of(tasks[job_id].tags),
                                                     full_budget))
        if scored:
            job.continue_from(scored)
        for s in store.task_scalars(job_id, title=objective.title, series=objective.series):
            job.add(0, s.iteration, s.value, s.attempt)
        scored = job.scored()
    return scored[0]
