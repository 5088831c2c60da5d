"""Messages that are not hpo task messages cannot hurt an agent: a real hpo-agent on the
embedded broker, Redis and RabbitMQ is fed raw entries, foreign bodies and Celery
messages with bad arguments; each is logged in one line and dropped, the agent stays
up with its slot free, and a real task enqueued after them completes on it."""

from __future__ import annotations

import base64
import functools
import json
import sqlite3
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from hpo.lifecycle import Status
from hpo.queue import dispatch
from hpo.queue.app import RUN_TASK, make_app
from hpo.store import Store, open_store
from tests.agents import (
    AgentProcess,
    env_for,
    register_job,
    running_agent,
    wait_final,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DROPPED = "message dropped: "
Sender = Callable[[], object]  # puts one bad message on the queue


@pytest.fixture
def store(hpo_env: dict[str, str]) -> Store:
    return open_store()


@pytest.fixture
def template(store: Store, tmp_path: Path) -> str:
    return register_job(store, tmp_path, "hostile-tests", steps=1)


def launch(store: Store, broker: str, queue: str, template: str) -> str:
    clone = store.clone_task(template, name="job")
    dispatch.enqueue(store, make_app(broker), clone.id, queue)
    return clone.id


def dropped_lines(agent: AgentProcess) -> list[str]:
    return [line for line in agent.output().splitlines() if DROPPED in line]


def serve_through_hostiles(store: Store, hpo_env: dict[str, str], tmp_path: Path,
                           broker: str, queue: str, template: str,
                           send_hostiles: list[tuple[str, Sender]]) -> None:
    """Given an agent with one slot that has run a task (its queue exists and its
    consumer is up), when each sender puts its bad message on the queue and then a real
    task is enqueued, then that task completes on the same living agent, and the log
    holds one line per bad message, naming what was wrong, and no traceback."""
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue) as agent:
        first = wait_final(store, launch(store, broker, queue, template))
        for _, send in send_hostiles:
            send()
        last = wait_final(store, launch(store, broker, queue, template))
        wait_for("one line per bad message",
                 lambda: len(dropped_lines(agent)) >= len(send_hostiles), timeout=15)
        assert agent.proc.poll() is None, agent.output()
        output = agent.output()
    assert first.status is Status.completed, first.status_message
    assert last.status is Status.completed, last.status_message
    assert last.worker == agent.name
    lines = dropped_lines(agent)
    assert len(lines) == len(send_hostiles), output
    for expected, _ in send_hostiles:
        assert sum(expected in line for line in lines) >= 1, (expected, output)
    assert "Traceback" not in output, output
    assert max(len(line) for line in lines) < 400, lines


# ----- what the senders put on a queue ----------------------------------------------

def celery_messages(app: Celery, queue: str) -> list[tuple[str, Sender]]:
    """Well-formed Celery messages that are no hpo task message: (what the log says,
    how to send it)."""
    def send(name: str, args: list[object], **options: Any) -> Sender:
        return lambda: app.send_task(name, args=args, queue=queue, **options)

    task_id = uuid.uuid4().hex
    return [
        ("of type dict, not a string", send(RUN_TASK, [{"id": task_id}])),
        ("of type int, not a string", send(RUN_TASK, [42])),
        ("of type list, not a string", send(RUN_TASK, [[task_id]])),
        ("message of 1000", send(RUN_TASK, ["x" * 1_000_000])),
        ("is not 32 hex digits", send(RUN_TASK, ["../../etc/passwd"])),
        ("unknown task 'evil.task'", send("evil.task", [task_id])),
        ("takes one task id", send(RUN_TASK, [task_id, task_id])),
        ("takes one task id", send(RUN_TASK, [], kwargs={"task_id": task_id})),
        ("no task with id " + task_id, send(RUN_TASK, [task_id])),
        ("not application/json", send(RUN_TASK, [uuid.uuid4().hex], serializer="pickle")),
    ]


def producer_bodies(app: Celery, queue: str) -> list[tuple[str, Sender]]:
    """Raw bodies published with kombu, as another program would: each arrives as a
    message Celery cannot take."""
    def publish(body: bytes, content_type: str, headers: dict[str, object] | None = None
                ) -> Sender:
        def send() -> None:
            with app.connection_for_write() as connection:
                connection.Producer().publish(
                    body, exchange="", routing_key=queue, content_type=content_type,
                    content_encoding="utf-8", headers=headers or {}, retry=True)
        return send

    return [
        ("not a Celery task message", publish(b"not json at all", "application/json")),
        ("not a Celery task message", publish(b'["a", "json", "array"]',
                                              "application/json")),
        ("not a Celery task message", publish(b'{"hello": "world"}', "application/json")),
        ("not a Celery task message", publish(b"\x80\x04K*.",
                                              "application/x-python-serialize")),
        ("body is not JSON", publish(b"{not json", "application/json",
                                     {"task": RUN_TASK, "id": "x"})),
        ("body is not Celery's", publish(b'{"args": []}', "application/json",
                                         {"task": RUN_TASK, "id": "x"})),
        ("unknown task ['a', 'list']", publish(b"[]", "application/json",
                                               {"task": ["a", "list"], "id": "x"})),
    ]


