"""Local agents (hpo-controller start --local-agents): the optimization does not wait
for them to start, and hears it when one cannot."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from hpo.controller.local_agents import LocalAgents
from hpo.errors import HpoError
from hpo.store import open_store

pytestmark = pytest.mark.timeout(60)


def test_an_agent_that_exits_at_start_is_reported_to_the_run(tmp_path: Path, hpo_env,
                                                             monkeypatch):
    # Given an interpreter that exits at once in place of the agents'
    monkeypatch.setattr("sys.executable", shutil.which("false"))
    store = open_store()
    heard: list[str] = []
    done = threading.Event()

    def on_failure(why: str) -> None:
        heard.append(why)
        done.set()

    # When local agents are started without waiting for them
    LocalAgents(store, f"sqla+sqlite:///{tmp_path / 'b.db'}", "q", 2, tmp_path / "logs",
                on_failure=on_failure)
    # Then the run hears why, naming where the agents' logs are
    assert done.wait(30)
    assert heard[0].startswith("a local agent exited at start") and "logs" in heard[0]


def test_without_a_callback_the_start_waits_and_raises(tmp_path: Path, hpo_env,
                                                       monkeypatch):
    monkeypatch.setattr("sys.executable", shutil.which("false"))
    with pytest.raises(HpoError, match="exited at start"):
        LocalAgents(open_store(), f"sqla+sqlite:///{tmp_path / 'b.db'}", "q", 1,
                    tmp_path / "logs")


@pytest.mark.slow
def test_an_agent_started_with_exit_with_stops_when_its_parent_is_killed(
        tmp_path: Path, hpo_env):
    # Given an agent started by a parent that names itself with --exit-with
    import signal
    import subprocess
    import sys

    import psutil

    from tests.agents import env_for, wait_for

    env = env_for(hpo_env, f"sqla+sqlite:///{tmp_path / 'b.db'}")
    parent = subprocess.Popen([sys.executable, "-c", (
        "import os, subprocess, sys, time\n"
        "agent = subprocess.Popen([sys.executable, '-m', 'hpo.agent.cli', '--queue', 'q',"
        " '--name', 'orphan', '--heartbeat', '0.2', '--exit-with', str(os.getpid())])\n"
        "print(agent.pid, flush=True)\n"
        "time.sleep(600)\n")], env=env, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    agent = psutil.Process(int(parent.stdout.readline()))
    store = open_store()
    wait_for("the agent to register", lambda: any(
        w.name == "orphan" for w in store.list_workers()), timeout=30)
    # When the parent dies without a word (a controller SIGKILLed)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    # Then the agent stops by itself, unregistered as on a SIGTERM
    try:
        agent.wait(timeout=30)
    finally:
        if agent.is_running():
            agent.kill()
    assert not any(w.name == "orphan" for w in store.list_workers())


@pytest.mark.slow
def test_local_agents_with_a_preload_start_where_hpo_agent_spawn_is_set(
        tmp_path: Path, hpo_env, monkeypatch):
    # Given HPO_AGENT_SPAWN=1 in the controller's environment (every script spawned)
    # and an optimization whose hpo.yaml has a preload: list
    monkeypatch.setenv("HPO_AGENT_SPAWN", "1")
    store = open_store()
    # When its local agents start, Then they do (hpo-agent refuses --preload with
    # spawning on, so it must not be given one)
    agents = LocalAgents(store, f"sqla+sqlite:///{tmp_path / 'b.db'}", "q", 1,
                         tmp_path / "logs", preload=["json"])
    agents.stop()
