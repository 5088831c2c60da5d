"""The agent's Celery consumer: every message is checked before Celery's own code sees
it, and what is not an hpo task message is logged in one line and dropped.

Celery's hooks for bad messages (``on_decode_error``, ``on_unknown_message``,
``on_unknown_task``, ``on_invalid_task``) log a traceback and a dump of the body each;
here they log one line. Messages that Celery would accept but the agent cannot run (an
argument that is not a task id, a header of the wrong type that Celery's strategy would
raise on) are dropped the same way, so no message can stop the worker's loop, and none
reaches a slot or the store. A message that passed these checks is a real task's: should
Celery still fail on it, it is returned to the broker (logged once), never dropped, so
its task is not left queued with no message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from vine import promise

from hpo.queue.messages import dropped, message_problem, preview

log = logging.getLogger("hpo.agent")


# How many message ids ``_give_back`` remembers, to log each message once.
_GIVEN_BACK_KEPT = 1000


class AgentConsumer(Consumer):
    _given_back: set[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._given_back = set()
        super().__init__(*args, **kwargs)

    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], None]:
        celery_handler = super().create_task_handler(promise)

        def on_task_received(message: Any) -> None:
            problem = message_problem(message)
            if problem is not None:
                self._drop(message, problem)
                return
            try:
                celery_handler(message)
            except self.connection_errors:
                raise
            except Exception as exc:
                self._give_back(message, exc)

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._drop(message, f"cannot be decoded ({exc})")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._drop(message, f"not a Celery task message: {preview(message.body)}")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._drop(message, f"unknown task {exc}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._drop(message, f"invalid task message ({exc})")

    def _give_back(self, message: Any, exc: Exception) -> None:
        """A message that passed ``message_problem`` is a real task's, whose task waits
        queued in the store: never dropped. Celery failed on it all the same, so it goes
        back to the broker (logged once per message, not at each return)."""
        celery_id = str(message.headers.get("id"))
        if celery_id not in self._given_back:
            if len(self._given_back) >= _GIVEN_BACK_KEPT:
                self._given_back.clear()
            self._given_back.add(celery_id)
            log.warning("message %s returned to the broker: Celery failed to take it "
                        "(%s: %s)", celery_id, type(exc).__name__, " ".join(str(exc).split()))
        if not message.acknowledged:
            message.reject_log_error(log, self.connection_errors, requeue=True)

    def _drop(self, message: Any, problem: str) -> None:
        dropped(problem)
        if not message.acknowledged:
            # Rejected, not re-queued: a broker with a dead-letter queue keeps it there.
            message.reject_log_error(log, self.connection_errors)