def envelope(queue: str, body: bytes, headers: object, **changes: object) -> bytes:
    """A raw entry as kombu's virtual transports store a message, with ``changes``."""
    raw: dict[str, object] = {
        "body": base64.b64encode(body).decode(), "content-encoding": "utf-8",
        "content-type": "application/json", "headers": headers,
        "properties": {"delivery_tag": str(uuid.uuid4()), "body_encoding": "base64",
                       "delivery_info": {"exchange": "", "routing_key": queue},
                       "delivery_mode": 2, "priority": 0}}
    raw.update(changes)
    return json.dumps(raw).encode()


def raw_entries(queue: str) -> list[tuple[str, bytes]]:
    """Entries written straight into a virtual transport's queue (Redis list, broker
    table), below kombu: (what the log says, the entry)."""
    good_body = json.dumps([[uuid.uuid4().hex], {}, {}]).encode()
    run_task = {"task": RUN_TASK, "id": str(uuid.uuid4())}
    return [
        ("not JSON", b"not json at all"),
        ("not JSON", b"\xff\xfe garbage \x00"),
        ("not a kombu message (a JSON list)", b'["a", "json", "array"]'),
        ("not a kombu message (no properties", b'{"hello": "world"}'),
        ("not a kombu message (a JSON str)", b'"a JSON string"'),
        ("not a kombu message (no delivery info)",
         envelope(queue, good_body, run_task, properties={"delivery_tag": "t"})),
        ("headers are not an object", envelope(queue, good_body, ["x"])),
        ("body is not Celery's", envelope(queue, b'"just a string"', run_task)),
        ("invalid task message (invalid ETA", envelope(queue, good_body,
                                                       {**run_task, "eta": "soon"})),
        ("timelimit 5 is no [soft, hard] pair",
         envelope(queue, good_body, {**run_task, "timelimit": 5})),
        ("invalid expires value 42", envelope(queue, good_body, {**run_task, "expires": 42})),
        ("retries 'x' is no integer", envelope(queue, good_body, {**run_task, "retries": "x"})),
    ]


def push_redis(url: str, queue: str, entry: bytes) -> None:
    import redis

    # kombu publishes with LPUSH and consumes with BRPOP: this entry comes next.
    redis.Redis.from_url(url).lpush(queue, entry)


def push_embedded(url: str, queue: str, entry: bytes) -> None:
    with sqlite3.connect(url.removeprefix("sqla+sqlite:///"), timeout=30) as db:
        (queue_id,) = db.execute("SELECT id FROM kombu_queue WHERE name = ?",
                                 (queue,)).fetchone()
        db.execute("INSERT INTO kombu_message (visible, timestamp, payload, version, "
                   "queue_id) VALUES (1, ?, ?, 1, ?)",
                   (str(datetime.now()), entry.decode(errors="replace"), queue_id))


# ----- the tests ----------------------------------------------------------------------

def test_foreign_and_malformed_messages_are_dropped_in_one_line_and_the_agent_serves_on(
        store, hpo_env, tmp_path, broker_url, queue_name, template):
    app = make_app(broker_url)
    serve_through_hostiles(store, hpo_env, tmp_path, broker_url, queue_name, template,
                           celery_messages(app, queue_name)
                           + producer_bodies(app, queue_name))


@pytest.mark.parametrize("broker_kind", ["embedded",
                                         pytest.param("redis", marks=pytest.mark.redis)])
def test_raw_entries_that_are_no_kombu_message_are_dropped_and_the_agent_serves_on(
        store, hpo_env, tmp_path, queue_name, template, broker_kind):
    from tests.conftest import server_broker_url

    if broker_kind == "embedded":
        broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
        push = push_embedded
    else:
        broker = server_broker_url("redis")
        push = push_redis
    senders = [(expected, functools.partial(push, broker, queue_name, entry))
               for expected, entry in raw_entries(queue_name)]
    serve_through_hostiles(store, hpo_env, tmp_path, broker, queue_name, template, senders)
