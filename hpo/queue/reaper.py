"""Finding tasks whose agent went silent and putting them back (or failing them).

Runs with every controller, periodically inside every agent, and with
``hpo workers --reap``. Recovery never waits for the broker to redeliver anything.
"""

from __future__ import annotations

from celery import Celery

from hpo import defaults, settings
from hpo.lifecycle import Status
from hpo.queue.dispatch import requeue
from hpo.records import TaskRecord
from hpo.store import Store


def reap(
    store: Store,
    app: Celery,
    *,
    lost_after_s: float | None = None,
    retries: int = defaults.LOST_TASK_RETRIES,
) -> list[tuple[TaskRecord, Status]]:
    """Re-queue lost tasks with retries left, fail the others. Returns what it did.
    ``lost_after_s``: None is ``$HPO_LOST_AFTER_S``, else ``defaults.LOST_AFTER_S``."""
    if lost_after_s is None:
        lost_after_s = settings.lost_after_s()
    done: list[tuple[TaskRecord, Status]] = []
    for task in store.lost_tasks(lost_after_s):
        if task.attempt <= retries:
            if requeue(store, app, task, task.attempt,
                       f"agent {task.worker} lost; re-queued (attempt {task.attempt})"):
                done.append((task, Status.queued))
        elif store.finish(task.id, task.attempt, Status.failed,
                          message=f"agent lost: {task.worker} stopped sending heartbeats "
                          f"(attempt {task.attempt}, no retries left)"):
            done.append((task, Status.failed))
    return done
