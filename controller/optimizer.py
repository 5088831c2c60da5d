"""``HyperParameterOptimizer``: ClearML's optimizer API over hpo's controller."""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hpo import defaults, relations
from hpo.controller.controller import Controller, JobCallback, Progress, make_strategy
from hpo.controller.local_agents import LocalAgents
from hpo.lifecycle import Status, TaskType
from hpo.optimization.config import OptimizerConfig, objectives_from
from hpo.queue.app import check_broker, make_app
from hpo.sdk.store_backend import StoreBackend
from hpo.sdk.task import Task
from hpo.settings import Settings
from hpo.store import Store, open_store
from hpo.strategies.base import SearchStrategy
from hpo.strategies.grid_search import GridSearch

log = logging.getLogger("hpo.controller")


class HyperParameterOptimizer:
    """Optimize a base task's hyper-parameters by cloning it, with ClearML's arguments
    and meanings. ``optimizer_class`` is a strategy class or a registered name; other
    keyword arguments go to the strategy."""

    _unstarted: _Unstarted | None = None  # built here and not started yet (not a resume)

    def __init__(
        self,
        base_task_id: str,
        hyper_parameters: Sequence[Any],
        objective_metric_title: str | Sequence[str],
        objective_metric_series: str | Sequence[str],
        objective_metric_sign: str | Sequence[str] = "min",
        optimizer_class: type[SearchStrategy] | str = "random",
        max_number_of_concurrent_tasks: int = 10,
        execution_queue: str = "default",
        optimization_time_limit: float | None = None,
        compute_time_limit: float | None = None,
        auto_connect_task: bool | Task = True,
        always_create_task: bool = False,
        spawn_project: str | None = None,
        save_top_k_tasks_only: int | None = None,
        min_iteration_per_job: int | None = None,
        max_iteration_per_job: int | None = None,
        total_max_jobs: int | None = None,
        time_limit_per_job: float | None = None,
        pool_period_min: float | None = None,  # accepted; hpo reacts in milliseconds
        fail_fast: int = defaults.FAIL_FAST_JOBS,  # hpo's own: see OptimizerConfig
        allow_new_parameters: bool = False,  # hpo's own: see OptimizerConfig
        store: str | Store | None = None,
        broker_url: str | None = None,
        **optimizer_kwargs: Any,
    ) -> None:
        self.store = store if isinstance(store, Store) else open_store(store)
        self.broker_url = Settings.load(broker_url=broker_url).broker_url
        strategy = (optimizer_class if isinstance(optimizer_class, str) else
                    f"{optimizer_class.__module__}.{optimizer_class.__qualname__}")
        self.config = OptimizerConfig(
            base_task_id=self.store.resolve_task_id(base_task_id),
            hyper_parameters=list(hyper_parameters),
            objectives=objectives_from(objective_metric_title, objective_metric_series,
                                       objective_metric_sign),
            strategy=strategy, strategy_kwargs=dict(optimizer_kwargs),
            max_number_of_concurrent_tasks=max_number_of_concurrent_tasks,
            execution_queue=execution_queue, optimization_time_limit=optimization_time_limit,
            compute_time_limit=compute_time_limit, total_max_jobs=total_max_jobs,
            min_iteration_per_job=min_iteration_per_job,
            max_iteration_per_job=max_iteration_per_job,
            time_limit_per_job=time_limit_per_job,
            save_top_k_tasks_only=save_top_k_tasks_only, spawn_project=spawn_project,
            fail_fast=fail_fast, allow_new_parameters=allow_new_parameters,
        )
        self.config.validate()
        self.config.check_parameters(self.store.get_task(self.config.base_task_id).parameters)
        make_strategy(self.config)  # an unknown strategy or bad arguments fail here, first
        saved = self.config.to_dict()  # and arguments that cannot be saved, here
        check_broker(make_app(self.broker_url))  # the store answered already (open_store)
        self.task_id = self._optimizer_task(auto_connect_task, always_create_task)
        self.store.create_optimization(self.task_id, saved)
        self._setup()
        # Until start(): one that never starts is said so at exit (and reads "never
        # started" in hpo-controller status / list), not left to look completed.
        self._unstarted = _Unstarted(self.task_id)
        atexit.register(self._unstarted.warn)

    @classmethod
    def resume(cls, optimizer_task_id: str, *, store: str | Store | None = None,
               broker_url: str | None = None) -> HyperParameterOptimizer:
        """The optimization of ``optimizer_task_id``, to ``start()`` again: it re-attaches
        to its running jobs and finishes the same budget."""
        self = cls.__new__(cls)
        self.store = store if isinstance(store, Store) else open_store(store)
        self.broker_url = Settings.load(broker_url=broker_url).broker_url
        self.task_id = self.store.resolve_task_id(optimizer_task_id, type=TaskType.optimizer)
        config, _state = self.store.load_optimization(self.task_id)
        self.config = OptimizerConfig.from_dict(config)
        check_broker(make_app(self.broker_url))
        task = self.store.get_task(self.task_id)
        if task.status is not Status.running:
            if task.status.is_final:
                self.store.set_status(self.task_id, Status.created)
            self.store.set_status(self.task_id, Status.running)
        self._setup()
        return self

    def _setup(self) -> None:
        self.controller = Controller(self.store, make_app(self.broker_url), self.config,
                                     self.task_id)
        self._thread: threading.Thread | None = None
        self._agents: LocalAgents | None = None
        self._time_limit_set_at: float | None = None
        # What the user should know before it runs (a grid its budget barely covers):
        # ``notices()`` hands them to a display, else start() logs them.
        strategy = self.controller.strategy
        note = strategy.coverage_note() if isinstance(strategy, GridSearch) else None
        self._before_start: list[str] = [note] if note else []

    def _optimizer_task(self, auto_connect: bool | Task, always_create: bool) -> str:
        current = auto_connect if isinstance(auto_connect, Task) else (
            Task.current_task() if auto_connect else None)
        if current is not None and not always_create:
            return current.id
        base = self.store.get_task(self.config.base_task_id)
        task = self.store.create_task(self.config.spawn_project or base.project,
                                      f"Optimization: {base.name}", type=TaskType.optimizer)
        return task.id  # created: it runs from start() on

    # ----- running ------------------------------------------------------------------

    def start(self, job_complete_callback: JobCallback | None = None) -> bool:
        """Start optimizing in a background thread; ``wait()`` blocks until the end."""
        if self._thread is not None:
            return False
        self._begin()
        self.controller.callback = job_complete_callback
        self._thread = threading.Thread(target=self._run, name="hpo-controller", daemon=True)
        self._thread.start()
        return True

    def start_locally(self, job_complete_callback: JobCallback | None = None,
                      agents: int | None = None) -> bool:
        """Like ``start()``, with ``agents`` agents (default: one per concurrent job)
        started on this machine, serving a queue of this optimization's own (the same
        one after a resume, so jobs queued before a crash still run)."""
        self._begin()  # running from here: agents that fail to start fail it
        queue = f"local-{self.task_id}"
        if self.config.execution_queue != queue:
            self.config.execution_queue = queue
            self.controller.config.execution_queue = queue
            self.store.update_optimization_config(self.task_id, self.config.to_dict())
        log_dir = Settings.load().home / "logs" / self.task_id
        # Not waited for: the first jobs are cloned and queued while the agents start
        # (a second of imports each), and wait for them in the queue.
        script = self.store.get_task(self.config.base_task_id).script
        self._agents = LocalAgents(self.store, self.broker_url, queue,
                                   agents or self.config.max_number_of_concurrent_tasks,
                                   Path(log_dir), preload=script.preload if script else None,
                                   on_failure=self._local_agents_failed)
        return self.start(job_complete_callback)

    def _local_agents_failed(self, why: str) -> None:
        """A local agent exited at start or never registered: the run ends failed."""
        self.controller.gave_up = f"local agents did not start: {why}"

    def _begin(self) -> None:
        """The optimization starts: its task runs (it was created), and what no display
        took before the start is logged, once."""
        if self._unstarted is not None:
            self._unstarted.started = True
        for note in self.notices_before_start():
            log.warning("%s", note)
        if self.store.get_task(self.task_id).status is Status.created:
            self.store.set_status(self.task_id, Status.running)

    def _run(self) -> None:
        try:
            reason = self.controller.run()
            self._finish(self.controller.end_status or Status.completed, reason)
        except Exception as exc:
            log.exception("the optimization failed")
            self._finish(Status.failed, f"controller error: {exc}")
        finally:
            if self._agents is not None:
                self._agents.stop()
            self._archive_beyond_top_k()

    def _finish(self, status: Status, message: str) -> None:
        current = Task.current_task()
        if current is not None and current.id == self.task_id:
            return  # the script that runs the optimizer owns its task's status
        task = self.store.get_task(self.task_id)
        if task.status is Status.running:
            self.store.set_status(self.task_id, status, message=message)

    def _archive_beyond_top_k(self) -> None:
        keep = self.config.save_top_k_tasks_only
        if keep is None:
            return
        best = {j.task_id for j in self.controller.best_jobs(keep)}
        for job in self.controller.jobs.values():
            if job.task_id not in best:
                task = self.store.get_task(job.task_id)
                if relations.ARCHIVED not in task.tags:
                    self.store.update_task(job.task_id, tags=[*task.tags, relations.ARCHIVED])

    def stop(self, timeout: float | None = None, wait_for_reporter: bool | None = True
             ) -> None:
        """Stop every job and end the optimization."""
        self.controller.request_stop("stopped by request")
        if self._thread is not None:
            self._thread.join(timeout)

    def stop_local_agents(self, timeout: float = defaults.LOCAL_AGENTS_STOP_TIMEOUT_S
                          ) -> None:
        """Stop the agents ``start_locally()`` started (nothing without them), each
        within ``timeout`` seconds, and leave the optimization itself as it is: a caller
        that quits at once uses it, and ``resume`` continues the optimization later."""
        if self._agents is not None:
            self._agents.stop(timeout=timeout)

    def job_ids(self) -> tuple[list[str], list[str]]:
        """Every job's task id, in the order launched, and those of the jobs still going
        (safe from another thread: list() copies a dict in one step, under the GIL)."""
        return list(self.controller.jobs), list(self.controller.active)

    def progress(self) -> Progress:
        """Counts, best value and times so far, from the running loop's memory (no store
        read; safe from another thread): what a live display polls."""
        return self.controller.progress()

    def notices_before_start(self) -> list[str]:
        """What the user should know before it runs (a grid ``total_max_jobs`` covers
        a small part of), once: a display that takes them shows them, else start()
        logs them as warnings."""
        taken, self._before_start = self._before_start, []
        return taken

    def notices(self) -> list[str]:
        """What the optimization has to tell its user since the last call (no agent
        serves the queue, ...): a display shows them as they come."""
        taken = self.notices_before_start()
        while self.controller.notices:
            taken.append(self.controller.notices.popleft())
        return taken

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the optimization ends (True) or ``timeout`` seconds pass (False)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def is_active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def is_running(self) -> bool:
        return self.is_active()

    def elapsed(self) -> float:
        """Minutes since start(), or -1 before it."""
        return self.controller.elapsed_s() / 60 if self._thread is not None else -1.0

    def reached_time_limit(self) -> bool:
        limit = self.config.optimization_time_limit
        return limit is not None and self.controller.elapsed_s() >= limit * 60

    def set_time_limit(self, in_minutes: float | None = None,
                       specific_time: dt.datetime | None = None) -> None:
        """Change ``optimization_time_limit`` (minutes from start, or an end time)."""
        if specific_time is not None:
            remaining = specific_time.timestamp() - time.time()
            in_minutes = (self.controller.elapsed_s() + remaining) / 60
        self.config.optimization_time_limit = in_minutes
        self.controller.config.optimization_time_limit = in_minutes

    def get_time_limit(self) -> dt.datetime | None:
        limit = self.config.optimization_time_limit
        if limit is None:
            return None
        start = time.time() - self.controller.elapsed_s()
        return dt.datetime.fromtimestamp(start + limit * 60)

    def set_report_period(self, report_period_minutes: float) -> None:
        """Accepted for ClearML compatibility: hpo reports every change as it happens."""

    # ----- results ------------------------------------------------------------------

    def get_optimizer(self) -> SearchStrategy:
        return self.controller.strategy

    def get_num_active_experiments(self) -> int:
        return sum(not j.finished for j in self.controller.jobs.values())

    def get_active_experiments(self) -> list[Task]:
        return [self._task(j.task_id) for j in self.controller.jobs.values() if not j.finished]

    def get_top_experiments(self, top_k: int) -> list[Task]:
        return [self._task(j.task_id) for j in self.controller.best_jobs(top_k)]

    def get_top_experiments_id(self, top_k: int) -> list[str]:
        return [j.task_id for j in self.controller.best_jobs(top_k)]

    def get_top_experiments_details(
        self, top_k: int, all_metrics: bool = False, all_hyper_parameters: bool = False,
        only_completed: bool = False,
    ) -> list[dict[str, Any]]:
        """``[{"task_id", "hyper_parameters", "metrics"}]``, best first."""
        jobs = self.controller.best_jobs(top_k, only_completed=only_completed)
        records = {t.id: t for t in self.store.get_tasks([j.task_id for j in jobs])}
        summaries: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
        for m in self.store.scalar_summary([j.task_id for j in jobs]):
            summaries.setdefault(m.task_id, {}).setdefault(m.title, {})[m.series] = {
                "last": m.last, "min": m.min, "max": m.max}
        titles = {(o.title, o.series) for o in self.config.objectives}
        details = []
        for job in jobs:
            params = (records[job.task_id].parameters if all_hyper_parameters
                      else dict(job.parameters))
            metrics = summaries.get(job.task_id, {})
            if not all_metrics:
                metrics = {t: {s: v for s, v in series.items() if (t, s) in titles}
                           for t, series in metrics.items()
                           if any((t, s) in titles for s in series)}
            details.append({"task_id": job.task_id, "hyper_parameters": params,
                            "metrics": metrics, "objective": job.result[0] if job.result else None,
                            "iteration": job.iteration()})
        return details

    @property
    def id(self) -> str:
        return self.task_id

    def _task(self, task_id: str) -> Task:
        return Task(StoreBackend(self.store, self.store.get_task(task_id)))


class _Unstarted:
    """An optimizer built and not (yet) started: at exit, one never started says so
    (a script that forgot start() would otherwise end silently, its optimization
    recorded with no job). Held by atexit instead of the optimizer, so that an optimizer
    dropped unstarted is still told of."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.started = False

    def warn(self) -> None:
        if not self.started:
            log.warning("optimization %s was created but never started: no job ran. Call "
                        "optimizer.start() (or start_locally()), then optimizer.wait(); "
                        "`hpo-controller status %s` shows it as never started",
                        self.task_id, self.task_id[:8])
