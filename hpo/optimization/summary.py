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

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from hpo import relations
from hpo import typed_params as P
from hpo.lifecycle import FINAL_STATUSES, Status, TaskType
from hpo.optimization.config import OptimizerConfig
from hpo.optimization.ends import End, count_ends, end_of
from hpo.optimization.objective import Objective, job_result
from hpo.optimization.ranking import budget_of, rank_key, reached_budget
from hpo.optimization.tally import replay, stored_tallies
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
              children: list[TaskRecord] | None = None, cache: RowCache | None = None
              ) -> OptimizationSummary:
    """Progress, budget and the ``top_k`` best finished jobs of an optimization (and
    every job with ``all_jobs``). ``children``: its child tasks, when the caller has
    just read them; ``cache``: finished jobs' rows of an earlier read (``RowCache``)."""
    optimizer_id = store.resolve_task_id(optimizer_id)
    saved, state = store.load_optimization(optimizer_id)
    config = OptimizerConfig.from_dict(saved)
    task = store.get_task(optimizer_id)
    if children is None:
        children = store.find_tasks(parent=optimizer_id)
    rows = job_rows(store, config, children, cache)
    now = time.time()
    counts = {s.value: 0 for s in Status}
    for child in children:
        counts[child.status.value] += 1
    finished = [r for r in rows if Status(r.status) in FINAL_STATUSES]
    ends = count_ends(End(r.end) for r in finished if r.end is not None)
    ranked = best_rows(rows, config.objectives[0], config.max_iteration_per_job)
    top = ranked[:top_k]
    _fill_best_iterations(store, config, top, children)
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


class RowCache:
    """The rows of finished jobs, kept between reads of one optimization (a display
    refreshed while it runs): a finished job's row does not change, so each read
    computes only the rows of jobs still going, and a read costs in proportion to them,
    not to every job so far. A task changed since (its ``updated_at``) is read again."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[float, JobRow]] = {}

    def get(self, child: TaskRecord) -> JobRow | None:
        kept = self.rows.get(child.id)
        return kept[1] if kept is not None and kept[0] == child.updated_at else None

    def keep(self, child: TaskRecord, row: JobRow) -> None:
        if child.status in FINAL_STATUSES:
            self.rows[child.id] = (child.updated_at, row)


def job_rows(store: Store, config: OptimizerConfig, children: list[TaskRecord],
             cache: RowCache | None = None) -> list[JobRow]:
    """One row per child task, with its objective values (newest child first), from
    the reports the controller counts (``hpo.optimization.tally``: up to the job's
    iteration budget, after those of the job it continues). ``cache``: rows of finished
    jobs from an earlier read, used and filled."""
    cached = {c.id: row for c in children
              if cache is not None and (row := cache.get(c)) is not None}
    fresh = _with_ancestors([c for c in children if c.id not in cached], children)
    tallies = stored_tallies(store, config.objectives, fresh, config.max_iteration_per_job)
    keys = tuned_keys(config)
    now = time.time()
    rows = []
    for child in children:
        if child.id in cached:
            rows.append(cached[child.id])
            continue
        scored = tallies[child.id].scored()
        values: list[float | None] = [t.value() for t in scored]
        if child.status is Status.failed:  # its reports do not count (as in the controller)
            values = [None] * len(values)
        result = job_result(values)  # one missing objective: no result, as in the controller
        objective = result[0] if result is not None else None
        primary = scored[0]
        iteration = (primary.last_iteration if objective is not None
                     and not config.objectives[0].use_best else None)
        rows.append(JobRow(
            task_id=child.id, name=child.name, status=child.status.value,
            objective=objective, objectives=values, iteration=iteration,
            parameters={k: child.parameters[k] for k in keys if k in child.parameters},
            worker=child.worker, started_at=child.started_at, ended_at=child.ended_at,
            duration_s=(max(0.0, (child.ended_at or now) - child.started_at)
                        if child.started_at is not None else None),
            message=child.status_message, budget=budget_of(child.tags),
            reached=primary.last_iteration if primary.count else None,
            end=_end_words(child, objective is not None),
        ))
        if cache is not None:
            cache.keep(child, rows[-1])
    return rows


def _with_ancestors(tasks: list[TaskRecord], children: list[TaskRecord]) -> list[TaskRecord]:
    """``tasks`` and the children they continue (``resume:``), transitively: a job's
    tally counts its parent's reports first."""
    by_id = {c.id: c for c in children}
    chosen = {t.id: t for t in tasks}
    todo = list(tasks)
    while todo:
        parent = by_id.get(relations.tag_value(todo.pop().tags, relations.RESUME) or "")
        if parent is not None and parent.id not in chosen:
            chosen[parent.id] = parent
            todo.append(parent)
    return list(chosen.values())


def _end_words(task: TaskRecord, has_result: bool) -> str | None:
    end = end_of(task, has_result)
    return None if end is None else end.value


def best_rows(rows: list[JobRow], primary: Objective, full_budget: int | None = None
              ) -> list[JobRow]:
    """Finished rows with a valid objective, best first: by the controller's rule, the
    largest iteration budget first (BOHB, ASHA), then the objective."""
    scored = [r for r in rows if Status(r.status) in FINAL_STATUSES and r.objective is not None]
    scored.sort(key=lambda r: rank_key(
        r.objective or 0.0,
        reached_budget(r.budget, r.reached, r.status == Status.completed.value),
        full_budget, primary.minimize, ended_at=r.ended_at, task_id=r.task_id))
    return scored


def _fill_best_iterations(store: Store, config: OptimizerConfig, rows: list[JobRow],
                          children: list[TaskRecord]) -> None:
    """For min_global/max_global the iteration of the best value needs the series itself:
    replayed by the controller's rule for the few rows shown only."""
    primary = config.objectives[0]
    if not primary.use_best:
        return
    tasks = {c.id: c for c in children}
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
