"""hpo-agent end to end: real agent processes, real brokers (embedded and Redis), real
scripts; assertions on what the store recorded."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from hpo.lifecycle import Status
from hpo.queue import dispatch
from hpo.queue.app import make_app
from hpo.records import ScriptInfo
from hpo.store import Store, open_store
from hpo.store.engine import safe_url
from tests.agents import (
    JOB,
    env_for,
    freeze,
    register_job,
    running_agent,
    wait_final,
    wait_for,
    wait_status,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.fixture
def store(hpo_env: dict[str, str]) -> Store:
    return open_store()


@pytest.fixture
def template(store: Store, tmp_path: Path) -> str:
    """The test job registered as a template task."""
    return register_job(store, tmp_path, "agent-tests")


def launch(store: Store, broker: str, queue: str, template: str, **overrides: object) -> str:
    params = {f"General/{k}": v for k, v in overrides.items() if k != "time_limit"}
    clone = store.clone_task(template, name="job " + " ".join(f"{k}={v}" for k, v in
                                                              overrides.items()),
                             parameters=params,
                             time_limit=overrides.get("time_limit"))  # type: ignore[arg-type]
    dispatch.enqueue(store, make_app(broker), clone.id, queue)
    return clone.id


def test_a_queued_clone_runs_and_its_reports_and_output_are_stored(
        store, hpo_env, tmp_path, broker_url, queue_name, template):
    env = env_for(hpo_env, broker_url)
    with running_agent(store, env, tmp_path, "--queue", queue_name):
        task_id = launch(store, broker_url, queue_name, template, steps=5)
        task = wait_final(store, task_id)
    assert task.status is Status.completed, task.status_message
    assert task.exit_code == 0 and task.attempt == 1
    values = [(s.iteration, s.value) for s in store.task_scalars(task_id, title="metric")]
    assert values == [(i, float(i)) for i in range(5)]
    assert "step 4" in [line.text for line in store.read_logs(task_id)]
    if broker_url.startswith("sqla+sqlite:///"):
        # The embedded broker deletes what it delivered: polls stay constant.
        import sqlite3

        with sqlite3.connect(broker_url.removeprefix("sqla+sqlite:///")) as db:
            assert db.execute("SELECT count(*) FROM kombu_message").fetchone() == (0,)


def test_a_message_for_a_dequeued_task_is_dropped_at_the_claim(
        store, hpo_env, tmp_path, broker_url, queue_name, template):
    # Given a task enqueued and then dequeued before any agent runs
    dropped = launch(store, broker_url, queue_name, template)
    dispatch.dequeue(store, dropped)
    env = env_for(hpo_env, broker_url)
    with running_agent(store, env, tmp_path, "--queue", queue_name):
        # When a later task on the same queue has run
        later = wait_final(store, launch(store, broker_url, queue_name, template))
    # Then the dequeued one was never run
    assert later.status is Status.completed
    assert store.get_task(dropped).status is Status.created
    assert store.get_task(dropped).attempt == 0


def read_markers(marker_dir: Path) -> list[str]:
    return sorted(p.read_text() for p in marker_dir.glob("*.txt"))


@pytest.mark.parametrize("broker_kind", ["embedded"])
def test_four_gpu_slots_run_four_tasks_at_once_each_on_its_own_gpu(
        store, hpo_env, tmp_path, queue_name, template, broker_kind):
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    markers = tmp_path / "markers"
    markers.mkdir()
    env = env_for(hpo_env, broker)
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--gpus", "0-3",
                       "--gpus-per-task", "1"):
        # Each job waits until all four have started: they can only finish together.
        ids = [launch(store, broker, queue_name, template, marker_dir=str(markers),
                      wait_for=4) for _ in range(4)]
        tasks = [wait_final(store, i) for i in ids]
    assert all(t.status is Status.completed for t in tasks), [t.status_message for t in tasks]
    assert read_markers(markers) == ["0|0", "1|1", "2|2", "3|3"]


def test_one_slot_with_two_gpus_gives_the_child_both(
        store, hpo_env, tmp_path, queue_name, template):
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    markers = tmp_path / "markers"
    markers.mkdir()
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--gpus", "0,1"):
        task = wait_final(store, launch(store, broker, queue_name, template,
                                        marker_dir=str(markers), wait_for=1))
    assert task.status is Status.completed
    assert read_markers(markers) == ["0,1|0,1"]


def test_cpu_only_hides_the_gpus(store, hpo_env, tmp_path, queue_name, template):
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    markers = tmp_path / "markers"
    markers.mkdir()
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--cpu-only"):
        wait_final(store, launch(store, broker, queue_name, template,
                                 marker_dir=str(markers), wait_for=1))
    assert read_markers(markers) == ["|<unset>"]


def test_an_abort_stops_a_running_task_within_the_grace_period(
        store, hpo_env, tmp_path, broker_url, queue_name, template):
    env = env_for(hpo_env, broker_url)
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--grace", "5"):
        task_id = launch(store, broker_url, queue_name, template, steps=10_000, sleep=0.01)
        wait_for("a first report", lambda: store.task_scalars(task_id))
        asked = time.time()
        dispatch.abort(store, task_id)
        task = wait_final(store, task_id, timeout=15)
    assert task.status is Status.stopped and task.status_message == "aborted"
    assert task.ended_at is not None and task.ended_at - asked < 5
    # The script got SIGTERM, not SIGKILL
    assert task.exit_code == -signal.SIGTERM


def test_a_script_that_ignores_sigterm_is_killed_after_the_grace_period(
        store, hpo_env, tmp_path, queue_name, template):
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--grace", "1"):
        task_id = launch(store, broker, queue_name, template, steps=10_000, sleep=0.01,
                         ignore_sigterm=True)
        wait_for("a first report", lambda: store.task_scalars(task_id))
        dispatch.abort(store, task_id)
        task = wait_final(store, task_id, timeout=15)
    assert task.status is Status.stopped
    assert task.exit_code == -signal.SIGKILL


def test_the_time_limit_of_a_task_stops_it(store, hpo_env, tmp_path, queue_name, template):
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name):
        task = wait_final(store, launch(store, broker, queue_name, template, steps=10_000,
                                        sleep=0.01, time_limit=1.0))
    assert task.status is Status.stopped
    assert "time limit of 1s reached" in (task.status_message or "")


def test_a_crashing_and_a_missing_script_fail_clearly_and_the_agent_serves_on(
        store, hpo_env, tmp_path, broker_url, queue_name, template):
    env = env_for(hpo_env, broker_url)
    missing = store.create_task("agent-tests", "missing", script=ScriptInfo(
        entry_point=str(tmp_path / "nope.py"), working_dir=str(tmp_path)))
    with running_agent(store, env, tmp_path, "--queue", queue_name) as agent:
        crashed = wait_final(store, launch(store, broker_url, queue_name, template,
                                           exit_code=3))
        dispatch.enqueue(store, make_app(broker_url), missing.id, queue_name)
        never_started = wait_final(store, missing.id)
        after = wait_final(store, launch(store, broker_url, queue_name, template))
        assert agent.proc.poll() is None
    assert crashed.status is Status.failed and crashed.exit_code == 3
    assert "exit code 3" in crashed.status_message and "about to fail" in \
        crashed.status_message
    assert never_started.status is Status.failed
    assert "nope.py does not exist" in (never_started.status_message or "")
    assert after.status is Status.completed


def test_a_script_printing_100_mb_completes_and_the_agent_memory_stays_flat(
        store, hpo_env, tmp_path, queue_name, template):
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--max-log-mb", "1") as agent:
        wait_final(store, launch(store, broker, queue_name, template))  # warm up
        before = psutil.Process(agent.proc.pid).memory_info().rss
        task = wait_final(store, launch(store, broker, queue_name, template, print_mb=100),
                          timeout=120)
        after = psutil.Process(agent.proc.pid).memory_info().rss
    assert task.status is Status.completed
    stored = sum(len(line.text) + 1 for line in store.read_logs(task.id))
    assert stored < 1.1 * 2**20
    assert "more bytes]" in store.tail_logs(task.id, 1)[0].text
    assert after - before < 30 * 2**20, (before, after)


def test_a_sigkilled_agent_task_is_requeued_and_finished_once_by_another(
        store, hpo_env, tmp_path, broker_url, queue_name, template):
    env = env_for(hpo_env, broker_url)
    steps = 40
    with running_agent(store, env, tmp_path, "--queue", queue_name, name="doomed") as doomed:
        task_id = launch(store, broker_url, queue_name, template, steps=steps, sleep=0.05)
        wait_for("some reports", lambda: len(store.task_scalars(task_id)) >= 3)
        child_pids = [p.pid for p in psutil.Process(doomed.proc.pid).children(recursive=True)]
        doomed.kill()  # SIGKILL
    # The orphaned script notices its agent is gone and stops.
    wait_for("the orphan to exit", lambda: not any(psutil.pid_exists(p) and
             psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in child_pids),
             timeout=10)
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--lost-after", "2",
                       name="rescuer"):
        task = wait_final(store, task_id, timeout=60)
    assert task.status is Status.completed and task.attempt == 2
    assert task.worker == "rescuer"
    iterations = [s.iteration for s in store.task_scalars(task_id, title="metric")]
    assert iterations == list(range(steps))  # every report once: none duplicated


def script_of(agent_pid: int) -> psutil.Process:
    [script] = [p for p in psutil.Process(agent_pid).children(recursive=True)
                if str(JOB) in p.cmdline()]
    return script


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# "reports": the stale script goes on reporting while its agent is frozen, so the woken
# agent learns it lost the task from a refused write; "is silent": it reported all it
# would (a resource sample too) before the freeze, so the stop poll alone tells it.
@pytest.mark.parametrize("script", ["reports", "is silent"])
def test_a_frozen_agent_that_wakes_after_its_task_ran_elsewhere_records_nothing_more(
        store, hpo_env, tmp_path, queue_name, template, script):
    import subprocess
    from collections import Counter

    broker_db = tmp_path / "broker.db"
    broker = f"sqla+sqlite:///{broker_db}"
    store_db = Path(hpo_env["HPO_STORE_URL"].removeprefix("sqlite:///"))
    env = env_for(hpo_env, broker)
    steps = 6 if script == "reports" else 1
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--grace", "1",
                       "--monitor-period", "60", name="frozen") as frozen:
        # Given attempt 1 on an agent that freezes (SIGSTOP) after a first report, while
        # its script goes on reporting and printing into the frozen agent's buffers (or
        # waits in silence)
        task_id = launch(store, broker, queue_name, template, steps=steps, sleep=0.5,
                         first_attempt_hangs=True)
        wait_for("a first report", lambda: store.task_scalars(task_id, title="metric"))
        if script == "is silent":  # the first resource sample, a second in, the last
            wait_for("a resource sample",
                     lambda: store.task_scalars(task_id, title=":monitor:machine"))
        stale_script = script_of(frozen.proc.pid)
        try:
            freeze(frozen, store_db, broker_db)
            # When the reaper takes the silent agent for lost and re-queues the task
            reap = [sys.executable, "-m", "hpo.cli.main", "workers", "--reap",
                    "--lost-after", "1"]

            def requeued() -> bool:
                subprocess.run(reap, env=env, capture_output=True, check=True)
                return store.get_task(task_id).status is Status.queued
            wait_for("the reaper to re-queue the task", requeued, timeout=30, period=0.2)
            # and a second agent runs it to the end
            with running_agent(store, env, tmp_path, "--queue", queue_name, name="rescuer"):
                done = wait_final(store, task_id)
            assert (done.status, done.attempt, done.worker) == (Status.completed, 2,
                                                                "rescuer")
            assert not gone(stale_script)  # still waiting, its reports still unread
            # and then the frozen agent wakes
            frozen.signal(signal.SIGCONT)
            # Then it stops the stale script, and says so in one line
            wait_for("the stale script to be stopped", lambda: gone(stale_script),
                     timeout=15)
            wait_for("the agent to log the lost attempt",
                     lambda: "attempt 1 no longer owns it" in frozen.output(), timeout=15)
            refused = "its write was refused" in frozen.output()
            # A stale attempt's reports are refused if its recorder writes them before
            # the stop poll stops it; once stopped, they are dropped unwritten (the
            # outcome of a lost attempt writes nothing). A silent one has none to write.
            if script == "is silent":
                assert not refused, frozen.output()
            assert frozen.proc.poll() is None
        finally:
            if not gone(stale_script):
                stale_script.kill()
    # and the task is the second attempt's alone: its outcome, one report per iteration
    task = store.get_task(task_id)
    assert (task.status, task.attempt, task.worker, task.exit_code) == (
        Status.completed, 2, "rescuer", 0)
    metric = store.task_scalars(task_id, title="metric")
    assert Counter(s.iteration for s in metric) == {i: 1 for i in range(steps)}
    assert {s.attempt for s in metric} == {2}
    if script == "reports":
        # The stale attempt printed its last step while frozen: refused, never stored
        lines = Counter(line.text for line in store.read_logs(task_id))
        assert lines[f"step {steps - 1}"] == 1


def test_sigterm_is_a_warm_shutdown_that_requeues_what_does_not_finish(
        store, hpo_env, tmp_path, queue_name, template):
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    env = env_for(hpo_env, broker)
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--shutdown-timeout",
                       "1") as agent:
        task_id = launch(store, broker, queue_name, template, steps=10_000, sleep=0.01)
        wait_status(store, task_id, Status.running)
        agent.signal(signal.SIGTERM)
        assert agent.wait(timeout=30) == 0
        assert "warm shutdown" in agent.output()
        # It said at start where it reads and writes
        assert f"uses store {safe_url(store.url)} and broker {broker}" in agent.output()
    task = store.get_task(task_id)
    assert task.status is Status.queued and "re-queued" in (task.status_message or "")
    # Unregistered: gone for the reaper and `hpo workers`, kept (stopped) for `hpo ui`
    assert not store.list_workers()
    [stopped] = store.list_workers(stopped_within=3600)
    assert stopped.name == agent.name and stopped.stopped_at is not None
    # and another agent picks it up from the broker
    with running_agent(store, env, tmp_path, "--queue", queue_name):
        wait_status(store, task_id, Status.running)
        dispatch.abort(store, task_id)
        assert wait_final(store, task_id).attempt == 2


def test_hpo_workers_lists_the_running_agents(store, hpo_env, tmp_path, queue_name):
    import subprocess

    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "2", name="lister"):
        out = subprocess.run([sys.executable, "-m", "hpo.cli.main", "workers"], env=hpo_env,
                             capture_output=True, text=True, check=True).stdout
    assert "lister" in out and queue_name in out and "cpu0, cpu1" in out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int, tmp_path: Path):  # type: ignore[no-untyped-def]
    import shutil
    import subprocess

    if not shutil.which("redis-server"):
        from tests.conftest import missing_service

        missing_service("redis-server")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from tests.conftest import redis_answers

    wait_for("redis to answer", lambda: redis_answers(f"redis://127.0.0.1:{port}/0"))
    return proc


@pytest.mark.redis
def test_agents_reconnect_after_redis_restarts_and_serve_the_next_task(
        store, hpo_env, tmp_path, queue_name, template):
    port = free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    redis_server = start_redis(port, tmp_path)
    try:
        with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue",
                           queue_name) as agent:
            assert wait_final(store, launch(store, broker, queue_name, template)).status \
                is Status.completed
            # When Redis restarts while the agent is idle
            redis_server.terminate()
            redis_server.wait(timeout=10)
            redis_server = start_redis(port, tmp_path)
            # Then the agent reconnects and serves the next task
            task = wait_final(store, launch(store, broker, queue_name, template), timeout=60)
            assert task.status is Status.completed
            assert agent.proc.poll() is None
    finally:
        redis_server.kill()
        redis_server.wait(timeout=10)


@pytest.mark.redis
def test_on_redis_the_first_queue_given_is_served_first(
        store, hpo_env, tmp_path, template):
    from tests.conftest import REDIS_URL, redis_answers

    if not redis_answers(REDIS_URL):
        from tests.conftest import missing_service

        missing_service(f"Redis at {REDIS_URL}")
    high, low = f"high-{time.time_ns()}", f"low-{time.time_ns()}"
    # Given three tasks waiting on the low queue and then three on the high queue
    lows = [launch(store, REDIS_URL, low, template) for _ in range(3)]
    highs = [launch(store, REDIS_URL, high, template) for _ in range(3)]
    # When one single-slot agent serves high first, then low
    with running_agent(store, env_for(hpo_env, REDIS_URL), tmp_path, "--queue", high,
                       "--queue", low):
        tasks = [wait_final(store, i) for i in highs + lows]
    # Then every high task started before every low one
    started = {t.id: t.started_at for t in tasks}
    assert max(started[i] for i in highs) < min(started[i] for i in lows)


def test_hpo_workers_reap_requeues_then_fails_a_task_whose_agent_is_gone(
        store, hpo_env, tmp_path, queue_name, template):
    import subprocess

    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    env = {**env_for(hpo_env, broker)}
    # Given a task running under an agent that stopped heartbeating long ago
    clone = store.clone_task(template)
    store.enqueue(clone.id, queue_name)
    store.claim(clone.id, "ghost")
    store.heartbeat("ghost", queues=[queue_name])
    reap = [sys.executable, "-m", "hpo.cli.main", "workers", "--reap", "--lost-after", "0"]
    # When the reaper runs, the task goes back to its queue (one retry)
    out = subprocess.run(reap, env=env, capture_output=True, text=True, check=True).stdout
    assert f"{clone.id} (agent ghost lost): queued" in out
    assert store.get_task(clone.id).status is Status.queued
    # and when its second attempt is lost too, it fails with "agent lost"
    store.claim(clone.id, "ghost")
    subprocess.run(reap, env=env, capture_output=True, text=True, check=True)
    task = store.get_task(clone.id)
    assert task.status is Status.failed and "agent lost" in (task.status_message or "")


def test_the_resource_monitor_records_the_task_process_tree(
        store, hpo_env, tmp_path, queue_name, template):
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--monitor-period", "0.2"):
        task_id = launch(store, broker, queue_name, template, steps=60, sleep=0.02)
        wait_final(store, task_id)
    memory = store.task_scalars(task_id, title=":monitor:machine", series="memory_mb")
    assert memory and max(s.value for s in memory) > 5  # Python with hpo uses > 5 MB
    assert store.task_scalars(task_id, title=":monitor:machine", series="cpu_percent")


def test_a_failure_of_the_agent_is_recorded_for_the_runner_s_own_attempt_only(
        store, hpo_env, tmp_path, template):
    from hpo.agent.runner import RunnerConfig, TaskRunner
    from hpo.agent.slots import Slot
    from hpo.agent.worker import Agent, AgentConfig

    # Given an agent whose runner had attempt 1 of a task that was re-queued and claimed
    # again, by this same agent, as attempt 2
    slot = Slot("cpu0", ())
    agent = Agent(AgentConfig(name="me", queues=["q"], slots=[slot],
                              runner=RunnerConfig(worker="me"),
                              broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}"))
    task_id = store.clone_task(template).id
    store.enqueue(task_id, "q")
    assert store.claim(task_id, "me") == 1
    assert store.requeue(task_id, 1)
    assert store.claim(task_id, "me") == 2
    stale = TaskRunner(agent.store, agent.config.runner, slot, agent._requeue,
                       agent._keep)
    stale.task_id, stale.attempt = task_id, 1
    # When the stale runner's failure is recorded, the newer attempt is left alone
    agent._fail_after_agent_error(stale)
    assert store.get_task(task_id).status is Status.running
    # and the owner's is recorded
    owner = TaskRunner(agent.store, agent.config.runner, slot, agent._requeue,
                       agent._keep)
    owner.task_id, owner.attempt = task_id, 2
    agent._fail_after_agent_error(owner)
    task = store.get_task(task_id)
    assert (task.status, task.attempt) == (Status.failed, 2)
    assert "the agent failed" in (task.status_message or "")
    agent.store.close()
