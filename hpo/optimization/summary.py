"""An optimization as the store sees it: progress, budget and the best jobs, read from
the store only (no controller object), so ``hpo-controller status`` works from any
process, while the optimization runs or after it ended.

A job's objective follows the controller's rule (``hpo.optimization.objective``): sign
``min``/``max`` counts the last reported value, ``min_global``/``max_global`` the best
one; a job that failed, never reported its objective, or reported NaN has none. How
each job ended is said in one vocabulary (``hpo.optimization.ends``). The reports are
the ones the controller counts (``hpo.optimization.tally``): up to the job's iteration
budget, after those of the job it continues. Only finished jobs (completed or stopped)
compete for "best".
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hpo import relations
from hpo import typed_params as P
from hpo.lifecycle import FINAL_STATUSES, Status, TaskType
from hpo.optimization.config import OptimizerConfig
from hpo.optimization.ends import End, count_ends, end_of
from hpo.optimization.objective import Objective, job_result
from hpo.optimization.ranking import budget_of, rank_key, reached_budget
from hpo.optimization.tally import JobTally, replay, stored_tallies
from hpo.records import TaskRecord
from hpo.store import Store


@dataclass
class JobRow:
    task_id: str
    name: str
    status: str
    objective: float | None  # the primary objective; None: failed or not reported yet
    objectives: list[float | None]  # every objective, in the config's order
    iteration: int | None  # the iteration the primary objective value comes from
    parameters: dict[str, Any]  # the tuned parameters, by qualified name
    worker: str | None
    started_at: float | None
    ended_at: float | None
    duration_s: float | None
    message: str | None
    budget: int | None = None  # the iteration budget its strategy gave it (BOHB, ASHA)
    reached: int | None = None  # the last iteration it reported of the primary objective
    end: str | None = None  # how it ended (an ``End``'s words); None while it runs

    @property
    def state(self) -> str:
        """What a table's status column says: how it ended, else its status."""
        return self.end or self.status


@dataclass
class Budget:
    jobs_launched: int
    total_max_jobs: int | None
    compute_min: float
    compute_time_limit: float | None  # minutes
    wall_min: float
    optimization_time_limit: float | None  # minutes


@dataclass
class OptimizationSummary:
    id: str
    project: str
    name: str
    status: str
    message: str | None
    strategy: str
    execution_queue: str
    objectives: list[dict[str, str]]
    parameters: list[str]  # the tuned parameters' qualified names
    counts: dict[str, int]  # children by status
    launched: int
    done: int  # in a final status
    running: int
    queued: int  # queued or created
    failed: int  # failed (``End.failed``)
    best_value: float | None
    best_task: str | None
    budget: Budget
    top: list[JobRow] = field(default_factory=list)  # the best finished jobs, best first
    jobs: list[JobRow] = field(default_factory=list)  # every job, newest first (all_jobs)
    # The finished jobs by how they ended (``hpo.optimization.ends``), every end's words.
    ends: dict[str, int] = field(default_factory=lambda: count_ends(()))
    started: bool = True  # False: created, never started (``was_started``)

    def to_dict(self) -> dict[str, Any]:
        return finite(asdict(self))


def newest_optimizer(store: Store) -> str:
    """The id of the newest optimizer task."""
    from hpo.errors import TaskNotFound

    found = store.find_tasks(type=TaskType.optimizer, limit=1)
    if not found:
        from hpo.store.engine import safe_url

        raise TaskNotFound(f"no optimization in the store at {safe_url(store.url)} yet: "
                           "start one with `hpo-controller start hpo.yaml`, or point "
                           "HPO_STORE_URL / --store at the store that has it")
    return found[0].id


def load_config(store: Store, optimizer_id: str) -> OptimizerConfig:
    config, _state = store.load_optimization(optimizer_id)
    return OptimizerConfig.from_dict(config)


