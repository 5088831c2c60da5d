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
