"""Publishing through a kept producer (hpo.queue.publisher): one connection for many
publishes, a failed producer never reused, a broker that is down still one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from hpo.queue import publisher
from hpo.queue.app import BrokerUnavailable, make_app, publish, waiting_messages

pytestmark = pytest.mark.timeout(120)


def count_connections(app: Celery, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    made: list[Any] = []
    connect = app.connection_for_write

    def counted(*args: Any, **kwargs: Any) -> Any:
        made.append(connect(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(app, "connection_for_write", counted)
    return made


def test_many_publishes_go_through_one_kept_connection(
        broker_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(broker_url)
    publish(app, "f" * 32, queue_name)  # the first makes the producer (and Celery its own)
    made = count_connections(app, monkeypatch)
    for n in range(5):
        publish(app, f"{n:032x}", queue_name)
    assert made == []
    assert waiting_messages(app, queue_name) == 6


def test_each_queue_is_declared_on_its_first_publish_and_its_messages_are_celerys(
        broker_url: str, queue_name: str) -> None:
    """Two queues on one kept producer, each declared once: on RabbitMQ a message to an
    undeclared queue would vanish. What arrives is a Celery protocol-2 message, as
    Celery's own steps build it (the task's name and id in the headers, the arguments in
    the body)."""
    app = make_app(broker_url)
    other = f"{queue_name}-other"
    for n in range(3):
        publish(app, f"{n:032x}", queue_name)
        publish(app, f"{n + 10:032x}", other)
    assert waiting_messages(app, queue_name) == 3
    assert waiting_messages(app, other) == 3
    with app.connection_for_write() as connection:
        message = connection.SimpleQueue(other).get(timeout=10)
        try:
            assert message.headers["task"] == "hpo.run_task"
            assert len(message.headers["id"]) == 36  # a uuid, as send_task's
            assert message.decode()[0] == [f"{10:032x}"]
            assert message.headers["argsrepr"] == repr([f"{10:032x}"])
        finally:
            message.ack()
            connection.SimpleQueue(other).clear()


def test_a_producer_that_failed_is_dropped_and_the_message_sent_on_a_fresh_connection(
        broker_url: str, queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(broker_url)
    publish(app, "0" * 32, queue_name)  # a kept producer exists
    made = count_connections(app, monkeypatch)
    send = app.amqp.send_task_message
    failures = ["'NoneType' object has no attribute 'client'"]

    def stale_once(*args: Any, **kwargs: Any) -> Any:
        # kombu's failure mode: a producer left on a channel it closed while retrying
        if failures:
            raise AttributeError(failures.pop())
        return send(*args, **kwargs)

    monkeypatch.setattr(app.amqp, "send_task_message", stale_once)
    publish(app, "1" * 32, queue_name)
    assert not failures and len(made) == 1  # a fresh connection, once
    publish(app, "2" * 32, queue_name)
    assert len(made) == 1  # and kept after that
    assert waiting_messages(app, queue_name) == 3


def test_a_broker_that_is_down_is_broker_unavailable_without_a_second_try(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher, "PUBLISH_RETRY_POLICY", {"max_retries": 0})
    app = Celery("down", broker="redis://127.0.0.1:1/0", set_as_current=False)
    app.conf.broker_connection_timeout = 1
    tries: list[object] = []
    send = app.amqp.send_task_message
    monkeypatch.setattr(app.amqp, "send_task_message",
                        lambda *a, **k: tries.append(a) or send(*a, **k))
    with pytest.raises(BrokerUnavailable, match="cannot reach the broker"):
        publish(app, "3" * 32, "q")
    assert len(tries) == 1


def test_on_redis_one_kept_client_serves_every_publish(queue_name: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu would make a redis.Redis (and its table of reply callbacks) per message:
    hpo's transport keeps one per channel, over the channel's pool."""
    import redis

    from tests.conftest import server_broker_url

    app = make_app(server_broker_url("redis"))
    publish(app, "a" * 32, queue_name)  # the kept producer and its channel's client
    made: list[Any] = []
    init = redis.Redis.__init__

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "__init__", counted)
    for n in range(5):
        publish(app, f"{n:032x}", queue_name)
    assert made == []
    assert waiting_messages(app, queue_name) == 6


def test_on_redis_the_kept_client_follows_the_channels_pool() -> None:
    """kombu drops a channel's pools (after a fork, a failed ping) and makes new ones:
    the kept client is then made again, on the new pool, not left on the dropped one."""
    from tests.conftest import server_broker_url

    app = make_app(server_broker_url("redis"))
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as again:
            assert again is first and first.connection_pool is channel.pool
        channel._disconnect_pools()
        with channel.conn_or_acquire() as after:
            assert after is not first and after.connection_pool is channel.pool
            assert after.ping()


def test_on_the_embedded_broker_a_publish_is_one_insert_after_the_queues_first(
        tmp_path: Path, queue_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu's SQLAlchemy channel looked the queue's row up (an ORM query) for every
    message: hpo's keeps the queue's id, and messages still arrive, in order."""
    from hpo.queue import embedded

    app = make_app(f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    publish(app, "a" * 32, queue_name)  # the queue's row, looked up once
    looked_up: list[str] = []
    lookup = embedded.Channel._queue_row

    def counted(self: Any, queue: str) -> Any:
        looked_up.append(queue)
        return lookup(self, queue)

    monkeypatch.setattr(embedded.Channel, "_queue_row", counted)
    for n in range(3):
        publish(app, f"{n:032x}", queue_name)
    assert looked_up == []
    assert waiting_messages(app, queue_name) == 4
    with app.connection_for_read() as connection, connection.channel() as channel:
        bodies = [channel.basic_get(queue_name, no_ack=True).payload[0][0]
                  for _ in range(4)]
    assert bodies == ["a" * 32, *(f"{n:032x}" for n in range(3))]