def summarize(store: Store, optimizer_id: str, top_k: int = 10, *, all_jobs: bool = False,
              children: list[TaskRecord] | None = None) -> OptimizationSummary:
    """Progress, budget and the ``top_k`` best finished jobs of an optimization (and
    every job with ``all_jobs``). ``children``: its child tasks, when the caller has
    just read them. A display refreshed while it runs reads it with ``LiveSummary``."""
    optimizer_id = store.resolve_task_id(optimizer_id)
    saved, state = store.load_optimization(optimizer_id)
    config = OptimizerConfig.from_dict(saved)
    task = store.get_task(optimizer_id)
    if children is None:
        children = store.find_tasks(parent=optimizer_id)
    rows = job_rows(store, config, children)
    now = time.time()
    counts = {s.value: 0 for s in Status}
    for child in children:
        counts[child.status.value] += 1
    finished = [r for r in rows if Status(r.status) in FINAL_STATUSES]
    ends = count_ends(End(r.end) for r in finished if r.end is not None)
    ranked = best_rows(rows, config.objectives[0], config.max_iteration_per_job)
    top = ranked[:top_k]
    _fill_best_iterations(store, config, top, {c.id: c for c in children})
    compute_s = sum(max(0.0, (c.ended_at or now) - c.started_at)
                    for c in children if c.started_at is not None)
    wall_s = (max(0.0, (task.ended_at or now) - task.started_at)
              if task.started_at is not None else 0.0)
    return OptimizationSummary(
        id=optimizer_id, project=task.project, name=task.name, status=task.status.value,
        message=task.status_message, strategy=config.strategy,
        execution_queue=config.execution_queue,
        objectives=[asdict(o) for o in config.objectives],
        parameters=tuned_keys(config),
        counts=counts, launched=len(children), done=len(finished),
        running=counts[Status.running.value],
        queued=counts[Status.queued.value] + counts[Status.created.value],
        failed=ends[End.failed.value], ends=ends,
        started=was_started(task, state, len(children)),
        best_value=ranked[0].objective if ranked else None,
        best_task=ranked[0].task_id if ranked else None,
        budget=Budget(
            jobs_launched=len(children), total_max_jobs=config.total_max_jobs,
            compute_min=compute_s / 60, compute_time_limit=config.compute_time_limit,
            wall_min=wall_s / 60, optimization_time_limit=config.optimization_time_limit),
        top=top, jobs=rows if all_jobs else [],
    )


def was_started(task: TaskRecord, state: dict[str, Any] | None, launched: int) -> bool:
    """Whether the optimization's controller ever ran. It saves its state as it launches
    and when it ends, so no state, no job and a task not running mean it was created and
    never started (a script that built a HyperParameterOptimizer and never called
    start(), whose own task then completed)."""
    return state is not None or launched > 0 or task.status is Status.running


NEVER_STARTED = "never started"  # what the status column says of one (``was_started``)


def shown_status(status: str, started: bool) -> str:
    """An optimization's status as tables show it: ``never started`` for one that was
    created and never started, rather than its task's status (``completed 0/20``)."""
    return status if started else NEVER_STARTED


def tuned_keys(config: OptimizerConfig) -> list[str]:
    """The qualified names (``General/lr``) of every tuned parameter, in config order."""
    keys: list[str] = []
    for param in config.hyper_parameters:
        for name in param.names:
            key = P.qualify(name)
            if key not in keys:
                keys.append(key)
    return keys


def job_rows(store: Store, config: OptimizerConfig, children: list[TaskRecord]
             ) -> list[JobRow]:
    """One row per child task, with its objective values (newest child first), from
    the reports the controller counts (``hpo.optimization.tally``: up to the job's
    iteration budget, after those of the job it continues)."""
    return _rows_of(store, config, children, {c.id: c for c in children})


def _rows_of(store: Store, config: OptimizerConfig, tasks: list[TaskRecord],
             children: Mapping[str, TaskRecord]) -> list[JobRow]:
    """The rows of ``tasks``, some of the ``children`` (by id): their tallies read
    after those of the children they continue."""
    tallies = stored_tallies(store, config.objectives, _with_ancestors(tasks, children),
                             config.max_iteration_per_job)
    keys = tuned_keys(config)
    now = time.time()
    return [_row(config, keys, child, tallies[child.id], now) for child in tasks]


def _row(config: OptimizerConfig, keys: list[str], child: TaskRecord, tally: JobTally,
         now: float) -> JobRow:
    scored = tally.scored()
    values: list[float | None] = [t.value() for t in scored]
    if child.status is Status.failed:  # its reports do not count (as in the controller)
        values = [None] * len(values)
    result = job_result(values)  # one missing objective: no result, as in the controller
    objective = result[0] if result is not None else None
    primary = scored[0]
    iteration = (primary.last_iteration if objective is not None
                 and not config.objectives[0].use_best else None)
    return JobRow(
        task_id=child.id, name=child.name, status=child.status.value,
        objective=objective, objectives=values, iteration=iteration,
        parameters={k: child.parameters[k] for k in keys if k in child.parameters},
        worker=child.worker, started_at=child.started_at, ended_at=child.ended_at,
        duration_s=(max(0.0, (child.ended_at or now) - child.started_at)
                    if child.started_at is not None else None),
        message=child.status_message, budget=budget_of(child.tags),
        reached=primary.last_iteration if primary.count else None,
        end=_end_words(child, objective is not None),
    )


