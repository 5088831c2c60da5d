"""Existing tools on an hpo deployment, as docs/tools.md tells people to start them:
Celery's Flower shows the agents (as Celery workers) and how many messages wait in their
queues; optuna-dashboard opens the store URL of an Optuna-based optimization. Real
agents, real servers in subprocesses, their HTTP APIs polled with deadlines."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from hpo.automation import DiscreteParameterRange, UniformParameterRange
from hpo.lifecycle import Status
from hpo.queue import dispatch
from hpo.queue.app import RUN_TASK, make_app
from hpo.records import ScriptInfo
from hpo.store import Store, open_store
from tests import test_controller
from tests.agents import (
    JOB,
    env_for,
    running_agent,
    terminate,
    wait_final,
    wait_for,
    wait_status,
)
from tests.conftest import server_broker_url
from tests.test_agent import launch

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

# The controller tests' fixtures: the embedded store and broker, and Redis + PostgreSQL.
backend, store, broker = test_controller.backend, test_controller.store, test_controller.broker
base_task = test_controller.base_task

# RabbitMQ's management plugin: Flower reads queue lengths from its HTTP API.
RABBITMQ_API = "http://guest:guest@127.0.0.1:15672/api/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A server subprocess, its output in ``log``; terminated (killed if it lingers)
    after the block, also when the block fails."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        terminate(proc)


def get_json(url: str, timeout: float = 10.0, auth: str | None = None) -> Any:
    """The JSON at ``url``, or None while the server is not answering yet (or answers
    503: Flower's, when its inspect of the workers failed). ``auth``: ``user:password``
    for HTTP basic authentication."""
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 503:
            return None
        raise  # any other refusal is a failure, not "not up yet"
    except (ConnectionError, urllib.error.URLError, TimeoutError):
        return None


def server_up(proc: subprocess.Popen[bytes], log: Path) -> None:
    """Fail at once with the server's output if it died (instead of at the deadline)."""
    assert proc.poll() is None, f"{proc.args} exited:\n{log.read_text(errors='replace')}"


# ----- Flower ------------------------------------------------------------------------

@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def server_broker(request: pytest.FixtureRequest) -> str:
    """Redis and RabbitMQ: the brokers Flower supports (not the embedded one)."""
    return server_broker_url(request.param)


def rabbitmq_api_answers() -> bool:
    try:
        return get_json("http://127.0.0.1:15672/api/overview", timeout=2,
                        auth="guest:guest") is not None
    except urllib.error.HTTPError:
        return False


def test_flower_shows_the_agent_its_queue_and_the_messages_waiting_in_it(
        hpo_env, tmp_path, server_broker, queue_name):
    store = open_store()
    script = ScriptInfo(entry_point=str(JOB), working_dir=str(tmp_path),
                        interpreter=sys.executable)
    template = store.create_task("tools-tests", "job", script=script, parameters={
        "General/steps": 1, "General/sleep": 0.0})
    amqp = server_broker.startswith("amqp")
    port = free_port()
    # The command docs/tools.md gives, on a port of this test's own. Flower's HTTP API
    # answers only with authentication configured (or FLOWER_UNAUTHENTICATED_API set).
    flower = [str(Path(sys.executable).parent / "celery"), "--broker", server_broker, "flower",
              "--address=127.0.0.1", f"--port={port}", "--basic_auth=hpo:secret"]
    if amqp:
        flower.append(f"--broker_api={RABBITMQ_API}")
    log = tmp_path / "flower.log"
    orphan_queue = f"{queue_name}-nobody"  # a queue no agent serves

    def api(path: str) -> Any:
        server_up(proc, log)
        return get_json(f"http://127.0.0.1:{port}{path}", auth="hpo:secret")

    def online() -> bool:
        # The Workers page's data: the workers Flower has heard from (the agent's Celery
        # event heartbeat), online or not.
        page = api("/workers?json=1") or {"data": []}
        return any(w["hostname"] == hostname and w["status"] for w in page["data"])

    def inspected() -> dict[str, Any] | None:
        # refresh=1: Flower asks the workers now (remote control) for their queues and
        # stats, instead of answering from what it has heard so far.
        info = (api("/api/workers?refresh=1") or {}).get(hostname, {})
        return info if "active_queues" in info and "stats" in info else None

    def lengths() -> dict[str, dict[str, Any]]:
        reply = api("/api/queues/length") or {"active_queues": []}
        return {q["name"]: q for q in reply["active_queues"]}

    env = env_for(hpo_env, server_broker)
    try:
        # One slot (the default): a long task holds it, so later messages wait. With
        # --events, for the Tasks page; a second agent without them, for the Workers page.
        with running_agent(store, env, tmp_path, "--queue", queue_name, "--grace", "1",
                           "--events") as agent, \
                running_agent(store, env, tmp_path, "--queue", f"{queue_name}-quiet"
                              ) as quiet, serving(flower, log) as proc:
            hostname = f"{agent.name}@{socket.gethostname()}"
            wait_for(f"Flower's Workers page to show {hostname} online", online,
                     timeout=60, period=0.2)
            # An agent without --events is there too: its worker heartbeat is sent
            hostname = f"{quiet.name}@{socket.gethostname()}"
            wait_for(f"Flower's Workers page to show {hostname} online", online,
                     timeout=60, period=0.2)
            hostname = f"{agent.name}@{socket.gethostname()}"
            info = wait_for(f"Flower to inspect {hostname}", inspected, timeout=60,
                            period=0.2)
            assert [q["name"] for q in info["active_queues"]] == [queue_name]
            assert info["stats"]["pool"]["max-concurrency"] == 1

            long_task = launch(store, server_broker, queue_name, template.id,
                               steps=100_000, sleep=0.01)
            wait_status(store, long_task, Status.running)
            waiting = [launch(store, server_broker, queue_name, template.id, steps=1)
                       for _ in range(3)]
            launch(store, server_broker, orphan_queue, template.id, steps=1)

            counted = not amqp or rabbitmq_api_answers()
            # Redis: the messages in the queue's lists. RabbitMQ: the management API's
            # figures, "messages_ready" leaving out the running task's unacked message,
            # refreshed every few seconds (hence the polls).
            count = "messages_ready" if amqp else "messages"
            if counted:
                wait_for("Flower to count the 3 waiting messages", lambda: lengths().get(
                    queue_name, {}).get(count) == 3, timeout=60, period=0.2)
                # Flower lists only the queues some worker consumes.
                assert orphan_queue not in lengths()
            else:
                # Without the management plugin Flower cannot count (docs/tools.md says
                # so): it logs the failed call and lists no queue.
                assert api("/api/queues/length") == {"active_queues": []}
            # The waiting tasks run once the long one is stopped, and the count drops.
            dispatch.abort(store, long_task)
            for task_id in waiting:
                assert wait_final(store, task_id).status is Status.completed
            if counted:
                wait_for("Flower to count an empty queue", lambda: lengths().get(
                    queue_name, {}).get(count) == 0, timeout=60, period=0.2)
            # Flower's Tasks page is Celery's view: the agent handled the message, so the
            # stopped job's hpo.run_task is a SUCCESS there. hpo's statuses are the store's.
            assert wait_final(store, long_task).status is Status.stopped
            wait_for("Flower to show the stopped job's message as a SUCCESS", lambda: any(
                t["name"] == RUN_TASK and long_task in (t["args"] or "")
                and t["state"] == "SUCCESS" for t in (api(
                    f"/api/tasks?workername={quote(hostname)}") or {}).values()),
                timeout=60, period=0.2)
    finally:
        with make_app(server_broker).connection_for_write() as connection:
            connection.default_channel.queue_delete(orphan_queue)  # and its message


def test_the_embedded_broker_gives_flower_neither_workers_nor_queue_lengths(tmp_path):
    """What docs/tools.md says of the embedded broker, checked against kombu and Flower
    themselves, so that the page goes stale loudly if either changes."""
    from flower.utils.broker import Broker

    url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with make_app(url).connection_for_write() as connection:
        # Celery's worker starts remote control (what Flower's inspect talks to) only on
        # a transport with fanout exchanges; kombu's SQLAlchemy transport has none.
        assert not connection.supports_exchange_type("fanout")
    with pytest.raises(NotImplementedError):
        Broker(url)  # so /api/queues/length answers 404 "broker is not supported"


# ----- optuna-dashboard ----------------------------------------------------------------

def test_optuna_dashboard_lists_the_study_of_an_optuna_optimization_by_store_url(
        store: Store, hpo_env, tmp_path, broker, queue_name, base_task, backend):
    store_url = backend[0]
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "2"):
        opt = test_controller.optimizer(
            store, base_task, queue_name, optimizer_class="optuna", total_max_jobs=4,
            hyper_parameters=[UniformParameterRange("x", 0.0, 1.0),
                              DiscreteParameterRange("steps", [3])])
        opt.start()
        assert opt.wait(timeout=120)
    jobs = store.find_tasks(parent=opt.id)
    assert len(jobs) == 4 and all(j.status is Status.completed for j in jobs)

    port = free_port()
    # The command docs/tools.md gives: the store URL as the storage argument.
    dashboard = [str(Path(sys.executable).parent / "optuna-dashboard"), store_url,
                 "--host", "127.0.0.1", f"--port={port}"]
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "optuna-dashboard.log"
    with serving(dashboard, log) as proc:
        def study_summary() -> dict[str, Any] | None:
            server_up(proc, log)
            reply = get_json(f"{base}/api/studies") or {"study_summaries": []}
            return next((s for s in reply["study_summaries"]
                         if s["study_name"] == f"hpo-{opt.id}"), None)

        summary = wait_for(f"optuna-dashboard to list hpo-{opt.id}", study_summary,
                           timeout=60, period=0.2)
        assert summary["directions"] == ["minimize"]
        detail = get_json(f"{base}/api/studies/{summary['study_id']}")
    assert len(detail["trials"]) == 4
    assert {t["state"] for t in detail["trials"]} == {"Complete"}
    # The trials are the jobs: their x, and their objective (the last "loss/total").
    xs = sorted(j.parameters["General/x"] for j in jobs)
    assert sorted(param(t, "x") for t in detail["trials"]) == xs
    best = min(last_loss(store, j.id) for j in jobs)
    assert [t["values"] for t in detail["best_trials"]] == [[best]]


def param(trial: dict[str, Any], name: str) -> Any:
    [found] = [p for p in trial["params"] if p["name"] == name]
    return found["param_internal_value"]


def last_loss(store: Store, task_id: str) -> float:
    return store.task_scalars(task_id, title="loss", series="total")[-1].value
