"""The SDK's side of a script run by hand: it writes to the store directly. Imported only
then (it pulls in SQLAlchemy), never in a task run by an agent.

A run by hand records what an agent run records: its stdout and stderr (``output``,
bounded like an agent's log), scalars, reports and parameter changes, written by one
flusher thread every ``SDK_FLUSH_PERIOD_S`` in one transaction each, so the script's
loop never waits on the store."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Any

from hpo.defaults import MAX_LOG_MB, SDK_FLUSH_BATCH, SDK_FLUSH_PERIOD_S
from hpo.errors import StoreRefusedValue
from hpo.lifecycle import FINAL_STATUSES, Status, TaskType
from hpo.records import TaskRecord
from hpo.sdk import checkpoints
from hpo.sdk.output import OutputCapture
from hpo.sdk.script_info import current_script
from hpo.store import ArtifactEntry, Report, ScalarReport, Store, open_store


class StoreBackend:
    """Reads and writes one task in the store; buffers reports and output."""

    overrides = False

    def __init__(self, store: Store, record: TaskRecord, *, running: bool = False) -> None:
        self.store = store
        self.task_id = record.id
        self.project = record.project
        self.name = record.name
        self.type = record.type
        self.tags = list(record.tags)
        self.comment = record.comment
        self.attempt = record.attempt
        self.running = running
        # Run by hand, a task saves checkpoints but resumes from none.
        self.checkpoint_dir = checkpoints.folder_of(record.id)
        self.resume_checkpoint: Path | None = None
        self.resume_iteration = 0
        self._buffer: list[ScalarReport] = []
        self._reports: list[Report] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self._flush_lock = threading.Lock()  # one flush at a time: batches go in order
        self._unsent: tuple[list[ScalarReport], list[tuple[float, str, str]], list[Report]] = (
            [], [], [])
        self._closed = False
        self._output: OutputCapture | None = None
        if running:
            self._output = OutputCapture(int(MAX_LOG_MB * 1_000_000))
            self._output.install()
            self._ensure_flusher()

    @classmethod
    def open(cls, task_id: str) -> StoreBackend:
        store = open_store()
        return cls(store, store.get_task(task_id))

    @classmethod
    def start_manual(
        cls, project: str, name: str, task_type: str, reuse_last_task_id: bool | str,
        tags: list[str],
    ) -> StoreBackend:
        """Register the running script as a task (a template for clones) and start it."""
        store = open_store()
        record = _reusable(store, project, name, reuse_last_task_id)
        script = current_script()
        if record is None:
            record = store.create_task(project, name, type=TaskType(task_type), script=script,
                                       tags=tags)
        else:
            if record.status in FINAL_STATUSES:
                record = store.reset(record.id)
            store.update_task(record.id, script=script, tags=tags or record.tags)
            # The script is the truth for a run by hand: it re-records what it connects.
            store.set_parameters(record.id, {}, replace=True)
        record = store.set_status(record.id, Status.running)
        return cls(store, record, running=True)

    def parameters(self) -> dict[str, Any]:
        return self.store.get_task(self.task_id).parameters

    def record_parameters(self, values: dict[str, Any]) -> None:
        self.store.set_parameters(self.task_id, values)

    def report_scalar(self, title: str, series: str, value: float, iteration: int) -> None:
        with self._lock:
            self._buffer.append(ScalarReport(title, series, int(iteration), float(value),
                                             time.time()))
            full = len(self._buffer) >= SDK_FLUSH_BATCH
        if full:
            self.flush()
        else:
            self._ensure_flusher()

    def report(self, report: dict[str, Any]) -> None:
        with self._lock:
            self._reports.append(Report(**report))
        self._ensure_flusher()

    def report_text(self, text: str) -> None:
        # Printed; the output capture keeps it in the log like any other line.
        print(text, flush=True)
        if self._output is None:  # a task opened with Task.get_task, not this script
            self.log_line(text)

    def log_line(self, text: str) -> None:
        if self._output is not None:
            self._output.line("report", text)
        else:
            self.store.append_logs(self.task_id, [(time.time(), "report", text)])

    def record_artifact(self, entry: dict[str, Any]) -> None:
        self.store.put_artifact(self.task_id, ArtifactEntry(**entry))

    def artifacts(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in vars(a).items() if k not in ("task_id", "attempt")}
                for a in self.store.task_artifacts(self.task_id)]

    def set_fields(self, fields: dict[str, Any]) -> None:
        """Name, tags, comment (``add_tags``: merged with the task's tags)."""
        self.store.append_batch(self.task_id, attempt=None, fields=fields)
        record = self.store.get_task(self.task_id)
        self.name, self.tags, self.comment = record.name, list(record.tags), record.comment

    def flush(self) -> None:
        """Write what is buffered in one transaction; a batch the store refused (away)
        is kept and written first by the next flush, one holding a value the store
        cannot hold (StoreRefusedValue) is dropped."""
        with self._flush_lock:
            with self._lock:
                scalars, self._buffer = self._buffer, []
                reports, self._reports = self._reports, []
            logs = self._output.take() if self._output is not None else []
            old_scalars, old_logs, old_reports = self._unsent
            scalars, logs, reports = old_scalars + scalars, old_logs + logs, old_reports + reports
            self._unsent = (scalars, logs, reports)
            if scalars or reports or logs:
                try:
                    self.store.append_batch(self.task_id, attempt=None, scalars=scalars,
                                            logs=logs, reports=reports)
                except StoreRefusedValue as exc:  # it would fail again at every flush
                    print(f"hpo: the store refused a batch of this run's reports ({exc}); "
                          "it is dropped", file=sys.stderr, flush=True)
            self._unsent = ([], [], [])

    def close(self, status: str | None = None, message: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._output is not None:
            self._output.uninstall()
        self.flush()
        if self._output is not None:
            note = self._output.dropped_note()
            if note:
                self.store.append_logs(self.task_id, note)
        if self.running:
            current = self.store.get_task(self.task_id)
            if current.status is Status.running:
                self.store.set_status(self.task_id, status or Status.completed, message=message)
            self.running = False

    def detach(self) -> None:
        """Stop recording without touching the status (``execute_remotely`` gave the
        task to an agent): what is buffered is written, the streams are given back."""
        self.running = False
        self.close()

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="hpo-flush",
                                             daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._wake.wait(SDK_FLUSH_PERIOD_S):
            try:
                self.flush()
            except Exception:  # the store may be away a while: the next period retries
                pass


def _reusable(
    store: Store, project: str, name: str, reuse_last_task_id: bool | str
) -> TaskRecord | None:
    """The task a run by hand continues: an explicit id, or the last one by this project
    and name that is not queued or running elsewhere and is not a clone."""
    if isinstance(reuse_last_task_id, str):
        return store.get_task(reuse_last_task_id)
    if not reuse_last_task_id:
        return None
    for task in store.find_tasks(project=project, name=name, limit=20):
        if task.parent is None and task.cloned_from is None and task.status in (
                FINAL_STATUSES | {Status.created}):
            return task
    return None