def _with_ancestors(tasks: list[TaskRecord], children: Mapping[str, TaskRecord]
                    ) -> list[TaskRecord]:
    """``tasks`` and the children they continue (``resume:``), transitively: a job's
    tally counts its parent's reports first."""
    chosen = {t.id: t for t in tasks}
    todo = list(tasks)
    while todo:
        parent = children.get(relations.tag_value(todo.pop().tags, relations.RESUME) or "")
        if parent is not None and parent.id not in chosen:
            chosen[parent.id] = parent
            todo.append(parent)
    return list(chosen.values())


class LiveSummary:
    """An optimization's summary kept while it runs, for the display of ``hpo-controller
    start``: what ``summarize(..., all_jobs=True)`` returns, at a cost per read in
    proportion to the jobs that changed, not to every job so far (the display reads
    it every moment, in the controller's process, over ten thousand jobs).

    The first read reads every child. Later ones read only the children the caller
    names (``check``: the controller's new and active jobs, from its memory) and those
    not finished at the last read; a finished child whose record is unchanged keeps
    its row, and the counts, the compute time and the ranking are updated by the rows
    that changed. A finished child changed by someone else (a renamed job) shows in
    the final summary, read whole with ``summarize``."""

    def __init__(self, optimizer_id: str, top_k: int = 10) -> None:
        self.optimizer_id = optimizer_id
        self.top_k = top_k
        self.ended: list[JobRow] = []  # rows that reached a final status at the last read
        self._clear()

    def _clear(self) -> None:
        self._config: OptimizerConfig | None = None
        self._saved = False  # the controller saved its state (``was_started``)
        self._records: dict[str, TaskRecord] = {}
        self._rows: list[JobRow] = []  # every child's row, oldest first
        self._pos: dict[str, int] = {}  # a child's index in _rows
        self._open: set[str] = set()  # children not finished: read again each time
        self._waiting: set[str] = set()  # named by the caller, not in the store yet
        self._ended: list[str] = []  # children that reached a final status at this read
        self._counts = {s.value: 0 for s in Status}
        self._ends = count_ends(())
        self._ranked: list[tuple[tuple[float, float, float, str], str]] = []
        self._keys: dict[str, tuple[float, float, float, str]] = {}
        self._spent: dict[str, float] = {}  # compute seconds of the children that ended
        self._spent_s = 0.0
        self._clocks: dict[str, float] = {}  # started_at of the children still running
        self._best_iterations: dict[str, tuple[float, int | None]] = {}

    def read(self, store: Store, check: Iterable[str] = ()) -> OptimizationSummary:
        """The summary now. ``check``: ids of children that may be new or have changed
        since the last read (the controller's new and active jobs)."""
        try:
            return self._read(store, check)
        except BaseException:
            self._clear()  # no half-applied read: the next one reads every child
            raise

    def _read(self, store: Store, check: Iterable[str]) -> OptimizationSummary:
        if self._config is None:
            self.optimizer_id = store.resolve_task_id(self.optimizer_id)
            saved, state = store.load_optimization(self.optimizer_id)
            self._config, self._saved = OptimizerConfig.from_dict(saved), state is not None
            children = store.find_tasks(parent=self.optimizer_id)
            self._waiting.update(set(check) - {c.id for c in children})
            self._apply(store, self._config, children[::-1])
        else:
            self._waiting.update(check)
            found = store.get_tasks([*self._open, *(self._waiting - self._open)])
            self._apply(store, self._config, found)
        task = store.get_task(self.optimizer_id)
        if not self._saved and not self._rows:  # saved as it launches the first job
            self._saved = store.load_optimization(self.optimizer_id)[1] is not None
        return self._summary(store, self._config, task)

    def _apply(self, store: Store, config: OptimizerConfig, found: list[TaskRecord]) -> None:
        """Take the records read (oldest first): new and changed children get a row."""
        self._waiting.difference_update(c.id for c in found)
        fresh = [c for c in found if c.status not in FINAL_STATUSES or c.id not in self._pos
                 or self._records[c.id].updated_at != c.updated_at]
        was_final = {c.id for c in fresh if c.id in self._pos
                     and self._records[c.id].status in FINAL_STATUSES}
        self._records.update((c.id, c) for c in fresh)
        self._place([c for c in fresh if c.id not in self._pos])
        rows = _rows_of(store, config, fresh, self._records) if fresh else []
        for child, row in zip(fresh, rows, strict=True):
            self._replace(child, row, config)
        self._ended = [c.id for c in fresh
                       if c.status in FINAL_STATUSES and c.id not in was_final]

    def _place(self, new: list[TaskRecord]) -> None:
        """New children at the end of the oldest-first list: after every child known,
        unless one was created earlier (another clock), when the list is sorted again."""
        if not new:
            return
        newest_first = sorted(new, key=_newest_first)
        in_order = not self._rows or _newest_first(newest_first[-1]) < _newest_first(
            self._records[self._rows[-1].task_id])
        for child in reversed(newest_first):
            self._pos[child.id] = len(self._rows)
            self._rows.append(_PLACEHOLDER)
        if not in_order:
            ids = sorted(self._pos, key=lambda i: _newest_first(self._records[i]), reverse=True)
            self._rows = [self._rows[self._pos[i]] for i in ids]
            self._pos = {i: n for n, i in enumerate(ids)}

    def _replace(self, child: TaskRecord, row: JobRow, config: OptimizerConfig) -> None:
        """``child``'s row and its share of the counts, compute time and ranking."""
        old = self._rows[self._pos[child.id]]
        if old is not _PLACEHOLDER:
            self._counts[old.status] -= 1
            if old.end is not None and Status(old.status) in FINAL_STATUSES:
                self._ends[old.end] -= 1
            key = self._keys.pop(child.id, None)
            if key is not None:
                del self._ranked[bisect.bisect_left(self._ranked, (key, child.id))]
        self._rows[self._pos[child.id]] = row
        self._counts[row.status] += 1
        final = child.status in FINAL_STATUSES
        if final and row.end is not None:
            self._ends[row.end] += 1
        if final and row.objective is not None:
            key = _rank_key(row, config.objectives[0], config.max_iteration_per_job)
            self._keys[child.id] = key
            bisect.insort(self._ranked, (key, child.id))
        (self._open.discard if final else self._open.add)(child.id)
        self._clock(child)

    def _clock(self, child: TaskRecord) -> None:
        """Its compute time: fixed once it ended (or never started), else the clock's."""
        self._clocks.pop(child.id, None)
        if child.id in self._spent:  # changed after it ended (reset): summed again
            del self._spent[child.id]
            self._spent_s = sum(self._spent.values())
        if child.started_at is None:
            return
        if child.ended_at is None:
            self._clocks[child.id] = child.started_at
        else:
            spent = max(0.0, child.ended_at - child.started_at)
            self._spent[child.id] = spent
            self._spent_s += spent

    def _summary(self, store: Store, config: OptimizerConfig, task: TaskRecord
                 ) -> OptimizationSummary:
        now = time.time()
        top = self._top(store, config)
        jobs = self._rows[::-1]
        for row in top:  # the rows shown with their best iteration, as summarize's are
            jobs[len(jobs) - 1 - self._pos[row.task_id]] = row
        self.ended = sorted((jobs[len(jobs) - 1 - self._pos[i]] for i in self._ended),
                            key=lambda r: self._pos[r.task_id])
        launched = len(self._rows)
        compute_s = self._spent_s + sum(max(0.0, now - t) for t in self._clocks.values())
        wall_s = (max(0.0, (task.ended_at or now) - task.started_at)
                  if task.started_at is not None else 0.0)
        counts = dict(self._counts)
        return OptimizationSummary(
            id=self.optimizer_id, project=task.project, name=task.name,
            status=task.status.value, message=task.status_message, strategy=config.strategy,
            execution_queue=config.execution_queue,
            objectives=[asdict(o) for o in config.objectives],
            parameters=tuned_keys(config),
            counts=counts, launched=launched,
            done=sum(counts[s.value] for s in FINAL_STATUSES),
            running=counts[Status.running.value],
            queued=counts[Status.queued.value] + counts[Status.created.value],
            failed=self._ends[End.failed.value], ends=dict(self._ends),
            started=was_started(task, {} if self._saved else None, launched),
            best_value=top[0].objective if top else None,
            best_task=top[0].task_id if top else None,
            budget=Budget(
                jobs_launched=launched, total_max_jobs=config.total_max_jobs,
                compute_min=compute_s / 60, compute_time_limit=config.compute_time_limit,
                wall_min=wall_s / 60, optimization_time_limit=config.optimization_time_limit),
            top=top, jobs=jobs,
        )

    def _top(self, store: Store, config: OptimizerConfig) -> list[JobRow]:
        """The ``top_k`` best finished rows; for min_global/max_global, copies with the
        iteration of the best value (replayed once per job, as it is final)."""
        top = [self._rows[self._pos[i]] for _key, i in self._ranked[:self.top_k]]
        if not config.objectives[0].use_best:
            return top
        shown = []
        for row in top:
            updated_at = self._records[row.task_id].updated_at
            kept = self._best_iterations.get(row.task_id)
            if kept is None or kept[0] != updated_at:
                copy = replace(row)
                _fill_best_iterations(store, config, [copy], self._records)
                kept = self._best_iterations[row.task_id] = (updated_at, copy.iteration)
            shown.append(replace(row, iteration=kept[1]))
        return shown


