"""Publishing through one kept connection and producer per app and process.

A connection per publish costs the embedded broker a connect and a queue declare each
time (kombu caches declares per connection), about as much as the rest of a job's
hand-off; a kept producer declares each queue once and only sends after that.

A producer that failed is never used again: kombu can leave one on a channel it closed
while retrying (``'NoneType' object has no attribute 'client'``), so after any error the
connection is dropped and, unless the broker itself is down (its retry policy spent),
the message is sent once more on a fresh one. A forked child makes its own rather than
write on its parent's socket.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from celery import Celery
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
        # The arguments' repr given: Celery's own (a safe repr of any value) is a tenth
        # of a publish's CPU, for a list of one id.
        self._app.send_task(RUN_TASK, args=[task_id], queue=queue, retry=True,
                            argsrepr=repr([task_id]), kwargsrepr="{}",
                            producer=self._kept_producer(),
                            retry_policy=dict(PUBLISH_RETRY_POLICY))

    def _kept_producer(self) -> Any:
        if self._pid != os.getpid():  # forked: the parent's socket is not ours to use
            self._connection = self._producer = None
            self._pid = os.getpid()
        if self._producer is None:
            self._connection = self._app.connection_for_write()
            self._producer = self._app.amqp.Producer(self._connection, auto_declare=False)
        return self._producer

    def _drop(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is None:
            return
        try:
            connection.close()  # its channels with it
        except Exception as exc:  # it failed already: closing it is a courtesy
            log.debug("closing a failed publish connection: %s", exc)
