"""The agent: a Celery worker whose concurrency is its slots, plus the threads that keep
it honest (heartbeats, stop requests, the reaper) and its shutdown policy."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType

from celery import Celery
from celery.exceptions import Reject
from celery.worker import WorkController
from celery.worker import state as celery_state

from hpo import defaults, settings
from hpo.agent import bytecode
from hpo.agent.channel_server import ChannelServer
from hpo.agent.consumer import AgentConsumer
from hpo.agent.outbox import Outbox, PendingOutcome, outbox_folder
from hpo.agent.runner import RunnerConfig, StopReason, TaskRunner
from hpo.agent.script_env import script_environment
from hpo.agent.slots import Slot, SlotPool
from hpo.agent.warm.slot import WarmSlots, discard_ahead
from hpo.errors import LostOwnership, StoreError
from hpo.lifecycle import Status
from hpo.limits import EMBEDDED_PREFIXES
from hpo.queue import dispatch
from hpo.queue.app import RUN_TASK, load_app_modules, make_app, safe_broker_url
from hpo.queue.messages import arguments_problem, dropped
from hpo.queue.reaper import StoreContact, end_stuck_sessions, reap, republish_lost
from hpo.records import TaskRecord
from hpo.store import open_store
from hpo.store.engine import safe_url
from hpo.wakeups import Listener, ListenerUnavailable, StoreChange, listen_to_store

log = logging.getLogger("hpo.agent")


@dataclass
class AgentConfig:
    name: str
    queues: list[str]
    slots: list[Slot]
    runner: RunnerConfig
    store_url: str | None = None
    broker_url: str | None = None
    shutdown_timeout_s: float = defaults.SHUTDOWN_TIMEOUT_S
    heartbeat_s: float = defaults.HEARTBEAT_S
    lost_after_s: float = field(default_factory=settings.lost_after_s)
    retries: int = defaults.LOST_TASK_RETRIES
    host: str = field(default_factory=socket.gethostname)
    outbox_dir: Path | None = None  # None: outbox_folder(), $HPO_HOME/outbox
    exit_with: int | None = None  # the parent whose end stops this agent (--exit-with)
    # Modules each slot's warm process preloads besides hpo (hpo-agent --preload); None:
    # no warm processes, every script spawned (hpo-agent --spawn; hpo-agent's default
    # is warm, with [] when no --preload is given).
    preload: list[str] | None = None
    # Celery's task events, for Flower's Tasks page (hpo-agent --events); off: only the
    # worker events (Flower's Workers page) are sent.
    events: bool = False


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.store = open_store(config.store_url)
        self.app = make_app(config.broker_url)
        self.pool = SlotPool(config.slots)
        self.warm = self._warm_slots()
        self.runner_config = replace(config.runner, warm=self.warm)
        self.runners: dict[str, TaskRunner] = {}
        self.outbox = Outbox(config.outbox_dir or outbox_folder(), self.store,
                             self._requeue_by_id)
        self._outbox_wake = threading.Event()
        self._contact = StoreContact()
        self._lock = threading.Lock()
        # Draining: no new tasks (after a signal). Closed: the worker has stopped.
        self._draining = threading.Event()
        self._closed = threading.Event()
        self._signals = 0
        self._channels: dict[str, ChannelServer] = {}  # each slot's, by slot name
        self._register_celery_task()

    def _warm_slots(self) -> WarmSlots | None:
        """A warm process per slot, with what each of its tasks gets of this agent's
        environment (the slot's GPUs included): what a preloaded module reads at import
        is what the task would read."""
        if self.config.preload is None:
            discard_ahead()
            return None
        base = script_environment(os.environ,
                                  keep_credentials=self.config.runner.pass_credentials,
                                  store_url=self.store.url,
                                  broker_url=self.config.runner.broker_url)
        return WarmSlots({slot.name: {**base, **slot.environment()}
                          for slot in self.config.slots}, self.config.preload)

    # ----- running tasks ------------------------------------------------------------

    def _register_celery_task(self) -> None:
        agent = self

        @self.app.task(name=RUN_TASK, acks_late=True, ignore_result=True)
        def run_task(*args: object, **kwargs: object) -> None:
            # AgentConsumer checked the message already; this is the last line before
            # a slot and the store, for a message that reached the task another way.
            problem = arguments_problem(args, kwargs)
            if problem:
                dropped(problem)
                return
            agent.handle(str(args[0]))

    def handle(self, task_id: str) -> None:
        """Run one message's task in a free slot. Called on a Celery pool thread with a
        task id that ``task_id_problem`` accepted."""
        if self._draining.is_set():
            # Shutting down: the message goes back to the broker for another agent.
            raise Reject("agent shutting down", requeue=True)
        with self.pool.taken() as slot:
            runner = TaskRunner(self.store, self.runner_config, slot, self._requeue,
                                self._keep, self._channel_of(slot))
            with self._lock:  # checked and taken at once: two copies may arrive together
                duplicate = task_id in self.runners
                if not duplicate:
                    self.runners[task_id] = runner
            if duplicate:
                # A second message for a task this agent runs (a re-published one): its
                # claim would fail anyway, and it must not take the first runner's place
                # (the task, no longer in runners, would look orphaned and be re-queued).
                log.info("task %s already runs here: duplicate message dropped", task_id)
                return
            try:
                self._run(runner, task_id)
            finally:
                with self._lock:
                    if self.runners.get(task_id) is runner:
                        del self.runners[task_id]

    def _channel_of(self, slot: Slot) -> ChannelServer:
        """The slot's report channel, made on its first task and kept for the next."""
        with self._lock:
            server = self._channels.get(slot.name)
            if server is None:
                server = self._channels[slot.name] = ChannelServer()
            return server

    def _run(self, runner: TaskRunner, task_id: str) -> None:
        try:
            runner.run(task_id)
        except LostOwnership as exc:
            log.warning("task %s: %s; nothing more of it is recorded", task_id, exc)
        except StoreError as exc:
            if runner.task_id is None:
                # The store failed before the claim: give the message back to the broker
                # rather than drop it and leave the task queued with no message.
                log.warning("task %s: store unavailable before the claim (%s); message "
                            "returned to the broker", task_id, exc)
                time.sleep(defaults.STORE_RETRY_S)
                raise Reject(str(exc), requeue=True) from None
            log.exception("task %s: the store failed while running it; re-queued once "
                          "the store is back", task_id)
            assert runner.attempt is not None
            self._keep(PendingOutcome(task_id, runner.attempt, None,
                                      "the store failed while the agent ran it; re-queued"))
        except Exception:
            log.exception("task %s: the agent failed to run it", task_id)
            self._fail_after_agent_error(runner)

    def _fail_after_agent_error(self, runner: TaskRunner) -> None:
        """Fail the runner's own attempt (fenced: a no-op once another attempt owns the
        task), never the attempt the store shows now, which may be someone else's."""
        if runner.task_id is None or runner.attempt is None:
            return
        message = "the agent failed while running it; see its log"
        try:
            self.store.finish(runner.task_id, runner.attempt, Status.failed, message=message)
        except StoreError:
            self._keep(PendingOutcome(runner.task_id, runner.attempt, Status.failed, message))

    def _requeue(self, task: TaskRecord, attempt: int) -> None:
        dispatch.requeue(self.store, self.app, task, attempt,
                         f"agent {self.config.name} shut down; re-queued")

    def _requeue_by_id(self, task_id: str, attempt: int, message: str) -> Status | None:
        return dispatch.requeue(self.store, self.app, self.store.get_task(task_id), attempt,
                                message)

    def _keep(self, outcome: PendingOutcome) -> None:
        """An outcome the store could not take now: the outbox writes it when it can."""
        self.outbox.put(outcome)
        self._outbox_wake.set()

    def _outbox_loop(self) -> None:
        """Write kept outcomes: at once when one arrives, then after 0.5 s, 1 s, 2 s ...
        up to OUTBOX_RETRY_MAX_S while the store stays away, for as long as it does."""
        delay = defaults.OUTBOX_RETRY_FIRST_S
        while not self._closed.is_set():
            self._outbox_wake.wait(delay)
            self._outbox_wake.clear()
            if not len(self.outbox):
                delay = defaults.OUTBOX_RETRY_FIRST_S
                continue
            if self.outbox.deliver():
                delay = min(delay * 2, defaults.OUTBOX_RETRY_MAX_S)
            else:
                delay = defaults.OUTBOX_RETRY_FIRST_S

    def _owned(self) -> set[str]:
        """The tasks this agent vouches for: running here, or their outcome kept.
        Runners first: a runner hands its outcome to the outbox before it leaves."""
        with self._lock:
            running = set(self.runners)
        return running | self.outbox.task_ids()

    # ----- background threads -------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        self._heartbeat()
        next_reap = 0.0
        while not self._closed.wait(self.config.heartbeat_s):
            self._heartbeat()
            if self.config.exit_with is not None and os.getppid() != self.config.exit_with:
                log.warning("process %d, which started this agent, has ended: stopping",
                            self.config.exit_with)
                self.config.exit_with = None  # once
                os.kill(os.getpid(), signal.SIGTERM)  # the warm shutdown, on the main thread
            if time.monotonic() >= next_reap:
                next_reap = time.monotonic() + defaults.REAP_PERIOD_S
                self._reap()

    def _heartbeat(self) -> None:
        try:
            self.store.heartbeat(self.config.name, queues=self.config.queues,
                                 slots=[s.name for s in self.config.slots],
                                 running=sorted(self._owned()), host=self.config.host,
                                 pid=os.getpid())
            self._contact.answered()
        except Exception as exc:
            self._contact.failed()
            log.warning("heartbeat failed: %s", exc)

    def _reap(self) -> None:
        try:
            self._requeue_orphans()
        except Exception as exc:
            log.warning("checking this agent's own tasks failed: %s", exc)
        if not self._contact.may_judge(self.config.lost_after_s):
            # The store was away from here too: other agents' heartbeats may be stale
            # for the same reason; judge them once they have had time to beat again.
            return
        try:
            for task, status in reap(self.store, self.app, lost_after_s=self.config.lost_after_s,
                                     retries=self.config.retries):
                log.warning("task %s of lost agent %s: %s", task.id, task.worker, status.value)
        except Exception as exc:
            log.warning("reaper failed: %s", exc)
        try:
            republish_lost(self.store, self.app)  # logs each task it publishes again
        except Exception as exc:
            log.warning("republishing lost messages failed: %s", exc)

    def _stop_request_loop(self) -> None:
        """Every STOP_POLL_S, and at once when the store announces a change to a task
        running here (a stop request: ``hpo.wakeups``), act on stop requests and losses."""
        wake = threading.Event()

        def on_change(change: StoreChange | None) -> None:
            if stop_look_needed(change, self.runners):
                wake.set()

        try:
            listener: Listener | None = listen_to_store(self.store.engine, on_change)
        except ListenerUnavailable as exc:
            log.info("no wake-ups from the store (%s): stop requests are polled every "
                     "%gs", exc, defaults.STOP_POLL_S)
            listener = None
        try:
            self._serve_stop_requests(wake)
        finally:
            if listener is not None:
                listener.close()

    def _serve_stop_requests(self, wake: threading.Event) -> None:
        while not self._closed.is_set():
            wake.wait(defaults.STOP_POLL_S)
            wake.clear()
            if self._closed.is_set():
                return
            # The attempts are taken BEFORE the read: a claim that commits between the
            # two must not make the read's older state (still queued) look like a loss.
            with self._lock:
                runners = dict(self.runners)
                owned = {task_id: runner.attempt for task_id, runner in runners.items()
                         if runner.attempt is not None}
            if not owned:
                continue
            try:
                tasks = self.store.get_tasks(list(owned))
            except Exception as exc:
                log.warning("cannot read stop requests: %s", exc)
                continue
            for task_id, reason in stop_decisions(owned, tasks).items():
                runners[task_id].stop(reason)

    # ----- life cycle ---------------------------------------------------------------

    def run(self) -> int:
        """Serve until a signal; returns the exit code after the warm shutdown."""
        if self.warm is not None:
            # First, in the background: a new interpreter's start-up and its preloads
            # then go on while this one registers and starts consuming (a slot's first
            # task waits for its warm process).
            self.warm.start()
        bytecode.write_cache_in_background()  # tasks import hpo without compiling it
        self.outbox.deliver()  # what a previous process kept, before anything else
        self._requeue_orphans()
        # The first heartbeat (the agent's registration) is the heartbeat thread's first
        # write, while the Celery worker starts here: a write that waits for the store
        # must not hold back the first message.
        threads = [threading.Thread(target=self._heartbeat_loop, name="hpo-heartbeat",
                                    daemon=True),
                   threading.Thread(target=self._stop_request_loop, name="hpo-stops",
                                    daemon=True),
                   threading.Thread(target=self._outbox_loop, name="hpo-outbox",
                                    daemon=True)]
        for thread in threads:
            thread.start()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        log.info("agent %s serving queues %s with %d slot(s): %s", self.config.name,
                 ", ".join(self.config.queues), len(self.config.slots),
                 ", ".join(s.name for s in self.config.slots))
        log.info("agent %s uses store %s and broker %s", self.config.name,
                 safe_url(self.store.url), safe_broker_url(self.app))
        worker = celery_worker(self.app, self.config)
        try:
            worker.start()
        finally:
            self._closed.set()
            self._requeue_running()
            # A heartbeat still in flight would register the agent again after it left.
            threads[0].join(defaults.KILL_WAIT_S)
            self._leave()
            for server in self._channels.values():
                server.close()
            self._close_warm_slots()
        return int(worker.exitcode or 0)

    def _close_warm_slots(self) -> None:
        """Stop the warm processes (they would also end at this process's exit, when
        their socket closes). Not waited for past KILL_WAIT_S: one still importing its
        preloads holds its slot until it is done."""
        if self.warm is None:
            return
        closer = threading.Thread(target=self.warm.close, name="hpo-warm-close", daemon=True)
        closer.start()
        closer.join(defaults.KILL_WAIT_S)

    def _leave(self) -> None:
        """Write what is kept (one last try), then unregister. Outcomes still kept stay
        on disk for the next agent started on this host; meanwhile their tasks, no longer
        vouched for, are re-queued by a reaper, which fences the kept outcome off."""
        try:
            left = self.outbox.deliver()
            self.store.remove_worker(self.config.name)
        except Exception as exc:
            left = len(self.outbox)
            log.warning("could not unregister from the store: %s", exc)
        if left:
            log.warning("%d outcome(s) not written yet, kept in %s for the next agent "
                        "started on this host", left, self.outbox.folder)
        log.info("agent %s stopped", self.config.name)

    def _requeue_orphans(self) -> None:
        """Tasks the store shows running under this agent's name that it does not vouch
        for: left by a previous process of it that died, or claimed by a commit whose
        reply the store never sent (a cut connection). Re-queued (failed when out of
        retries); fenced by attempt, so a task that ended meanwhile is left alone. Run
        in the heartbeat thread, like the reaper: a row another session holds is skipped
        (next round), never waited for."""
        tasks = self.store.find_tasks(status=Status.running, worker=self.config.name)
        owned = self._owned()  # read after the tasks: a claim registers its runner first
        orphans = [task for task in tasks if task.id not in owned]
        if orphans:  # a previous process's session may still hold one's row lock
            end_stuck_sessions(self.store)
        for task in orphans:
            if task.attempt <= self.config.retries:
                if dispatch.requeue(self.store, self.app, task, task.attempt,
                                    f"agent {self.config.name} no longer ran it; re-queued",
                                    skip_locked=True):
                    log.warning("task %s ran under this agent's name but not here; "
                                "re-queued", task.id)
            elif self.store.finish(task.id, task.attempt, Status.failed,
                                   message=f"agent lost: {self.config.name} no longer ran "
                                           "it (no retries left)", skip_locked=True):
                log.warning("task %s ran under this agent's name but not here; failed "
                            "(no retries left)", task.id)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            with self._lock:
                count = len(self.runners)
            log.info("%s: warm shutdown: no new tasks; %d running task(s) get %.0fs to "
                     "finish, then are stopped and re-queued (signal again to do it now)",
                     name, count, self.config.shutdown_timeout_s)
            self._draining.set()
            threading.Thread(target=self._requeue_after_timeout, daemon=True).start()
            celery_state.should_stop = 0  # Celery's warm shutdown: stop consuming
        else:
            log.info("%s: stopping running tasks now and re-queueing them", name)
            self._requeue_running()

    def _requeue_after_timeout(self) -> None:
        deadline = time.monotonic() + self.config.shutdown_timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self.runners:
                    return
            time.sleep(defaults.WATCH_POLL_S)
        self._requeue_running()

    def _requeue_running(self) -> None:
        with self._lock:
            runners = list(self.runners.values())
        for runner in runners:
            runner.stop(StopReason.requeue)


def warm_up(broker_url: str) -> None:
    """What an agent does at its start that needs neither its options, its store nor
    any I/O, done ahead by a process that becomes an agent later (hpo-controller's forked
    local agents, while they wait for their queue): the modules of a Celery app and of the
    parts Celery makes at a worker's start (on a throwaway app), and those of the worker's
    start-up steps. It opens no connection and creates nothing: the controller checks
    the same broker meanwhile (two processes creating a new database's tables at once can
    fail), and a broker that does not answer must not hold a fork. The agent's own app
    (make_app, at its start) creates the embedded broker's tables. Best effort: what
    fails here is done again, and reported, by the agent itself."""
    from celery.concurrency import get_implementation
    from celery.utils.imports import symbol_by_name
    from celery.worker.consumer import Consumer

    try:
        load_app_modules(broker_url)
        for step in (*WorkController.Blueprint.default_steps,
                     *Consumer.Blueprint.default_steps):
            symbol_by_name(step)
        get_implementation("threads")
        import celery.worker.strategy  # noqa: F401 - at the first task's registration
        if broker_url.startswith(EMBEDDED_PREFIXES):
            import hpo.queue.embedded  # noqa: F401 - its transport
    except Exception as exc:
        log.debug("warm-up left off: %s", exc)


def celery_worker(app: Celery, config: AgentConfig) -> WorkController:
    """The Celery worker of an agent (not started): one thread per slot, a message at a
    time per slot, task events only with ``config.events``."""
    return WorkController(
        app=app, hostname=f"{config.name}@{config.host}",
        queues=config.queues, concurrency=len(config.slots), pool_cls="threads",
        prefetch_multiplier=1, without_mingle=True, without_gossip=True,
        # Celery's event heartbeat (a worker-heartbeat event every 2 s; the store
        # heartbeat is hpo's own) is what Flower's Workers page lists and calls online:
        # without it an idle agent is not there at all. It is sent with task events off
        # too (Celery's Events step then enables only the "worker" group).
        without_heartbeat=False, task_events=config.events, loglevel=logging.WARNING,
        # Bad messages are dropped in one line, never stop the loop (consumer.py).
        consumer_cls=AgentConsumer,
    )


def stop_look_needed(change: StoreChange | None, runners: Mapping[str, TaskRunner]) -> bool:
    """Whether a change the store announced calls for a look at stop requests now: a
    gap in the wake-ups (None), or a change other than new reports to a task running
    here whose script has not ended. An ended one has nothing left to stop: the change
    is its own finish, heard before its runner leaves, and not worth a read."""
    if change is None:
        return True
    if change.reported:
        return False
    runner = runners.get(change.task_id)
    return runner is not None and not runner.script_ended


def stop_decisions(owned: Mapping[str, int], tasks: Iterable[TaskRecord]
                   ) -> dict[str, StopReason]:
    """What the stop poll does with each runner: ``owned`` is each claimed runner's
    attempt, taken before ``tasks`` were read (a runner not claimed then is not in it).

    Lost only when the store shows a newer attempt, or this same attempt no longer
    running (re-queued, claimed again or ended while this agent was away); a read older
    than the claim (the task still queued, an earlier attempt) is no loss. A stop request
    counts for the attempt it was made on."""
    decisions: dict[str, StopReason] = {}
    for task in tasks:
        attempt = owned.get(task.id)
        if attempt is None or task.attempt < attempt:
            continue
        if task.attempt > attempt or task.status is not Status.running:
            decisions[task.id] = StopReason.lost
        elif task.stop_requested:
            decisions[task.id] = StopReason.requested
    return decisions