# A row not computed yet, in the place of a new child (LiveSummary._place).
_PLACEHOLDER = JobRow("", "", "", None, [], None, {}, None, None, None, None, None)


def _newest_first(task: TaskRecord) -> tuple[float, str]:
    """The order of ``find_tasks``: newest first, then by id."""
    return (-task.created_at, task.id)


def _end_words(task: TaskRecord, has_result: bool) -> str | None:
    end = end_of(task, has_result)
    return None if end is None else end.value


def best_rows(rows: list[JobRow], primary: Objective, full_budget: int | None = None
              ) -> list[JobRow]:
    """Finished rows with a valid objective, best first: by the controller's rule, the
    largest iteration budget first (BOHB, ASHA), then the objective."""
    scored = [r for r in rows if Status(r.status) in FINAL_STATUSES and r.objective is not None]
    scored.sort(key=lambda r: _rank_key(r, primary, full_budget))
    return scored


def _rank_key(row: JobRow, primary: Objective, full_budget: int | None
              ) -> tuple[float, float, float, str]:
    return rank_key(
        row.objective or 0.0,
        reached_budget(row.budget, row.reached, row.status == Status.completed.value),
        full_budget, primary.minimize, ended_at=row.ended_at, task_id=row.task_id)


def _fill_best_iterations(store: Store, config: OptimizerConfig, rows: list[JobRow],
                          tasks: Mapping[str, TaskRecord]) -> None:
    """For min_global/max_global the iteration of the best value needs the series itself:
    replayed by the controller's rule for the few rows shown only."""
    primary = config.objectives[0]
    if not primary.use_best:
        return
    for row in rows:
        row.iteration = replay(store, primary, row.task_id, tasks,
                               config.max_iteration_per_job).best_iteration


