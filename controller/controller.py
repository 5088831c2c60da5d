"""The optimization loop: launch trials, watch them, enforce every limit and budget.

A cycle runs as soon as a job of the optimization ends or a stop is asked, within
``poll_s`` (0.1 s) of a job's new reports (the store's wake-ups, ``hpo.wakeups``), and
at least every ``CONTROLLER_FALLBACK_POLL_S`` anyway (every ``poll_s`` where the store
has no wake-ups). It reads only the active
jobs' records and their new objective scalars, and saves only state the size of the
active set, so a cycle costs the same at trial 10 and trial 10,000. Everything needed
to continue is in the store: the config, the strategy's state, the trials being
launched and the active jobs (saved together, and with the launched trials' clones in
one transaction), and the finished jobs themselves, so
``resume`` neither repeats nor loses a trial.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery

from hpo import relations, settings
from hpo import typed_params as P
from hpo.controller.clock import Clock, SystemClock
from hpo.controller.jobs import Job
from hpo.defaults import (
    CONTROLLER_FALLBACK_POLL_S,
    CONTROLLER_POLL_S,
    CYCLE_RETRY_S,
    FAULT_TOLERANCE_S,
    LAUNCH_SLICE_S,
    MAX_TASK_NAME_LEN,
    NO_AGENT_CHECK_S,
    NO_AGENT_NOTICE_S,
    NO_AGENT_REPEAT_S,
    REAP_PERIOD_S,
    STOP_WAIT_S,
)
from hpo.errors import ConfigError, HpoError, StoreError
from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.optimization.config import OptimizerConfig, close_names
from hpo.optimization.ends import StopCause, stop_job
from hpo.optimization.ranking import budget_of, rank_key, reached_budget
from hpo.optimization.tally import JobTally, iteration_budget, stored_tallies
from hpo.queue import dispatch
from hpo.queue.app import publish
from hpo.queue.reaper import StoreContact, reap, republish_lost
from hpo.records import TaskRecord
from hpo.store import NewClone, Store
from hpo.strategies.base import (
    Decision,
    NoSuggestion,
    SearchStrategy,
    Suggestion,
    resolve,
)
from hpo.wakeups import Listener, ListenerUnavailable, StoreChange, listen_to_store

log = logging.getLogger("hpo.controller")

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
                 poll_s: float = CONTROLLER_POLL_S, clock: Clock | None = None) -> None:
        # Every time read and wait of the loop goes through the clock: a simulated one
        # (hpo.testing.simulation) runs the loop in simulated time.
        self.clock: Clock = clock or SystemClock()
        self.store = store
        self.app = app
        self.config = config
        self.task_id = optimizer_task_id
        self.callback = job_complete_callback
        self.poll_s = poll_s
        self.strategy = make_strategy(config)
        self.strategy.attach(store.url, optimizer_task_id)
        self.base = store.get_task(config.base_task_id)
        self.jobs: dict[str, Job] = {}  # every job, by task id
        self.task_of_trial: dict[str, str] = {}
        self.active: dict[str, Job] = {}  # jobs the strategy has not heard the end of
        self.pending: list[Suggestion] = []  # suggested, maybe cloned, not yet tracked
        # Each pending trial's clone, its id fixed once: a launch retried after one that
        # raised makes the same clones (its commit may have landed, unacknowledged).
        self._clones: dict[str, NewClone] = {}
        self._launch_unsure = False  # the last launch raised: some clones may be stored
        self.strategy_done = False
        self.finished_compute_s = 0.0
        self.failed = 0  # finished jobs without a valid objective
        self.best: Job | None = None
        self.elapsed_before = 0.0
        self.started = self.clock.time()
        self.outcome: str | None = None
        self._stop = threading.Event()
        # Set when a job of this optimization ends or reports, or a stop is asked, with
        # the flag that says which (cleared before each cycle, so none is missed):
        # ``_urgent`` ends the loop's wait at once, ``_reports_waiting`` within poll_s.
        self._wake = threading.Event()
        self._urgent = False
        self._reports_waiting = False
        self._stop_reason = ""
        # Jobs a stop request (Ctrl-C, stop(), hpo-controller stop) cut short: no results;
        # they run again, as the same trials, on resume. Stopping: sent, not yet ended.
        self.interrupted: set[str] = set()
        self._interrupting: set[str] = set()
        self._rerun_when_stopped: set[str] = set()  # the last session's, stop still coming
        # fail_fast: why each of the first jobs to finish had no result (None: it had).
        # (its status, why it had no result) of each of the first jobs to finish; None:
        # it had one.
        self._first_ends: list[tuple[Status, str] | None] = []
        self._ending = False  # _stop_everything: the ends it causes are not the jobs' own
        self.gave_up: str | None = None  # why the optimization stopped itself, failed
        # How the optimization ended, once it has: the optimizer task's final status.
        self.end_status: Status | None = None
        # What the user must hear now (no agent serves the queue): a display takes them.
        self.notices: collections.deque[str] = collections.deque(maxlen=100)
        self._queued_since: float | None = None
        self._next_agent_check = 0.0
        self._agent_notice_at: float | None = None
        self._next_reap = 0.0
        self._contact = StoreContact(self.clock.monotonic)
        self._dirty = False
        self._restored = False
        # The optimizer task's own row (a stop asked from elsewhere) is read when the
        # store's wake-ups say it changed, and every CONTROLLER_FALLBACK_POLL_S anyway;
        # every cycle where there are no wake-ups (``_listening`` False).
        self._listening = False
        self._own_changed = True
        self._own_read_at = -math.inf

    # ----- public -------------------------------------------------------------------

    def request_stop(self, reason: str = "stopped by request") -> None:
        self._stop_reason = reason
        self._stop.set()
        self._urgent = True
        self._wake.set()

    def elapsed_s(self) -> float:
        return self.elapsed_before + (self.clock.time() - self.started)

    def compute_s(self) -> float:
        now = self.clock.time()
        return self.finished_compute_s + sum(j.compute_seconds(now)
                                             for j in list(self.active.values()))

    def run(self) -> str:
        """Run to the end; returns why it ended. A store or broker that fails for a
        moment is retried; one that stays away for FAULT_TOLERANCE_S ends the run."""
        self._restore_once()
        failing_since: float | None = None
        reason: str | None = None
        listener = self._listen()
        self._listening = listener is not None
        pause_s = self.poll_s if listener is None else CONTROLLER_FALLBACK_POLL_S
        try:
            while not reason:
                cycle_started = self.clock.monotonic()
                # Before the cycle: a wake-up during it is kept for the pause after it.
                self._urgent = self._reports_waiting = False
                self._wake.clear()
                try:
                    reason = self._cycle()
                    failing_since = None
                    self._contact.answered()
                except HpoError as exc:
                    self._contact.failed()
                    now = self.clock.monotonic()
                    failing_since = failing_since or now
                    if now - failing_since > FAULT_TOLERANCE_S:
                        raise
                    log.warning("controller cycle failed, retrying: %s", exc)
                    self.clock.sleep(CYCLE_RETRY_S)
                if not reason:
                    self._pause(cycle_started, pause_s)
        finally:
            self._listening = False
            if listener is not None:
                listener.close()
            self._save()
        self.outcome = reason
        log.info("optimization %s ended: %s", self.task_id, reason)
        return reason

    def _pause(self, since: float, longest_s: float) -> None:
        """A real-time pause after the cycle begun at ``since``, at most ``longest_s``
        from then: an end, a stop or a gap in the wake-ups ends it at once; reports not
        before ``poll_s`` from then (jobs reporting fast cost a cycle per poll_s, not
        one per report)."""
        deadline = since + longest_s
        while not self._urgent:
            if self._reports_waiting:
                deadline = min(deadline, since + self.poll_s)
            remaining = deadline - self.clock.monotonic()
            if remaining <= 0:
                return
            self._wake.wait(remaining)
            self._wake.clear()  # the flags, set before the event, say why

    def _listen(self) -> Listener | None:
        """The store's wake-ups for this optimization's tasks; None (said once) where
        the store has none: the loop then polls every ``poll_s``."""
        try:
            return listen_to_store(self.store.engine, self._on_change)
        except ListenerUnavailable as exc:
            log.info("no wake-ups from the store (%s): polling every %gs", exc, self.poll_s)
            return None

    def _on_change(self, change: StoreChange | None) -> None:
        """On the listener's thread: wake the loop for a job of this optimization, its
        own task (a stop asked from elsewhere), or a gap (None: anything may have
        changed). ``in`` on the dict is one step under the GIL, safe while the loop
        changes it."""
        if change is None:
            self._own_changed = self._urgent = True
        elif change.task_id == self.task_id or change.task_id in self.active:
            if change.task_id == self.task_id:
                self._own_changed = True
            if change.reported:
                self._reports_waiting = True
            else:
                self._urgent = True
        else:
            return
        self._wake.set()

    def step(self) -> str | None:
        """One cycle of the loop, for a caller that drives it (a simulation): limits,
        new reports and ends, launches. Returns why the optimization ended, or None to go
        on. The first step restores the saved state, as ``run()`` does."""
        self._restore_once()
        return self._cycle()

    def progress(self) -> Progress:
        """Safe from another thread: list() copies the dict in one step, under the GIL."""
        active = list(self.active.values())
        finished = len(self.jobs) - len(active)
        return Progress(
            launched=len(self.jobs),
            running=sum(j.status is Status.running for j in active),
            queued=sum(j.status in (Status.queued, Status.created) for j in active),
            finished=finished,
            failed=self.failed,
            best_value=self.best.result[0] if self.best and self.best.result else None,
            best_task=self.best.task_id if self.best else None,
            elapsed_s=self.elapsed_s(), compute_s=self.compute_s(),
        )

    def best_jobs(self, top_k: int | None = None, *, only_completed: bool = False
                  ) -> list[Job]:
        """Finished jobs with a valid objective, best first (by the first objective)."""
        scored = [j for j in self.jobs.values() if j.finished and j.result is not None
                  and (not only_completed or j.status is Status.completed)]
        scored.sort(key=self._rank)
        return scored[:top_k] if top_k is not None else scored

    def _rank(self, job: Job) -> tuple[float, float, float, str]:
        budget = reached_budget(job.max_iteration, job.reached(),
                                job.budget_reached or job.status is Status.completed)
        return rank_key((job.result or [0.0])[0], budget, self.config.max_iteration_per_job,
                        self.config.objectives[0].minimize, ended_at=job.ended_at,
                        task_id=job.task_id)

    # ----- the cycle ----------------------------------------------------------------

    def _cycle(self) -> str | None:
        """One round: limits, new reports and ends, launches. Returns why the
        optimization ended, or None to go on."""
        reason = self._limit_reached()
        if reason:
            asked = self._stop_asked()
            self.end_status = (Status.failed if self.gave_up else
                               Status.stopped if asked else Status.completed)
            self._stop_everything(reason, rerun=asked)
            self._save()  # which jobs were cut short: resume runs them again
            if self.interrupted:
                reason += (f"; {len(self.interrupted)} job(s) cut short run again on "
                           "resume")
            return reason
        self._observe()
        self._launch()
        if self._dirty:
            self._save()
        if self._all_done():
            self.end_status = Status.completed
            return "search space exhausted" if self.strategy_done else "all jobs finished"
        self._reap_now_and_then()
        self._watch_agents()
        return None

    def _stop_asked(self) -> bool:
        """Whether the optimization ends because someone asked (not a budget)."""
        return self._stop.is_set() or self.store.get_task(self.task_id).stop_requested

    def _limit_reached(self) -> str | None:
        if self.gave_up:
            return self.gave_up
        if self._stop.is_set():
            return self._stop_reason or "stopped"
        if self._own_task_due() and self.store.get_task(self.task_id).stop_requested:
            return "stopped by request"
        limit = self.config.optimization_time_limit
        if limit is not None and self.elapsed_s() >= limit * 60:
            return f"optimization_time_limit of {limit:g} min reached"
        limit = self.config.compute_time_limit
        if limit is not None and self.compute_s() >= limit * 60:
            return f"compute_time_limit of {limit:g} min reached"
        return None

    def _own_task_due(self) -> bool:
        """Whether to read the optimizer's own task this cycle (a stop asked with
        ``hpo-controller stop``): a read per cycle is a third of an idle cycle's queries,
        and with wake-ups its change wakes the loop, so it is read then, and at least
        every CONTROLLER_FALLBACK_POLL_S in case a wake-up was lost."""
        now = self.clock.monotonic()
        if (self._listening and not self._own_changed
                and now - self._own_read_at < CONTROLLER_FALLBACK_POLL_S):
            return False
        self._own_changed = False  # before the read: a change during it is read next time
        self._own_read_at = now
        return True

    def _observe(self) -> None:
        """Read the active jobs' state and new objective reports; act on them."""
        if not self.active:
            return
        active = list(self.active.values())
        # Scalars after the records, in one transaction: an agent stores a job's last
        # reports before it marks the job finished, so a finished record's reports are
        # all read here.
        titles = sorted({o.title for o in self.config.objectives})
        found, scalars = self.store.read_jobs(
            [j.task_id for j in active], {j.task_id: j.cursor for j in active},
            titles=titles)
        records = {t.id: t for t in found}
        for scalar in scalars:
            job = self.active[scalar.task_id]
            job.cursor = max(job.cursor, scalar.id)
            index = job.objective_index(scalar.title, scalar.series)
            if (index is not None and job.record(index, scalar.iteration, scalar.value,
                                                 scalar.attempt) and index == 0):
                self._decide(job, scalar.iteration)
        for job in active:
            record = records.get(job.task_id)
            if record is None:
                continue
            job.update_from(record)
            if record.status is Status.created:
                self._enqueue(job)  # a clone made just before a crash, or a re-run
            elif job.task_id in self._interrupting and record.status is Status.stopped:
                self._shelve(job)
            elif job.task_id in self._rerun_when_stopped and record.status is Status.stopped:
                self._rerun(job)
            elif record.status in FINAL_STATUSES:
                self._judge_unread(job, record)
                self._finish(job, record.status)

    def _decide(self, job: Job, iteration: int) -> None:
        """After a report of the primary objective that counts: stop at the iteration
        budget (the job's tally has closed: later reports do not count, stop sent or
        not), or when the strategy says so (never before min_iteration_per_job)."""
        if job.stop_sent or job.finished:
            return
        if job.budget_reached:
            self._stop_job(job, f"max_iteration_per_job reached ({iteration} >= "
                           f"{job.budget})")
            return
        values = [v if v is not None else math.nan for v in job.last_values()]
        decision = self.strategy.on_report(job.trial_id, iteration, values)
        minimum = self.config.min_iteration_per_job or 0
        if decision is Decision.STOP and iteration >= minimum:
            self._stop_job(job, f"early-stopped by {type(self.strategy).__name__} at "
                           f"iteration {iteration}")

    def _finish(self, job: Job, status: Status) -> None:
        values = job.values() if status is not Status.failed else None
        self._settle(job, values)
        self.strategy.on_result(job.trial_id, values)
        self._dirty = True
        value = values[0] if values else None
        log.info("job %s %s: objective %s", job.task_id, status.value, value)
        self._judge_first_ends(None if values else (status, self._why_no_result(job, status)))
        if self.callback is not None:
            try:
                self.callback(job.task_id, value, job.iteration(), dict(job.parameters),
                              self.best.task_id if self.best else None)
            except Exception:
                log.exception("job_complete_callback failed for job %s", job.task_id)

    def _why_no_result(self, job: Job, status: Status) -> str:
        """One line on a job that ended without the objective, naming what it did."""
        task = self.store.get_task(job.task_id)
        if status is Status.failed:
            said = (task.status_message or "no message").splitlines()[0]
            why = f"job {job.task_id[:8]} failed ({said})"
        else:
            objective = self.config.objectives[0]
            reported = sorted({f"{s.title}/{s.series}" for s in
                               self.store.task_scalars(job.task_id)
                               if not s.title.startswith(":monitor")})
            why = (f"job {job.task_id[:8]} {status.value} without the objective "
                   f"{objective.title}/{objective.series}; it reported "
                   f"{', '.join(reported[:8]) if reported else 'no scalars'}")
        log.warning("%s", why)
        return why

    def _judge_unread(self, job: Job, record: TaskRecord) -> None:
        """A tuned parameter the job's script never read (the SDK tags the run
        ``unread:<key>``) tunes nothing, in every job alike: the search stops at the
        first, failed, naming the names the script did read that come close."""
        if self.gave_up or self.config.allow_new_parameters:
            return
        unread = {t[len(relations.UNREAD):] for t in record.tags
                  if t.startswith(relations.UNREAD)}
        tuned = [key for _name, key in self.config.tuned_keys() if key in unread]
        if not tuned:
            return
        read = [k for k in record.parameters if k not in unread]
        close = close_names(tuned[0], read)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        self.gave_up = (f"job {job.task_id[:8]}'s script never read the tuned parameter "
                        f"{tuned[0]}: {hint}fix its name in hyper_parameters, or set "
                        "allow_new_parameters: true if the script reads it another way")

    def _judge_first_ends(self, end: tuple[Status, str] | None) -> None:
        """fail_fast: when the first N jobs to finish all lack the objective, the
        optimization stops itself, failed, saying why (the next cycle acts on it)."""
        wanted = self.config.fail_fast
        if not wanted or self._ending or len(self._first_ends) >= wanted:
            return  # a job the end of the optimization cut short says nothing of its script
        self._first_ends.append(end)
        ends = [e for e in self._first_ends if e is not None]
        if len(self._first_ends) < wanted or len(ends) < wanted:
            return
        failed = all(status is Status.failed for status, _why in ends)
        fix = ("fix the script (`hpo task logs ID` shows its output)" if failed
               else "check objective_metric_title and _series against what the jobs "
               "report")
        self.gave_up = (f"the first {wanted} jobs to finish all ended without a result "
                        f"(last: {ends[-1][1]}): {fix}, or set fail_fast: 0 to go on "
                        "regardless")

    def _settle(self, job: Job, result: list[float] | None) -> None:
        """A job leaves the active set with its result."""
        job.finished = True
        job.result = result
        self.active.pop(job.task_id, None)
        self.finished_compute_s += job.compute_seconds(self.clock.time())
        self.failed += result is None
        if result is not None and (self.best is None or self._rank(job) < self._rank(self.best)):
            self.best = job

    def _launch(self) -> None:
        """Fill the free slots: suggestions are saved with their clones, in one
        transaction, so resume neither asks for them again nor loses one."""
        free = self.config.max_number_of_concurrent_tasks - len(self.active)
        total = self.config.total_max_jobs
        if total is not None:
            free = min(free, total - len(self.jobs))
        started = self.clock.monotonic()
        while len(self.pending) < free and not self.strategy_done and not self._stop.is_set():
            if self.pending and self.clock.monotonic() - started > LAUNCH_SLICE_S:
                # A slow strategy (a model fitted per draw): the rest next cycle, so that
                # reports, budgets and stop requests are watched between draws.
                break
            suggestion = self.strategy.suggest()
            if suggestion is NoSuggestion.DONE:
                self.strategy_done = True
            elif isinstance(suggestion, Suggestion):
                self.pending.append(suggestion)
                continue
            break
        if self.pending:
            self._start_jobs()

    def _start_jobs(self) -> None:
        """Clone the base task for every pending suggestion, queued, in the store's one
        transaction that saves the state with them (``Store.launch_clones``: a suggestion
        is never saved after its clone exists, and the state names them pending, which
        resume takes for launched), then publish their messages. Tracked before the
        publish: the suggestions are jobs now, whatever the broker does next. A broker
        that is down sends the unpublished ones back to created, and _observe enqueues
        them again (a suggestion kept pending would be cloned twice). A launch that
        raised may have committed all the same (its acknowledgement lost): the next one
        makes the same clones, by their fixed ids, and inserts only those missing."""
        queue = self.config.execution_queue
        suggestions = list(self.pending)
        for suggestion in suggestions:
            if suggestion.trial_id not in self._clones:
                self._clones[suggestion.trial_id] = self._clone_of(suggestion)
        try:
            ids = self.store.launch_clones(
                self.task_id, self._state(), self.base.id,
                [self._clones[s.trial_id] for s in suggestions], queue=queue,
                parent=self.task_id, project=self.config.spawn_project,
                only_missing=self._launch_unsure)
        except StoreError:
            self._launch_unsure = True
            raise
        # Saved above: the state in memory differs only in naming these jobs active.
        self.pending.clear()
        self._clones.clear()
        self._launch_unsure = False
        self._dirty = False
        for suggestion, task_id in zip(suggestions, ids, strict=True):
            job = self._track(task_id, suggestion)
            job.status = Status.queued
            continued = self.task_of_trial.get(suggestion.resume_from or "")
            if continued:
                job.inherit(self.jobs[continued])
        dispatch.publish_queued(self.store, self.app, ids, queue)

    def _clone_of(self, suggestion: Suggestion) -> NewClone:
        """The clone of the base task that runs ``suggestion``."""
        overrides = {P.qualify(k): v for k, v in suggestion.parameters.items()}
        described = " ".join(f"{k}={_short(v)}" for k, v in suggestion.parameters.items())
        limit = self.config.time_limit_per_job
        tags = [relations.tag(relations.OPTIMIZER, self.task_id),
                relations.tag(relations.TRIAL, suggestion.trial_id)]
        continued = self.task_of_trial.get(suggestion.resume_from or "")
        if continued:  # the agent hands it that job's checkpoint
            tags.append(relations.tag(relations.RESUME, continued))
        if suggestion.max_iteration is not None:  # ranked by it, also from the store
            tags.append(relations.tag(relations.BUDGET, suggestion.max_iteration))
        return NewClone(name=_clone_name(self.base.name, described), parameters=overrides,
                        tags=tags, time_limit=limit * 60 if limit else None)

    def _enqueue(self, job: Job) -> None:
        dispatch.enqueue(self.store, self.app, job.task_id, self.config.execution_queue)
        job.status = Status.queued

    def _track(self, task_id: str, suggestion: Suggestion) -> Job:
        job = Job(task_id=task_id, trial_id=suggestion.trial_id,
                  parameters=dict(suggestion.parameters),
                  max_iteration=suggestion.max_iteration,
                  objectives=list(self.config.objectives),
                  resume_from=suggestion.resume_from,
                  budget=iteration_budget(suggestion.max_iteration,
                                          self.config.max_iteration_per_job))
        self.jobs[task_id] = job
        self.active[task_id] = job
        self.task_of_trial[job.trial_id] = task_id
        return job

    def _stop_job(self, job: Job, reason: str, cause: StopCause = StopCause.limit) -> None:
        """Stop ``job``, recording whether a limit of the optimization (its budget, an
        early stop, a time limit) or the user asked (``hpo.optimization.ends``)."""
        job.stop_sent = True
        try:
            stop_job(self.store, job.task_id, cause, reason)
        except HpoError as exc:  # it ended meanwhile: nothing to stop
            log.debug("stop of job %s: %s", job.task_id, exc)

    def _stop_everything(self, reason: str, *, rerun: bool = False) -> None:
        """Stop every active job and wait (bounded) for them to end. With ``rerun`` (a
        stop someone asked for), the jobs it cuts short are no results: they run again
        on resume, as the same trials (``_shelve``), so that a Ctrl-C costs no trial."""
        self._ending = True
        for job in list(self.active.values()):
            if not job.stop_sent:
                self._stop_job(job, reason, StopCause.user if rerun else StopCause.limit)
                if rerun:
                    self._interrupting.add(job.task_id)
        deadline = self.clock.monotonic() + STOP_WAIT_S
        while self.active and self.clock.monotonic() < deadline:
            self._observe()
            self.clock.sleep(self.poll_s)

    def _rerun(self, job: Job) -> None:
        """A job the last session cut short whose stop landed only now: its task runs
        again from the start, as ``_restore`` does for one that had stopped already."""
        self._rerun_when_stopped.discard(job.task_id)
        self.store.reset(job.task_id)
        suggestion = _suggestion_of(job)
        fresh = self._track(job.task_id, suggestion)  # no reports yet; created
        fresh.status = Status.created
        continued = self.task_of_trial.get(suggestion.resume_from or "")
        if continued:  # a promoted job goes on from its parent's reports, as at launch
            fresh.inherit(self.jobs[continued])

    def _shelve(self, job: Job) -> None:
        """A job cut short by a stop request leaves the active set unheard: neither the
        strategy nor the counts see its end; ``_restore`` runs its task again."""
        self.active.pop(job.task_id, None)
        self._interrupting.discard(job.task_id)
        self.interrupted.add(job.task_id)
        self._dirty = True

    def _all_done(self) -> bool:
        if self.active or self.pending:
            return False
        total = self.config.total_max_jobs
        return self.strategy_done or (total is not None and len(self.jobs) >= total)

    def _watch_agents(self) -> None:
        """Jobs queued for a while and no live agent serving their queue: say so, with
        the command that serves it, and again now and then while it lasts (the store
        knows which queues agents serve; a user otherwise waits the whole time limit)."""
        now = self.clock.monotonic()
        if not any(j.status is Status.queued for j in self.active.values()):
            self._queued_since = None
            return
        self._queued_since = self._queued_since or now
        if now - self._queued_since < NO_AGENT_NOTICE_S or now < self._next_agent_check:
            return
        self._next_agent_check = now + NO_AGENT_CHECK_S
        queue = self.config.execution_queue
        fresh_after = self.store.now() - settings.lost_after_s()
        if any(queue in w.queues and w.last_heartbeat >= fresh_after
               for w in self.store.list_workers()):
            self._agent_notice_at = None
            return
        if self._agent_notice_at is None or now - self._agent_notice_at >= NO_AGENT_REPEAT_S:
            self._agent_notice_at = now
            self._notice(f"no live agent serves queue {queue!r}: the queued jobs wait until "
                         f"one does; start one with `hpo-agent --queue {queue}`")

    def _notice(self, text: str) -> None:
        log.warning("%s", text)
        self.notices.append(text)

    def _reap_now_and_then(self) -> None:
        if self.clock.monotonic() < self._next_reap:
            return
        self._next_reap = self.clock.monotonic() + REAP_PERIOD_S
        lost_after_s = settings.lost_after_s()
        try:
            # Right after an outage seen here, every agent's heartbeat looks stale:
            # judge none until they have had a lost-after period to beat again.
            if self._contact.may_judge(lost_after_s):
                reap(self.store, self.app, lost_after_s=lost_after_s)
            republish_lost(self.store, self.app)
        except HpoError as exc:
            log.warning("reaper failed: %s", exc)

    # ----- persistence --------------------------------------------------------------

    def _save(self) -> None:
        """Strategy state, pending suggestions and the active jobs, in one write."""
        self.store.save_optimization_state(self.task_id, self._state())
        self._dirty = False

    def _state(self) -> dict[str, Any]:
        """What resume needs, saved whole each time. The controller's part is bounded by
        the concurrency; the strategy's is its own (grid: an index; random: its seed, a
        count and a digest of what it drew; BOHB: its results)."""
        return {
            "strategy": self.strategy.state(),
            "pending": [_suggestion_dict(s) for s in self.pending],
            "active": {j.task_id: _suggestion_dict(_suggestion_of(j))
                       for j in [*self.active.values(),
                                 *(self.jobs[t] for t in sorted(self.interrupted))]},
            # With those still ending (past STOP_WAIT_S): they are cut short just the same.
            "interrupted": sorted(self.interrupted | self._interrupting),
            "strategy_done": self.strategy_done,
            "elapsed_s": self.elapsed_s(),
        }

    def _restore_once(self) -> None:
        if not self._restored:
            self._restore()
            self._restored = True

    def _restore(self) -> None:
        _config, state = self.store.load_optimization(self.task_id)
        if not state:
            return
        self.strategy.restore(state["strategy"])
        self.strategy_done = bool(state.get("strategy_done"))
        self.elapsed_before = float(state.get("elapsed_s", 0.0))
        active = {t: Suggestion(**s) for t, s in state.get("active", {}).items()}
        pending = {s["trial_id"]: Suggestion(**s) for s in state.get("pending", [])}
        for task_id in state.get("interrupted", []):
            # Cut short by the stop that ended the last session: its partial run is
            # cleared, and the same task (the same trial) runs again, whole. One whose
            # stop is still on its way is re-run as it ends (_rerun).
            if self.store.get_task(task_id).status is Status.stopped:
                self.store.reset(task_id)
            else:
                self._rerun_when_stopped.add(task_id)
        children = self.store.find_tasks(parent=self.task_id)
        stored = self._reports_of(children)
        for child in sorted(children, key=lambda c: c.created_at):
            trial = _trial_of(child)
            # A pending suggestion whose clone exists was launched: it keeps its budget,
            # and the strategy has not heard its end (it hears it in the next cycle).
            unheard = child.id in active or trial in pending
            suggestion = active.get(child.id) or pending.pop(trial, None) or Suggestion(
                trial, self._parameters_of(child), budget_of(child.tags))
            job = self._track(child.id, suggestion)
            if not unheard and child.status in FINAL_STATUSES:
                job.update_from(child)
                job.reports = stored[child.id]
                self._settle(job, job.values() if child.status is not Status.failed
                             else None)
            elif (inherited := stored[child.id].inherited) is not None:
                # Its own reports are read again from the start (cursor 0), after its
                # parent's, as when it was launched.
                job.reports.continue_from(inherited)
        self.pending = list(pending.values())
        # A crash between a job's enqueue and its publish leaves it queued with no
        # message: publish again. Delivery is at-least-once; the claim drops duplicates.
        for child in children:
            if child.id in self.active and child.status is Status.queued:
                publish(self.app, child.id, child.queue or self.config.execution_queue)
        log.info("optimization %s resumed: %d job(s) launched, %d active, %d to launch",
                 self.task_id, len(self.jobs), len(self.active), len(self.pending))

    def _parameters_of(self, child: TaskRecord) -> dict[str, Any]:
        names = [n for p in self.config.hyper_parameters for n in p.names]
        return {n: child.parameters.get(P.qualify(n)) for n in names}

    def _reports_of(self, children: list[TaskRecord]) -> dict[str, JobTally]:
        """Each job's reports that count, from the store, by the live loop's rule
        (hpo.optimization.tally: one query per objective title, the budget cut in SQL, a
        promoted job continued from its parent's)."""
        return stored_tallies(self.store, self.config.objectives, children,
                              self.config.max_iteration_per_job)


def _trial_of(child: TaskRecord) -> str:
    return relations.tag_value(child.tags, relations.TRIAL) or child.id


def _suggestion_of(job: Job) -> Suggestion:
    return Suggestion(job.trial_id, job.parameters, job.max_iteration, job.resume_from)


def _suggestion_dict(s: Suggestion) -> dict[str, Any]:
    return {"trial_id": s.trial_id, "parameters": s.parameters,
            "max_iteration": s.max_iteration, "resume_from": s.resume_from}


def _clone_name(base: str, described: str) -> str:
    """``"<base>: k=v ..."``, cut to what the store holds (many or long parameters would
    not fit): the parameters themselves are in the clone, whole."""
    name = f"{base}: {described}"
    if len(name) <= MAX_TASK_NAME_LEN:
        return name
    return name[:MAX_TASK_NAME_LEN - 1] + "…"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
