"""The agent's Celery consumer: every message is checked before Celery's own code sees
it, and what is not an hpo task message is logged in one line and dropped.

Celery's hooks for bad messages (``on_decode_error``, ``on_unknown_message``,
``on_unknown_task``, ``on_invalid_task``) log a traceback and a dump of the body each;
here they log one line. Messages that Celery would accept but the agent cannot run (an
argument that is not a task id) and anything Celery's strategy raises on (a header of
the wrong type) are dropped the same way, so no message can stop the worker's loop, and
none reaches a slot or the store.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery.worker.consumer import Consumer
from vine import promise

from hpo.queue.messages import dropped, message_problem, preview

log = logging.getLogger("hpo.agent")


class AgentConsumer(Consumer):
    def create_task_handler(self, promise: Any = promise) -> Callable[[Any], None]:
        celery_handler = super().create_task_handler(promise)

        def on_task_received(message: Any) -> None:
            problem = message_problem(message)
            if problem is None:
                try:
                    celery_handler(message)
                    return
                except self.connection_errors:
                    raise
                except Exception as exc:
                    problem = f"Celery cannot take it ({type(exc).__name__}: {exc})"
            self._drop(message, problem)

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._drop(message, f"cannot be decoded ({exc})")

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._drop(message, f"not a Celery task message: {preview(message.body)}")

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._drop(message, f"unknown task {exc}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._drop(message, f"invalid task message ({exc})")

    def _drop(self, message: Any, problem: str) -> None:
        dropped(problem)
        if not message.acknowledged:
            # Rejected, not re-queued: a broker with a dead-letter queue keeps it there.
            message.reject_log_error(log, self.connection_errors)