@dataclass
class OptimizationListing:
    id: str
    project: str
    name: str
    status: str
    created_at: float
    launched: int
    total_max_jobs: int | None
    best_value: float | None
    best_task: str | None
    objective: str | None  # "title/series sign"
    started: bool = True  # False: created, never started (``was_started``)

    @property
    def shown_status(self) -> str:
        return shown_status(self.status, self.started)


def list_optimizations(store: Store, limit: int | None = 50) -> list[OptimizationListing]:
    """Optimizer tasks, newest first, with their jobs launched and best objective."""
    return [listing(store, task)
            for task in store.find_tasks(type=TaskType.optimizer, limit=limit)]


def listing(store: Store, task: TaskRecord, config: OptimizerConfig | None = None
            ) -> OptimizationListing:
    """One optimizer task's line in a list: its jobs launched and best objective
    (``config``: its optimization's, when the caller has just read it)."""
    try:
        saved, state = store.load_optimization(task.id)
        config = config or OptimizerConfig.from_dict(saved)
    except Exception:  # an optimizer task without a saved optimization
        config, state = None, None
    if config is None:
        launched = store.count_tasks(parent=task.id)
        return OptimizationListing(task.id, task.project, task.name, task.status.value,
                                   task.created_at, launched, None, None, None, None,
                                   was_started(task, state, launched))
    children = store.find_tasks(parent=task.id)
    ranked = best_rows(job_rows(store, config, children), config.objectives[0],
                       config.max_iteration_per_job)
    o = config.objectives[0]
    return OptimizationListing(
        task.id, task.project, task.name, task.status.value, task.created_at,
        len(children), config.total_max_jobs,
        ranked[0].objective if ranked else None, ranked[0].task_id if ranked else None,
        f"{o.title}/{o.series} {o.sign}", was_started(task, state, len(children)))


def finite(value: Any) -> Any:
    """NaN and infinities as None (inside dicts, lists and tuples too), so the JSON is
    standard and a CSV cell empty."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def short_key(key: str) -> str:
    """``General/lr`` -> ``lr``; other sections keep their name."""
    return key[len("General/"):] if key.startswith("General/") else key
