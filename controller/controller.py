"""The optimization loop: launch trials, watch them, enforce every limit and budget.

Each cycle (every ``poll_s``, 0.1 s by default) reads only the active jobs' records and
their new objective scalars, so a cycle costs the same at trial 10 and trial 10,000.
Everything needed to continue is in the store: the config, the strategy's state, the
trials launched and the results the strategy has heard, saved after every change, so
``resume`` neither repeats nor loses a trial.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery

from hpo import dispatch
from hpo import params as P
from hpo.controller.config import OptimizerConfig
from hpo.controller.jobs import Job
from hpo.errors import ConfigError, HpoError
from hpo.models import FINAL_STATUSES, Status
from hpo.reaper import reap
from hpo.store import Store
from hpo.strategies.base import (
    Decision,
    NoSuggestion,
    SearchStrategy,
    Suggestion,
    resolve,
)

log = logging.getLogger("hpo.controller")

REAP_PERIOD_S = 5.0
# How long the store or broker may fail before the optimization gives up.
FAULT_TOLERANCE_S = 60.0
# After a budget ends, how long to wait for stopped jobs to report their end.
STOP_WAIT_S = 60.0

JobCallback = Callable[[str, float | None, int, dict[str, Any], str | None], None]


@dataclass
class Progress:
    """A snapshot for progress displays."""

    launched: int
    running: int
    queued: int
    finished: int
    failed: int
    best_value: float | None
    best_task: str | None
    elapsed_s: float
    compute_s: float


def make_strategy(config: OptimizerConfig) -> SearchStrategy:
    cls = resolve(config.strategy)
    if len(config.objectives) > 1 and not cls.supports_multi_objective:
        raise ConfigError(f"strategy {cls.__name__} optimizes one objective, not "
                          f"{len(config.objectives)}: give one, or use OptimizerOptuna")
    try:
        return cls(space=config.hyper_parameters, objectives=config.objectives,
                   min_iteration_per_job=config.min_iteration_per_job,
                   max_iteration_per_job=config.max_iteration_per_job,
                   total_max_jobs=config.total_max_jobs, **config.strategy_kwargs)
    except TypeError as exc:
        raise ConfigError(f"strategy {cls.__name__}: {exc}; check the optimizer's extra "
                          "keyword arguments (strategy_kwargs)") from None


class Controller:
    def __init__(self, store: Store, app: Celery, config: OptimizerConfig,
                 optimizer_task_id: str, *, job_complete_callback: JobCallback | None = None,
                 poll_s: float = 0.1) -> None:
        self.store = store
        self.app = app
        self.config = config
        self.task_id = optimizer_task_id
        self.callback = job_complete_callback
        self.poll_s = poll_s
        self.strategy = make_strategy(config)
        self.strategy.attach(store.url, optimizer_task_id)
        self.base = store.get_task(config.base_task_id)
        self.jobs: dict[str, Job] = {}  # by task id
        self.by_trial: dict[str, str] = {}  # trial id -> task id
        self.heard: set[str] = set()
        self.pending: Suggestion | None = None
        self.strategy_done = False
        self.elapsed_before = 0.0
        self.started = time.time()
        self.outcome: str | None = None
        self._stop = threading.Event()
        self._stop_reason = ""
        self._next_reap = 0.0
        self._enqueued: set[str] = set()  # trials whose clone has been enqueued

    # ----- public -------------------------------------------------------------------

    def request_stop(self, reason: str = "stopped by request") -> None:
        self._stop_reason = reason
        self._stop.set()

    def elapsed_s(self) -> float:
        return self.elapsed_before + (time.time() - self.started)

    def compute_s(self) -> float:
        now = time.time()
        return sum(job.compute_seconds(now) for job in self.jobs.values())

    def run(self) -> str:
        """Run to the end; returns why it ended. A store or broker that fails for a
        moment is retried; one that stays away for FAULT_TOLERANCE_S ends the run."""
        self._restore()
        failing_since: float | None = None
        try:
            while True:
                try:
                    reason = self._cycle()
                    failing_since = None
                except HpoError as exc:
                    now = time.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > FAULT_TOLERANCE_S:
                        raise
                    log.warning("controller cycle failed, retrying: %s", exc)
                    reason = None
                    time.sleep(1.0)
                if reason:
                    break
                self._stop.wait(self.poll_s)
        finally:
            self._save()
        self.outcome = reason
        log.info("optimization %s ended: %s", self.task_id, reason)
        return reason

    def _cycle(self) -> str | None:
        """One round: limits, new reports and ends, launches. Returns why the
        optimization ended, or None to go on."""
        reason = self._limit_reached()
        if reason:
            self._stop_everything(reason)
            return reason
        self._observe()
        self._launch()
        if self._all_done():
            return "search space exhausted" if self.strategy_done else "all jobs finished"
        self._reap_now_and_then()
        return None

    def progress(self) -> Progress:
        jobs = list(self.jobs.values())
        best = self.best_jobs(1)
        return Progress(
            launched=len(jobs),
            running=sum(j.status is Status.running for j in jobs),
            queued=sum(j.status in (Status.queued, Status.created) for j in jobs),
            finished=sum(j.finished for j in jobs),
            failed=sum(j.finished and j.result is None for j in jobs),
            best_value=best[0].result[0] if best and best[0].result else None,
            best_task=best[0].task_id if best else None,
            elapsed_s=self.elapsed_s(), compute_s=self.compute_s(),
        )

    def best_jobs(self, top_k: int | None = None, *, only_completed: bool = False
                  ) -> list[Job]:
        """Finished jobs with a valid objective, best first (by the first objective)."""
        scored = [j for j in self.jobs.values() if j.finished and j.result is not None
                  and (not only_completed or j.status is Status.completed)]
        minimize = self.config.objectives[0].minimize
        scored.sort(key=lambda j: (j.result or [0.0])[0], reverse=not minimize)
        return scored[:top_k] if top_k is not None else scored

    # ----- the cycle ----------------------------------------------------------------

    def _limit_reached(self) -> str | None:
        if self._stop.is_set():
            return self._stop_reason or "stopped"
        if self.store.get_task(self.task_id).stop_requested:
            return "stopped by request"
        limit = self.config.optimization_time_limit
        if limit is not None and self.elapsed_s() >= limit * 60:
            return f"optimization_time_limit of {limit:g} min reached"
        limit = self.config.compute_time_limit
        if limit is not None and self.compute_s() >= limit * 60:
            return f"compute_time_limit of {limit:g} min reached"
        return None

    def _observe(self) -> None:
        """Read the active jobs' state and new objective reports; act on them."""
        active = [j for j in self.jobs.values() if not j.finished]
        if not active:
            return
        records = {t.id: t for t in self.store.get_tasks([j.task_id for j in active])}
        # Scalars after the records: an agent stores a job's last reports before it
        # marks the job finished, so a finished record's reports are all read here.
        titles = sorted({o.title for o in self.config.objectives})
        for scalar in self.store.read_scalars({j.task_id: j.cursor for j in active},
                                              titles=titles):
            job = self.jobs[scalar.task_id]
            job.cursor = max(job.cursor, scalar.id)
            index = job.objective_index(scalar.title, scalar.series)
            if index is not None:
                job.record(index, scalar.iteration, scalar.value)
                if index == 0:
                    self._decide(job, scalar.iteration)
        for job in active:
            record = records.get(job.task_id)
            if record is None:
                continue
            job.update_from(record)
            if record.status is Status.created and job.trial_id not in self._enqueued:
                self._enqueue(job)
            if record.status in FINAL_STATUSES:
                self._finish(job, record.status)

    def _decide(self, job: Job, iteration: int) -> None:
        """After a report of the primary objective: stop at the iteration budget, or
        when the strategy says so (never before min_iteration_per_job)."""
        if job.stop_sent or job.finished:
            return
        budget = job.max_iteration or self.config.max_iteration_per_job
        if budget is not None and iteration >= budget:
            self._stop_job(job, f"max_iteration_per_job reached ({iteration} >= {budget})")
            return
        values = [v if v is not None else float("nan") for v in job.last]
        decision = self.strategy.on_report(job.trial_id, iteration, values)
        minimum = self.config.min_iteration_per_job or 0
        if decision is Decision.STOP and iteration >= minimum:
            self._stop_job(job, f"early-stopped by {type(self.strategy).__name__} at "
                           f"iteration {iteration}")

    def _finish(self, job: Job, status: Status) -> None:
        job.finished = True
        values = job.values() if status is not Status.failed else None
        job.result = values
        if job.task_id in self.heard:
            return  # heard before a resume
        self.strategy.on_result(job.trial_id, values)
        self.heard.add(job.task_id)
        self._save()
        value = values[0] if values else None
        log.info("job %s %s: objective %s", job.task_id, status.value, value)
        if self.callback is not None:
            best = self.best_jobs(1)
            try:
                self.callback(job.task_id, value, job.iteration(), dict(job.parameters),
                              best[0].task_id if best else None)
            except Exception:
                log.exception("job_complete_callback failed for job %s", job.task_id)

    def _launch(self) -> None:
        while not self._stop.is_set():
            active = sum(not j.finished for j in self.jobs.values())
            if active >= self.config.max_number_of_concurrent_tasks:
                return
            total = self.config.total_max_jobs
            if total is not None and len(self.jobs) >= total:
                return
            suggestion = self.pending or self._ask()
            if suggestion is None:
                return
            self._start_job(suggestion)

    def _ask(self) -> Suggestion | None:
        if self.strategy_done:
            return None
        suggestion = self.strategy.suggest()
        if suggestion is NoSuggestion.DONE:
            self.strategy_done = True
            return None
        if suggestion is NoSuggestion.WAIT:
            return None
        assert isinstance(suggestion, Suggestion)
        # Saved before the clone exists: a crash in between re-launches this same trial
        # on resume instead of asking the strategy again (no duplicate, no gap).
        self.pending = suggestion
        self._save()
        return suggestion

    def _start_job(self, suggestion: Suggestion) -> None:
        overrides = {P.qualify(k): v for k, v in suggestion.parameters.items()}
        described = " ".join(f"{k}={_short(v)}" for k, v in suggestion.parameters.items())
        limit = self.config.time_limit_per_job
        clone = self.store.clone_task(
            self.base.id, name=f"{self.base.name}: {described}", parent=self.task_id,
            project=self.config.spawn_project, parameters=overrides,
            tags=[f"optimizer:{self.task_id}", f"trial:{suggestion.trial_id}"],
            time_limit=limit * 60 if limit else None)
        job = self._track(clone.id, suggestion)
        self.pending = None
        self._save()
        self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        self._enqueued.add(job.trial_id)
        dispatch.enqueue(self.store, self.app, job.task_id, self.config.execution_queue)
        job.status = Status.queued

    def _track(self, task_id: str, suggestion: Suggestion) -> Job:
        job = Job(task_id=task_id, trial_id=suggestion.trial_id,
                  parameters=dict(suggestion.parameters),
                  max_iteration=suggestion.max_iteration,
                  objectives=list(self.config.objectives))
        self.jobs[task_id] = job
        self.by_trial[suggestion.trial_id] = task_id
        return job

    def _stop_job(self, job: Job, reason: str) -> None:
        job.stop_sent = True
        try:
            dispatch.abort(self.store, job.task_id, reason)
        except Exception as exc:  # it ended meanwhile: nothing to stop
            log.debug("stop of job %s: %s", job.task_id, exc)

    def _stop_everything(self, reason: str) -> None:
        """Stop every active job and wait (bounded) for them to end."""
        for job in self.jobs.values():
            if not job.finished and not job.stop_sent:
                self._stop_job(job, reason)
        deadline = time.monotonic() + STOP_WAIT_S
        while any(not j.finished for j in self.jobs.values()) and time.monotonic() < deadline:
            self._observe()
            time.sleep(self.poll_s)

    def _all_done(self) -> bool:
        if any(not j.finished for j in self.jobs.values()) or self.pending:
            return False
        total = self.config.total_max_jobs
        return self.strategy_done or (total is not None and len(self.jobs) >= total)

    def _reap_now_and_then(self) -> None:
        if time.monotonic() < self._next_reap:
            return
        self._next_reap = time.monotonic() + REAP_PERIOD_S
        try:
            reap(self.store, self.app)
        except Exception as exc:
            log.warning("reaper failed: %s", exc)

    # ----- persistence --------------------------------------------------------------

    def _save(self) -> None:
        self.store.save_optimization_state(self.task_id, {
            "strategy": self.strategy.state(),
            "pending": None if self.pending is None else _suggestion_dict(self.pending),
            "launched": {trial: task for trial, task in self.by_trial.items()},
            "parameters": {t: self.jobs[t].parameters for t in self.by_trial.values()},
            "budgets": {t: self.jobs[t].max_iteration for t in self.by_trial.values()},
            "heard": sorted(self.heard),
            "strategy_done": self.strategy_done,
            "elapsed_s": self.elapsed_s(),
        })

    def _restore(self) -> None:
        _config, state = self.store.load_optimization(self.task_id)
        if not state:
            return
        self.strategy.restore(state["strategy"])
        self.heard = set(state.get("heard", []))
        self.strategy_done = bool(state.get("strategy_done"))
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        for trial, task_id in state.get("launched", {}).items():
            self._track(task_id, Suggestion(
                trial, state["parameters"][task_id], state["budgets"].get(task_id)))
            self._enqueued.add(trial)
        pending = state.get("pending")
        if pending:
            suggestion = Suggestion(**pending)
            existing = self.store.find_tasks(parent=self.task_id,
                                             tag=f"trial:{suggestion.trial_id}")
            if existing:  # the clone was made before the crash
                self._track(existing[0].id, suggestion)
            else:
                self.pending = suggestion
        # Clones never enqueued before the crash are enqueued by _observe.
        for job in self.jobs.values():
            if self.store.get_task(job.task_id).status is Status.created:
                self._enqueued.discard(job.trial_id)
        log.info("optimization %s resumed: %d job(s) launched, %d heard", self.task_id,
                 len(self.jobs), len(self.heard))


def _suggestion_dict(s: Suggestion) -> dict[str, Any]:
    return {"trial_id": s.trial_id, "parameters": s.parameters,
            "max_iteration": s.max_iteration, "resume_from": s.resume_from}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
