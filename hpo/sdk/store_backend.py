"""The SDK's side of a script run by hand: it writes to the store directly. Imported only
then (it pulls in SQLAlchemy), never in a task run by an agent."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from hpo.defaults import SDK_FLUSH_BATCH, SDK_FLUSH_PERIOD_S
from hpo.lifecycle import FINAL_STATUSES, Status, TaskType
from hpo.records import TaskRecord
from hpo.sdk import checkpoints
from hpo.sdk.script_info import current_script
from hpo.store import ScalarReport, Store, open_store


class StoreBackend:
    """Reads and writes one task in the store; buffers scalar reports."""

    overrides = False

    def __init__(self, store: Store, record: TaskRecord, *, running: bool = False) -> None:
        self.store = store
        self.task_id = record.id
        self.project = record.project
        self.name = record.name
        self.type = record.type
        self.running = running
        # Run by hand, a task saves checkpoints but resumes from none.
        self.checkpoint_dir = checkpoints.folder_of(record.id)
        self.resume_checkpoint: Path | None = None
        self.resume_iteration = 0
        self._buffer: list[ScalarReport] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._flusher: threading.Thread | None = None
        self._closed = False

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

    def report_text(self, text: str) -> None:
        print(text, flush=True)
        self.store.append_logs(self.task_id, [(time.time(), "report", text)])

    def flush(self) -> None:
        with self._lock:
            batch, self._buffer = self._buffer, []
        if batch:
            self.store.append_scalars(self.task_id, batch)

    def close(self, status: str | None = None, message: str | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self.flush()
        if self.running:
            current = self.store.get_task(self.task_id)
            if current.status is Status.running:
                self.store.set_status(self.task_id, status or Status.completed, message=message)
            self.running = False

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_loop, name="hpo-flush",
                                             daemon=True)
            self._flusher.start()

    def _flush_loop(self) -> None:
        while not self._wake.wait(SDK_FLUSH_PERIOD_S):
            self.flush()


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
