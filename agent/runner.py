"""Runs one claimed task in one slot: the script as a subprocess, its reports and output
into the store, stop requests and the time limit, and the outcome."""

from __future__ import annotations

import enum
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from hpo import defaults, relations
from hpo.agent import checkout, process
from hpo.agent.channel_server import ChannelServer
from hpo.agent.monitor import ResourceMonitor
from hpo.agent.outbox import PendingOutcome
from hpo.agent.recorder import Batch, Recorder
from hpo.agent.script_env import script_environment
from hpo.agent.slots import Slot
from hpo.agent.warm.slot import WarmSlots
from hpo.errors import HpoError, LostOwnership, StoreError, StoreRefusedValue, TaskNotFound
from hpo.lifecycle import Status
from hpo.queue.messages import dropped
from hpo.records import TaskRecord
from hpo.sdk import checkpoints
from hpo.store import Store

log = logging.getLogger("hpo.agent")

_READ_LIMIT = 64 * 1024
# What the end-of-run line adds for each way its outcome went (TaskRunner._record).
_OUTCOME_NOTES = {"recorded": "", "kept": "; its outcome is kept until the store is back",
                  "refused": "; its outcome was refused: another attempt owns the task"}


class CannotStart(Exception):
    """The task's script cannot be started here; the task fails with this message."""


class StopReason(enum.Enum):
    requested = "requested"  # an abort, through the store
    time_limit = "time_limit"
    requeue = "requeue"  # the agent is shutting down: the task goes back to its queue
    # Another attempt owns the task (this one was taken for lost: a freeze, a partition):
    # the store refused a write, or the stop poll saw the task move on.
    lost = "lost"


@dataclass(frozen=True)
class RunnerConfig:
    worker: str
    grace_s: float = defaults.GRACE_S
    python: str | None = None
    max_log_bytes: int = int(defaults.MAX_LOG_MB * 2**20)
    monitor_period_s: float = defaults.MONITOR_PERIOD_S
    poll_s: float = defaults.RUNNER_POLL_S
    checkpoint_root: Path | None = None  # None: hpo.sdk.checkpoints.checkpoint_root()
    code_cache: Path | None = None  # None: hpo.agent.checkout.code_cache()
    # The script gets the store and broker URLs even with a password (hpo-agent
    # --pass-credentials); broker_url: the agent's, for the script (hpo.agent.script_env).
    pass_credentials: bool = False
    broker_url: str | None = None
    warm: WarmSlots | None = None  # None: every script spawned (hpo-agent --spawn)


