"""Enqueue, re-queue, dequeue and abort: the store change and the broker message
together, in the one order that never leaves a task without its message."""

from __future__ import annotations

import logging

from celery import Celery

from hpo.defaults import DEFAULT_QUEUE
from hpo.lifecycle import Status
from hpo.queue.app import BrokerUnavailable, publish
from hpo.records import TaskRecord
from hpo.store import Store

log = logging.getLogger("hpo.queue")


def enqueue(store: Store, app: Celery, task_id: str, queue: str) -> TaskRecord:
    """created -> queued, then publish. If the broker is down the task goes back to
    created, so nothing is left queued without a message."""
    record = store.enqueue(task_id, queue)
    try:
        publish(app, task_id, queue)
    except BrokerUnavailable:
        store.dequeue(task_id)
        raise
    return record


def requeue(store: Store, app: Celery, task: TaskRecord, attempt: int, message: str,
            *, skip_locked: bool = False) -> Status | None:
    """running -> queued for ``attempt`` (a lost agent's task, or one its agent gave back
    at shutdown), then publish it again to its queue; ``stopped`` instead, unpublished,
    when a stop was requested on it (``Store.requeue``). None when the store refused: the
    task is not running that attempt any more (it ended, or another reaper was first);
    with ``skip_locked`` (a reaper's) also when another session holds the task's row.

    The one place for this order: the store first, so an agent that receives the message
    can claim it (a message for a task still marked running would be dropped at the
    claim). A broker that is down raises BrokerUnavailable and leaves the task queued
    with no message; a controller publishes its queued jobs again when it resumes."""
    moved = store.requeue(task.id, attempt, message, skip_locked=skip_locked)
    if moved is Status.queued:
        publish(app, task.id, task.queue or DEFAULT_QUEUE)
    return moved


def republish(store: Store, app: Celery, task: TaskRecord) -> bool:
    """Publish a queued task's message again: the broker lost it (a Redis restart or
    flush). The task stays queued; its ``updated_at`` is refreshed first, and only while
    it is still queued and as ``task`` saw it, so of several sweepers one publishes, and
    the next sweep leaves it alone for a while. False when the store refused. A duplicate
    message is harmless anyway: dropped at the claim."""
    if not store.touch_queued(task.id, task.updated_at):
        return False
    queue = task.queue or DEFAULT_QUEUE
    publish(app, task.id, queue)
    log.warning("task %s: queued for %.0fs with no message left in queue %s; published "
                "again", task.id, store.now() - task.updated_at, queue)
    return True


def dequeue(store: Store, task_id: str) -> TaskRecord:
    """queued -> created; the message still in the broker is dropped at its claim."""
    return store.dequeue(task_id)


def abort(store: Store, task_id: str, message: str = "aborted") -> TaskRecord:
    """Stop a queued task at once, or ask the agent of a running one to stop it."""
    return store.request_stop(task_id, message)
