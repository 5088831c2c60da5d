"""The task store: the source of truth every hpo process reads and writes.

Open one with :func:`open_store`; the API, grouped by what it holds:

* tasks: ``create_task``, ``get_task``, ``get_tasks``, ``find_tasks``, ``resolve_task_id``,
  ``update_task``, ``set_parameters``, ``clone_task`` (``queue=``: made queued),
  ``count_tasks``;
* life cycle (checked, see ``hpo.lifecycle.TRANSITIONS``): ``set_status``, ``enqueue``,
  ``dequeue``, ``claim`` (atomic, exactly one winner), ``finish`` and ``requeue`` (only
  by the attempt that owns the task), ``request_stop``, ``reset``;
* scalars and logs: ``append_scalars``, ``read_scalars`` (incremental, by cursor),
  ``task_scalars``, ``scalar_summary`` (last/min/max for many tasks in one query),
  ``append_logs``, ``read_logs``, ``tail_logs``; ``append_scalars``, ``append_logs`` and
  ``set_parameters`` given ``attempt=`` are fenced: refused with ``LostOwnership`` unless
  that attempt owns the task;
* reports and artifacts (tables, plots, images, media; uploaded files): ``append_reports``,
  ``task_reports``, ``report_counts``, ``put_artifact``, ``task_artifacts``,
  ``get_artifact`` (fenced likewise); ``append_batch`` writes all of a run's kinds at once;
* workers: ``heartbeat``, ``list_workers``, ``remove_worker``, ``lost_tasks``;
* optimizations: ``create_optimization``, ``save_optimization_state``,
  ``load_optimization`` (config and controller state, for resume); ``launch_clones``
  saves the state and creates a cycle's clones, queued, in one transaction.

SQLite runs in WAL mode with a busy timeout, so several processes share one file;
PostgreSQL is the choice for clusters. Every failure is an ``hpo.errors.StoreError``.
"""

from __future__ import annotations

from hpo.settings import Settings
from hpo.store.launches import LaunchesMixin, NewClone
from hpo.store.metrics import MetricsMixin, ScalarReport, scalar_from_message
from hpo.store.optimizations import OptimizationsMixin
from hpo.store.reports import (
    ArtifactEntry,
    ArtifactRecord,
    Report,
    ReportRecord,
    ReportsMixin,
    artifact_from_message,
    report_from_message,
)
from hpo.store.tasks import TasksMixin, new_task_id, script_fields
from hpo.store.workers import WorkersMixin

__all__ = ["ArtifactEntry", "ArtifactRecord", "NewClone", "Report", "ReportRecord",
           "ScalarReport", "Store", "artifact_from_message", "new_task_id", "open_store",
           "report_from_message", "scalar_from_message", "script_fields"]


class Store(LaunchesMixin, TasksMixin, MetricsMixin, ReportsMixin, WorkersMixin,
            OptimizationsMixin):
    """One database; safe to share between threads, open one per process."""


def open_store(url: str | None = None, *, create: bool = True) -> Store:
    """The store at ``url``, else ``HPO_STORE_URL``, else the SQLite file in ``HPO_HOME``.
    Creates the tables on first use; with ``create`` False a store that does not exist
    yet is a StoreUnavailable error instead (read-only commands)."""
    return Store(Settings.load(store_url=url).store_url, create=create)
