"""Task statuses, their life cycle, and task types (standard library only: the SDK
imports this inside every task an agent runs)."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    created = "created"
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"
    stopped = "stopped"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({Status.completed, Status.failed, Status.stopped})

# The task life cycle. The store refuses every other change with InvalidTransition.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    # created -> running is a script run by hand (Task.init), not through a queue.
    Status.created: frozenset({Status.queued, Status.running}),
    # queued -> created is a dequeue, queued -> stopped an abort before it started.
    Status.queued: frozenset({Status.created, Status.running, Status.stopped}),
    # running -> queued is a re-queue of a task whose agent was lost or shut down.
    Status.running: frozenset({Status.completed, Status.failed, Status.stopped, Status.queued}),
    # A finished task can be reset to created and run again.
    Status.completed: frozenset({Status.created}),
    Status.failed: frozenset({Status.created}),
    Status.stopped: frozenset({Status.created}),
}


class TaskType(enum.StrEnum):
    training = "training"
    testing = "testing"
    inference = "inference"
    data_processing = "data_processing"
    application = "application"
    monitor = "monitor"
    controller = "controller"
    optimizer = "optimizer"
    service = "service"
    qc = "qc"
    custom = "custom"
