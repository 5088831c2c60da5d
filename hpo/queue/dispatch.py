"""Enqueue, re-queue, dequeue and abort: the store change and the broker message
together, in the one order that never leaves a task without its message."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

from celery import Celery

from hpo.defaults import DEFAULT_QUEUE
from hpo.errors import InvalidTransition
from hpo.lifecycle import Status
from hpo.queue.app import BrokerUnavailable, publish
from hpo.records import TaskRecord
from hpo.store import Store

log = logging.getLogger("hpo.queue")


def enqueue(store: Store, app: Celery, task_id: str, queue: str) -> TaskRecord:
    """created -> queued, then publish. If the broker is down the task goes back to
    created, so nothing is left queued without a message."""
    record = store.enqueue(task_id, queue)
    publish_queued(store, app, [task_id], queue)
    return record


def publish_queued(store: Store, app: Celery, task_ids: Sequence[str], queue: str) -> None:
    """Publish the messages of tasks the store has just made queued on ``queue`` (by
    ``enqueue``, or created queued: ``Store.clone_task(queue=)``, ``launch_clones``),
    in order. The one rule: the store first, then the message; a broker that is down
    sends every task not yet published back to created (BrokerUnavailable raises), so
    none is left queued without a message and its owner enqueues it again.

    A crash between the store's commit and the publish does leave a task queued with no
    message: a controller publishes its queued jobs again when it resumes, and the
    republish sweep (``hpo.queue.reaper.republish_lost``, in every controller and agent)
    publishes any task queued for REPUBLISH_AFTER_S on a queue holding fewer messages
    than queued tasks."""
    for i, task_id in enumerate(task_ids):
        try:
            publish(app, task_id, queue)
        except BrokerUnavailable:
            # The rest too, unpublished: each would wait out the retry policy again.
            for unsent in task_ids[i:]:
                # One that left the queue meanwhile (stopped) needs no message.
                with contextlib.suppress(InvalidTransition):
                    store.dequeue(unsent)
            raise


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
