"""Finding tasks whose agent went silent and putting them back (or failing them).

Runs with every controller, periodically inside every agent, and with
``hpo workers --reap``. Recovery never waits for the broker to redeliver anything.
"""

from __future__ import annotations

import os

from celery import Celery

from hpo.lifecycle import Status
from hpo.queue.app import publish
from hpo.records import TaskRecord
from hpo.store import Store

# A running task whose agent has not sent a heartbeat for this long is lost.
DEFAULT_LOST_AFTER_S = float(os.environ.get("HPO_LOST_AFTER_S", "30"))
# How many times a lost task is re-queued before it fails with "agent lost".
DEFAULT_RETRIES = 1


def reap(
    store: Store,
    app: Celery,
    *,
    lost_after_s: float = DEFAULT_LOST_AFTER_S,
    retries: int = DEFAULT_RETRIES,
) -> list[tuple[TaskRecord, Status]]:
    """Re-queue lost tasks with retries left, fail the others. Returns what it did."""
    done: list[tuple[TaskRecord, Status]] = []
    for task in store.lost_tasks(lost_after_s):
        if task.attempt <= retries:
            if store.requeue(task.id, task.attempt,
                             f"agent {task.worker} lost; re-queued (attempt {task.attempt})"):
                publish(app, task.id, task.queue or "default")
                done.append((task, Status.queued))
        elif store.finish(task.id, task.attempt, Status.failed,
                          message=f"agent lost: {task.worker} stopped sending heartbeats "
                          f"(attempt {task.attempt}, no retries left)"):
            done.append((task, Status.failed))
    return done
