"""The one Celery app: how tasks travel from an enqueue to an agent.

A message carries only the task id (the store says what to run), JSON only. One Celery
queue per execution queue name. Delivery is at-least-once with late acks and a prefetch
of one; the claim in the store makes it exactly-once (duplicates and stale messages are
dropped there). ``HPO_BROKER_URL`` takes ``redis://``, ``amqp://`` or the embedded
default, a kombu transport on a SQLite file in ``HPO_HOME`` (no server:
``hpo.queue.embedded``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.transport import TRANSPORT_ALIASES

from hpo import limits
from hpo.defaults import (
    BROKER_CHECK_TIMEOUT_S,
    DEFAULT_QUEUE,
    EMBEDDED_POLL_S,
)
from hpo.errors import HpoError
from hpo.queue import messages
from hpo.queue.messages import RUN_TASK  # noqa: F401  (the agent takes it from here)
from hpo.queue.publisher import BROKER_DOWN, Publisher
from hpo.settings import Settings

# The embedded broker's transport, named for kombu to import at a connection's start:
# its module loads only in a process that uses an embedded broker.
EMBEDDED_TRANSPORT = "hpo.queue.embedded:Transport"


class BrokerUnavailable(HpoError):
    """The broker cannot be reached."""


def make_app(broker_url: str | None = None) -> Celery:
    """The Celery app for ``broker_url`` (else ``HPO_BROKER_URL``, else the embedded
    broker); one per URL and process, so its connection and producer pools are reused."""
    return _app_for(Settings.load(broker_url=broker_url).broker_url)


@functools.cache
def _app_for(url: str) -> Celery:
    install_embedded_transport()
    messages.install()
    app = Celery("hpo", broker=url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=DEFAULT_QUEUE,
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        worker_hijack_root_logger=False,
        # Celery's task events (received, started, succeeded: one broker publish each,
        # about a fifth of an agent's CPU per short task) feed only Flower's Tasks page:
        # off, as in Celery itself, and on with ``hpo-agent --events``. The worker
        # events (the heartbeat Flower's Workers page lists) are sent either way.
        worker_send_task_events=False,
        broker_transport_options=transport_options(url),
    )
    if url.startswith(limits.EMBEDDED_PREFIXES):
        from hpo.queue.embedded import create_tables

        create_tables(url)
    return app


def load_app_modules(broker_url: str) -> None:
    """Load what Celery loads lazily at an app's first publish or its worker's start
    (its loader, the disabled result backend, which Celery finds by reading the
    installed packages' entry points, AMQP, remote control, events), on a throwaway app
    that opens no connection: for a process that forks (hpo-controller's local agents)
    to do once, before the fork, what the parent and each child would do on its own."""
    app = Celery("hpo", broker=broker_url, set_as_current=False)
    for part in ("loader", "backend", "amqp", "control", "events"):
        getattr(app, part)


def install_embedded_transport() -> None:
    """Make ``sqla+`` / ``sqlalchemy+`` broker URLs use the embedded broker's transport."""
    for prefix in limits.EMBEDDED_PREFIXES:
        TRANSPORT_ALIASES[prefix.rstrip("+")] = EMBEDDED_TRANSPORT


def transport_options(url: str) -> dict[str, Any]:
    if url.startswith(("redis://", "rediss://")):
        # Serve an agent's queues in the order given, the first one first.
        return {"queue_order_strategy": "priority", "visibility_timeout": 3600}
    if url.startswith(limits.EMBEDDED_PREFIXES):
        database = url.split(":///", 1)[-1]
        if url.startswith(("sqla+sqlite", "sqlalchemy+sqlite")):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            return {"polling_interval": EMBEDDED_POLL_S}
        return {"polling_interval": EMBEDDED_POLL_S}
    return {}


def check_broker(app: Celery) -> None:
    """Connect once, within BROKER_CHECK_TIMEOUT_S: BrokerUnavailable (one line) when the
    broker does not answer. Before an optimization creates anything, so that a wrong
    URL or a stopped server costs a second, not a minute of retries."""
    try:
        with app.connection_for_write(connect_timeout=BROKER_CHECK_TIMEOUT_S) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0,
                                         timeout=BROKER_CHECK_TIMEOUT_S)
    except (KombuOperationalError, OSError) as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker at {safe_broker_url(app)}: "
            f"{(str(exc).splitlines() or ['no answer'])[0]}; "
            "start it or point HPO_BROKER_URL / --broker at a running one") from None


def publish(app: Celery, task_id: str, queue: str) -> None:
    """Send the message that asks an agent on ``queue`` to run ``task_id``, through the
    app's kept producer (``hpo.queue.publisher``); BrokerUnavailable when the broker
    does not answer within the retry policy."""
    try:
        _publisher(app).send(task_id, queue)
    except BROKER_DOWN as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker at {safe_broker_url(app)}: {exc}; start it or point "
            "HPO_BROKER_URL / --broker at a running one") from None


@functools.cache
def _publisher(app: Celery) -> Publisher:
    """The app's one publisher (apps are few: one per broker URL and process)."""
    return Publisher(app)


def waiting_messages(app: Celery, queue: str) -> int:
    """How many messages wait in ``queue`` (not those an agent holds unacknowledged): a
    passive declare, which Redis, RabbitMQ and the embedded broker all answer with the
    count; a queue that does not exist (Redis drops an empty list) holds none."""
    try:
        # A channel of its own: RabbitMQ closes the channel a passive declare of a
        # missing queue failed on.
        with app.connection_for_write() as connection, connection.channel() as channel:
            try:
                return int(channel.queue_declare(queue=queue, passive=True).message_count)
            except connection.channel_errors:
                return 0
    except (KombuOperationalError, OSError) as exc:
        raise BrokerUnavailable(
            f"cannot reach the broker at {safe_broker_url(app)}: {exc}") from None


def safe_broker_url(app: Celery) -> str:
    """The broker's URL as configured, its password (only when it has one) masked."""
    return limits.hide_password(str(app.conf.broker_url))
