"""Publishing through one kept connection and producer per app and process.

A connection per publish costs the embedded broker a connect and a queue declare each
time (kombu caches declares per connection), about as much as the rest of a job's
hand-off; a kept producer declares each queue once and only sends after that.

A producer that failed is never used again: kombu can leave one on a channel it closed
while retrying (``'NoneType' object has no attribute 'client'``), so after any error the
connection is dropped and, unless the broker itself is down (its retry policy spent),
the message is sent once more on a fresh one. A forked child makes its own rather than
write on its parent's socket.

A message is built and sent by Celery's own two steps (``app.amqp.create_task_message``
and ``send_task_message``), what ``Celery.send_task`` does without its routing, result
and parent bookkeeping, none of which an hpo message has; with the queue bound once,
that is about a third less CPU per publish, which a controller pays per job.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery
from celery.utils import uuid
from kombu.exceptions import OperationalError as KombuOperationalError

from hpo.defaults import PUBLISH_RETRY_POLICY
from hpo.queue.messages import RUN_TASK

log = logging.getLogger("hpo.queue")

# Errors that mean the broker is away after the retry policy: BrokerUnavailable, no
# second try (it would only double the wait).
BROKER_DOWN = (KombuOperationalError, OSError)


class Publisher:
    """Sends task messages for one app; safe from any thread (one at a time: a kombu
    connection is not thread-safe, and a publish takes a millisecond)."""

    def __init__(self, app: Celery) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._connection: Any = None
        self._producer: Any = None
        # Queue name -> the app's Queue bound to the producer's channel, for kombu's
        # declare (it copies an unbound one twice per publish to bind it).
        self._bound: dict[str, Any] = {}
        self._pid = os.getpid()

    def send(self, task_id: str, queue: str) -> None:
        """The message that asks an agent on ``queue`` to run ``task_id``; the broker's
        errors (after the retry policy) raise as kombu and the OS raise them."""
        with self._lock:
            try:
                self._send(task_id, queue)
            except BROKER_DOWN:
                self._drop()
                raise
            except Exception as exc:
                log.debug("publish on a kept producer failed (%s): once more on a fresh "
                          "connection", exc)
                self._drop()
                self._send(task_id, queue)

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _send(self, task_id: str, queue: str) -> None:
        producer = self._kept_producer()
        amqp = self._app.amqp
        # The arguments' repr given: Celery's own (a safe repr of any value) is a tenth
        # of a publish's CPU, for a list of one id.
        message = amqp.create_task_message(uuid(), RUN_TASK, [task_id], {},
                                           argsrepr=repr([task_id]), kwargsrepr="{}")
        connection = producer.connection
        bound = self._bound.get(queue)
        if bound is not None and bound.channel is not producer.channel:
            bound = None  # kombu reconnected meanwhile: bound again below
        declare = bound if bound is not None else amqp.queues[queue]
        try:
            amqp.send_task_message(producer, RUN_TASK, message, queue=queue, retry=True,
                                   retry_policy=dict(PUBLISH_RETRY_POLICY), declare=[declare])
        except (*connection.recoverable_connection_errors,
                *connection.recoverable_channel_errors) as exc:
            # As send_task does: a transport's own error (redis-py's, say), once the
            # retry policy is spent, as kombu's (BROKER_DOWN).
            raise KombuOperationalError(str(exc)) from exc
        if bound is None:
            # Bound only once a publish has connected: binding earlier would connect
            # outside the retry policy.
            self._bound[queue] = amqp.queues[queue].bind(producer.channel)

    def _kept_producer(self) -> Any:
        if self._pid != os.getpid():  # forked: the parent's socket is not ours to use
            self._connection = self._producer = None
            self._bound.clear()
            self._pid = os.getpid()
        if self._producer is None:
            self._connection = self._app.connection_for_write()
            self._producer = self._app.amqp.Producer(self._connection, auto_declare=False)
        return self._producer

    def _drop(self) -> None:
        self._bound.clear()
        connection, self._connection, self._producer = self._connection, None, None
        if connection is None:
            return
        try:
            connection.close()  # its channels with it
        except Exception as exc:  # it failed already: closing it is a courtesy
            log.debug("closing a failed publish connection: %s", exc)
