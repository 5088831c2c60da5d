"""Enqueue, dequeue and abort: the store change and the broker message together."""

from __future__ import annotations

from celery import Celery

from hpo.queue.app import BrokerUnavailable, publish
from hpo.records import TaskRecord
from hpo.store import Store


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


def dequeue(store: Store, task_id: str) -> TaskRecord:
    """queued -> created; the message still in the broker is dropped at its claim."""
    return store.dequeue(task_id)


def abort(store: Store, task_id: str, message: str = "aborted") -> TaskRecord:
    """Stop a queued task at once, or ask the agent of a running one to stop it."""
    return store.request_stop(task_id, message)
