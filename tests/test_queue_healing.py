"""Queues heal themselves: a queued task whose message the broker lost (a Redis restart
or flush keeps no waiting message) is published again by the sweep that runs with the
reaper, and a backlog whose messages are all there is left alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo.lifecycle import Status
from hpo.queue import dispatch
from hpo.queue.app import make_app, waiting_messages
from hpo.queue.reaper import republish_lost
from hpo.store import Store, open_store
from tests.agents import env_for, register_job, running_agent, wait_final, wait_for
from tests.conftest import server_broker_url

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def store(hpo_env: dict[str, str]) -> Store:
    return open_store()


@pytest.fixture
def template(store: Store, tmp_path: Path) -> str:
    return register_job(store, tmp_path, "healing-tests")


def enqueue(store: Store, broker: str, queue: str, template: str, n: int) -> list[str]:
    app = make_app(broker)
    ids = [store.clone_task(template).id for _ in range(n)]
    for task_id in ids:
        dispatch.enqueue(store, app, task_id, queue)
    return ids


def wait_messages(broker: str, queue: str, n: int) -> None:
    """Until ``queue`` holds ``n`` waiting messages (RabbitMQ counts a message published
    on another connection a moment later)."""
    app = make_app(broker)
    wait_for(f"{n} messages in {queue}", lambda: waiting_messages(app, queue) == n,
             timeout=10)


def lose_messages(broker: str, queue: str) -> None:
    """What a broker restart does to the waiting messages of ``queue``: gone."""
    with make_app(broker).connection_for_write() as connection, \
            connection.channel() as channel:
        channel.queue_purge(queue)


@pytest.mark.redis
def test_tasks_whose_messages_redis_lost_are_published_again_and_run_once(
        store, hpo_env, tmp_path, queue_name, template):
    import redis

    broker = server_broker_url("redis")
    # Given four tasks queued while no agent serves their queue
    ids = enqueue(store, broker, queue_name, template, 4)
    assert waiting_messages(make_app(broker), queue_name) == 4
    # When Redis loses the waiting messages (the queue's lists deleted, as a restart
    # without persistence or a FLUSHALL does)
    client = redis.Redis.from_url(broker)
    client.delete(*client.keys(f"{queue_name}*"))
    assert waiting_messages(make_app(broker), queue_name) == 0
    # Then two agents whose sweep publishes after 2 s run every task, without `resume`
    env = env_for(hpo_env, broker) | {"HPO_REPUBLISH_AFTER_S": "2"}
    with running_agent(store, env, tmp_path, "--queue", queue_name) as first, \
            running_agent(store, env, tmp_path, "--queue", queue_name) as second:
        tasks = [wait_final(store, task_id, timeout=90) for task_id in ids]
        logs = first.output() + second.output()
    # And each ran exactly once: attempt 1, one report per step
    for task in tasks:
        assert task.status is Status.completed, task.status_message
        assert task.attempt == 1
        values = [(s.iteration, s.value) for s in store.task_scalars(task.id, title="metric")]
        assert values == [(0, 0.0), (1, 1.0), (2, 2.0)]
        assert f"task {task.id}: queued for" in logs, logs


def test_a_backlog_whose_messages_are_all_there_is_not_published_again(
        store, broker_url, queue_name, template):
    app = make_app(broker_url)
    # Given three tasks waiting long (a bound of 0 s) with their three messages
    enqueue(store, broker_url, queue_name, template, 3)
    wait_messages(broker_url, queue_name, 3)
    # When the sweep runs again and again
    for _ in range(3):
        # Then it publishes nothing and the queue still holds exactly three messages
        assert republish_lost(store, app, republish_after_s=0) == []
        assert waiting_messages(app, queue_name) == 3


def test_lost_messages_are_published_again_once_by_concurrent_sweepers(
        store, broker_url, queue_name, template):
    app = make_app(broker_url)
    ids = enqueue(store, broker_url, queue_name, template, 3)
    wait_messages(broker_url, queue_name, 3)
    # Given a queue that lost its messages
    lose_messages(broker_url, queue_name)
    assert waiting_messages(app, queue_name) == 0
    # And a second sweeper that read the queued tasks before the first one published
    seen = store.get_tasks(ids)
    # When the first sweeper runs, every task is published again, oldest first
    done = republish_lost(store, app, republish_after_s=0)
    assert sorted(t.id for t in done) == sorted(ids)
    wait_messages(broker_url, queue_name, 3)
    # Then the other sweeper's publish of what it saw is refused (the task was touched)
    assert not any(dispatch.republish(store, app, task) for task in seen)
    # And the next sweeps find every message there
    assert republish_lost(store, app, republish_after_s=0) == []
    assert waiting_messages(app, queue_name) == 3
    # And a task touched moments ago is not stale for a longer bound
    lose_messages(broker_url, queue_name)
    assert republish_lost(store, app, republish_after_s=60) == []
    assert all(t.status is Status.queued for t in store.get_tasks(ids))


def test_only_the_missing_messages_are_published_again(
        store, broker_url, queue_name, template):
    app = make_app(broker_url)
    # Given two tasks that lost their messages, then a third whose message is there
    enqueue(store, broker_url, queue_name, template, 2)
    wait_messages(broker_url, queue_name, 2)
    lose_messages(broker_url, queue_name)
    enqueue(store, broker_url, queue_name, template, 1)
    wait_messages(broker_url, queue_name, 1)
    # When the sweep runs: two of the three are published again, not the third too
    assert len(republish_lost(store, app, republish_after_s=0)) == 2
    wait_messages(broker_url, queue_name, 3)