class TaskRunner:
    """One run of one task. ``stop()`` may be called from any thread.

    Its final writes never wait on the store: if they fail, they go to ``keep`` (the
    agent's outbox, which writes them when the store is back) and the slot is free."""

    def __init__(self, store: Store, config: RunnerConfig, slot: Slot,
                 requeue: Callable[[TaskRecord, int], None],
                 keep: Callable[[PendingOutcome], None],
                 channel: ChannelServer | None = None) -> None:
        """``channel``: the slot's report channel, kept across its tasks; None: one of
        the run's own."""
        self.store = store
        self._channel = channel
        self.config = config
        self.slot = slot
        self._requeue = requeue
        self._keep = keep
        self._stop_reason: StopReason | None = None
        self._stop_event = threading.Event()
        self.task_id: str | None = None
        self.attempt: int | None = None  # this run's own, once claimed: its fencing token
        self.script_ended = False  # its script has exited: a stop request is moot

    def stop(self, reason: StopReason) -> None:
        # A lost task overrides any other reason: nothing of this attempt is recorded.
        if self._stop_reason is None or reason is StopReason.lost:
            self._stop_reason = reason
        self._stop_event.set()

    def run(self, task_id: str) -> Status | None:
        """Claim and run the task; None when the claim fails (a stale message)."""
        claimed = self._claim(task_id)
        if claimed is None:
            # Only to choose the log line: a store that fails now must not send the stale
            # message back to the broker (it would come back, again and again).
            try:
                known = bool(self.store.get_tasks([task_id]))
            except StoreError as exc:
                log.info("task %s not claimed (not queued, or no such task; the store "
                         "cannot tell now: %s): message dropped", task_id, exc)
                return None
            if known:
                log.info("task %s is not queued any more: message dropped", task_id)
            else:
                dropped(f"no task with id {task_id}")
            return None
        task, attempt = claimed, claimed.attempt
        self.task_id, self.attempt = task_id, attempt
        if not self._prepare(task_id, attempt):
            return None
        log.info("task %s %r started in slot %s (attempt %d)", task_id, task.name,
                 self.slot.name, attempt)
        started = time.monotonic()
        status, message, exit_code, unwritten = self._execute(task, attempt)
        self.script_ended = True
        if status is None:  # re-queued on shutdown, or lost to another attempt
            return None
        recorded = self._record(PendingOutcome(task_id, attempt, status, message,
                                               exit_code, unwritten))
        log.info("task %s %s (%s) in %.1fs%s", task_id, status.value, message,
                 time.monotonic() - started, _OUTCOME_NOTES[recorded])
        return status

    def _claim(self, task_id: str) -> TaskRecord | None:
        """The claim. A store that fails it is waited for, backing off, up to
        START_WAIT_S, then asked what became of the task: still queued, it is claimed
        now; running under this agent's name, the claim went through and only its reply
        was lost: it is this run's, adopted (given back to the broker instead, it would
        be re-queued as an orphan and run as a second attempt). StoreError past the
        wait, or on a stop (a shutdown): the worker gives the message back."""
        try:
            return self.store.claim_task(task_id, self.config.worker)
        except StoreError as exc:
            failure = exc
        for _ in self._store_waits():
            try:
                task = self.store.get_task(task_id)
                if task.status is Status.queued:
                    return self.store.claim_task(task_id, self.config.worker)
                if task.status is Status.running and task.worker == self.config.worker:
                    log.warning("task %s: its claim went through though the store's reply "
                                "was lost; running it (attempt %d)", task_id, task.attempt)
                    return task
                return None
            except TaskNotFound:
                return None
            except StoreError as exc:
                failure = exc
        raise failure

    def _prepare(self, task_id: str, attempt: int) -> bool:
        """A re-run's earlier attempts' reports dropped (a first attempt has none). A
        store that fails here (an outage that began with the claim) is waited for,
        backing off, up to START_WAIT_S: the slot is this task's anyway, and a re-queue
        would run it twice. Past that, or on a stop (a shutdown), the attempt is given
        back through the outbox (False)."""
        if attempt <= 1:
            return True
        waits = self._store_waits()
        while True:
            try:
                self.store.drop_earlier_attempts(task_id, attempt)
                return True
            except StoreError as exc:
                if next(waits, 0.0) == 0.0:
                    self._keep(PendingOutcome(task_id, attempt, None,
                                              f"the store failed before the script "
                                              f"started ({exc}); re-queued"))
                    return False

    def _store_waits(self) -> Iterator[float]:
        """The pauses before each retry of a store that failed as the run starts (each
        yielded once waited), backing off from OUTBOX_RETRY_FIRST_S to
        OUTBOX_RETRY_MAX_S; none past START_WAIT_S, or once the run is stopped."""
        delay, deadline = defaults.OUTBOX_RETRY_FIRST_S, time.monotonic() + defaults.START_WAIT_S
        while time.monotonic() + delay <= deadline and not self._stop_event.wait(delay):
            yield delay
            delay = min(delay * 2, defaults.OUTBOX_RETRY_MAX_S)

    def _record(self, outcome: PendingOutcome) -> str:
        """The run's last reports and its end in one transaction, unless the store fails
        (or refuses a value in them: the outbox writes the batches one by one and drops
        the bad one): then the outcome is kept, to be written when the store is back.
        Returns which: "recorded", "refused" (another attempt owns the task) or "kept"."""
        if outcome.status is not None:
            try:
                if self.store.finish_with_batches(
                        outcome.task_id, outcome.attempt, outcome.status,
                        exit_code=outcome.exit_code, message=outcome.message,
                        batches=[b.arguments() for b in outcome.batches]):
                    return "recorded"
                refusal = f"attempt {outcome.attempt} no longer owns the task"
            except LostOwnership as exc:
                refusal = str(exc)
            except StoreRefusedValue as exc:
                log.warning("task %s: the store refused a value in its last reports (%s)",
                            outcome.task_id, exc)
                refusal = None
            except StoreError as exc:
                log.warning("task %s: cannot record its outcome now: %s",
                            outcome.task_id, exc)
                refusal = None
            if refusal is not None:
                log.warning("task %s: %s; outcome %s not recorded", outcome.task_id,
                            refusal, outcome.status.value)
                return "refused"
        self._keep(outcome)
        return "kept"

    def _execute(self, task: TaskRecord, attempt: int
                 ) -> tuple[Status | None, str, int | None, list[Batch]]:
        """Run the script to its end: (status, message, exit code, the reports not
        written yet); a None status when the run is not this attempt's to record."""
        recorder = Recorder(self.store, task.id, attempt,
                            max_log_bytes=self.config.max_log_bytes,
                            on_lost=lambda _why: self.stop(StopReason.lost))
        server = self._channel or ChannelServer()
        server.open_route(task.id, attempt, recorder.on_message)
        try:
            try:
                argv, cwd = self._command(task)
                proc = process.start(
                    argv, cwd, self._environment(task, attempt, server),
                    warm=self.config.warm.slot(self.slot.name) if self.config.warm else None,
                    preload=(task.script.preload if task.script else None) or [],
                    note=lambda line: recorder.on_output("stderr", line + "\n"))
            except (CannotStart, OSError) as exc:
                return Status.failed, f"cannot start the script: {exc}", None, recorder.end()
            readers = [
                threading.Thread(target=_pump, args=(stream, name, recorder), daemon=True)
                for stream, name in ((proc.stdout, "stdout"), (proc.stderr, "stderr"))
            ]
            for reader in readers:
                reader.start()
            reason = self._supervise(proc, task, recorder)
            for reader in readers:
                reader.join(timeout=defaults.OUTPUT_DRAIN_S)
        finally:
            server.end_route()
            if server is not self._channel:
                server.close()
            left = recorder.end()
        status, message, exit_code = self._outcome(task, attempt, proc.returncode, reason,
                                                   recorder)
        return status, message, exit_code, left if status else []

    def _supervise(self, proc: process.ScriptProcess, task: TaskRecord,
                   recorder: Recorder) -> StopReason | None:
        """Wait for the script; stop it on request or at its time limit."""
        monitor = ResourceMonitor(proc.pid, self.slot.gpus)
        start = time.monotonic()
        deadline = start + task.time_limit if task.time_limit else None
        next_sample = start + min(1.0, self.config.monitor_period_s)
        while True:
            try:
                # Returns the moment the script exits: the next task starts sooner.
                proc.wait(timeout=self.config.poll_s)
                return None
            except subprocess.TimeoutExpired:
                pass
            if self._stop_event.is_set():
                process.terminate_tree(proc, self.config.grace_s)
                return self._stop_reason
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self.stop(StopReason.time_limit)
                continue
            if now >= next_sample:
                recorder.add_scalars(monitor.sample(int(now - start), time.time()))
                next_sample = now + self.config.monitor_period_s

    def _outcome(self, task: TaskRecord, attempt: int, returncode: int | None,
                 reason: StopReason | None, recorder: Recorder
                 ) -> tuple[Status | None, str, int | None]:
        if reason is StopReason.lost or recorder.lost is not None:
            why = recorder.lost or f"task {task.id}: attempt {attempt} no longer owns it"
            log.warning("%s; its script was stopped and nothing more of it is recorded", why)
            self._end_if_still_owned(task.id, attempt)
            return None, "lost", None
        if reason is StopReason.requeue:
            try:
                self._requeue(task, attempt)
                log.info("task %s re-queued: the agent is shutting down", task.id)
            except HpoError:  # the store is away, or the broker after the store change
                self._keep(PendingOutcome(task.id, attempt, None,
                                          f"agent {self.config.worker} shut down; re-queued"))
            return None, "re-queued", None
        if reason is StopReason.requested:
            return Status.stopped, self._stop_message(task.id), returncode
        if reason is StopReason.time_limit:
            return Status.stopped, f"time limit of {task.time_limit:g}s reached", returncode
        assert returncode is not None
        if returncode == 0:
            return Status.completed, "exit code 0", 0
        tail = recorder.last_lines(10)
        message = process.describe_exit(returncode)
        return Status.failed, f"{message}; last output:\n{tail}" if tail else message, \
            returncode

    def _stop_message(self, task_id: str) -> str:
        """Why the user stopped it (the abort's message), as the store has it."""
        try:
            return self.store.get_task(task_id).status_message or "stopped by request"
        except StoreError:
            return "stopped by request"

    def _end_if_still_owned(self, task_id: str, attempt: int) -> None:
        """After a stop for a loss: should the store still show this attempt running (a
        mistaken verdict), fail it (fenced) rather than leave it running forever under
        an agent whose heartbeat is fresh, where no reaper would ever take it."""
        try:
            current = self.store.get_task(task_id)
            if current.status is Status.running and current.attempt == attempt:
                log.warning("task %s: attempt %d was stopped as lost but still owns it; "
                            "recorded as failed", task_id, attempt)
                self.store.finish(task_id, attempt, Status.failed,
                                  message="the agent stopped it, taking it for lost to "
                                          "another attempt; see the agent's log")
        except Exception:
            log.exception("task %s: could not check whether attempt %d still owns it",
                          task_id, attempt)

    def _command(self, task: TaskRecord) -> tuple[list[str], str]:
        """The script where it was registered, when this host has it (the same host, a
        shared volume, an image); else its recorded commit and changes, checked out
        into the code cache. The interpreter: the agent's ``--python`` when given, else
        the recorded one when this host has it, else the agent's own."""
        script = task.script
        if script is None:
            raise CannotStart(f"task {task.id} has no script (create it with a --script)")
        entry, workdir = Path(script.entry_point), Path(script.working_dir)
        if not entry.is_file():
            try:
                entry, workdir = checkout.materialize(
                    script, self.config.code_cache or checkout.code_cache())
            except checkout.CheckoutError as exc:
                raise CannotStart(str(exc)) from None
            log.info("task %s: running %s from its recorded commit %s", task.id, entry,
                     (script.commit or "")[:12])
            if not entry.is_file():
                raise CannotStart(f"{script.entry_point} is not in commit "
                                  f"{(script.commit or '')[:12]} of {script.repository}: "
                                  "commit it (untracked files do not travel)")
        if self.config.python and not shutil.which(self.config.python):
            raise CannotStart(f"the agent's --python {self.config.python} is gone from "
                              "this host: restart the agent with one that exists")
        interpreter = self.config.python or script.interpreter
        if not interpreter or not shutil.which(interpreter):
            interpreter = sys.executable
        cwd = str(workdir) if workdir.is_dir() else os.getcwd()
        return [interpreter, str(entry), *script.argv], cwd

    def _environment(self, task: TaskRecord, attempt: int, server: ChannelServer
                     ) -> dict[str, str]:
        spec = {"id": task.id, "project": task.project, "name": task.name, "type": task.type,
                "attempt": attempt, "parameters": task.parameters, "tags": task.tags,
                "comment": task.comment, **self._checkpoints(task)}
        spec_path = server.folder / "spec.json"
        _rewrite(spec_path, json.dumps(spec).encode())
        env = script_environment(os.environ, keep_credentials=self.config.pass_credentials,
                                 store_url=self.store.url, broker_url=self.config.broker_url)
        env.update(self.slot.environment())
        env.update({
            defaults.ENV_TASK_ID: task.id,
            defaults.ENV_TASK_SPEC: str(spec_path),
            defaults.ENV_REPORT_ADDR: server.address,
            "PYTHONUNBUFFERED": "1",
        })
        return env


    def _checkpoints(self, task: TaskRecord) -> dict[str, Any]:
        """Where the task saves its state, and the state it continues, if any: a task
        tagged resume:<id> continues that task's last complete checkpoint."""
        root = self.config.checkpoint_root or checkpoints.checkpoint_root()
        spec: dict[str, Any] = {"checkpoint_dir": str(checkpoints.folder_of(task.id, root))}
        parent = relations.tag_value(task.tags, relations.RESUME)
        if parent:
            folder = checkpoints.folder_of(parent, root)
            iteration = checkpoints.saved_iteration(folder)
            if iteration is not None:
                spec.update(resume_checkpoint=str(folder), resume_iteration=iteration)
        return spec


def _rewrite(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` only: written over in place, not replaced by a new file.
    The slot's folder serves one task after another, and the task's script, which
    reads it, starts once this returns. A new file and a rename (or a truncation to
    empty) free the old file's blocks: on a file system mounted with ``discard`` that
    cost a quarter to one millisecond of each task's start here, this about 10 us."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        written = 0
        while written < len(data):
            written += os.pwrite(fd, data[written:], written)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def _pump(stream: IO[bytes] | None, name: str, recorder: Recorder) -> None:
    if stream is None:
        return
    with stream:
        # Bounded reads: a script that prints without newlines must not fill memory.
        for raw in iter(lambda: stream.readline(_READ_LIMIT), b""):
            recorder.on_output(name, raw.decode("utf-8", errors="replace"))
