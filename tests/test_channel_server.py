"""The slot's report channel: one socket and one serving thread for every task a slot
runs; lines reach the run they belong to, and only that one."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from hpo.agent.channel_server import ChannelServer
from hpo.lifecycle import Status
from hpo.sdk import channel
from hpo.store import Store, open_store
from tests.agents import env_for, register_job, running_agent, wait_final
from tests.test_agent import launch

pytestmark = pytest.mark.timeout(120)


class Inbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def __call__(self, message: dict[str, Any]) -> None:
        with self._lock:
            self.messages.append(message)


def client(server: ChannelServer, task_id: str, attempt: int, *lines: dict[str, Any]
           ) -> None:
    """A script's whole life on the channel: connect, hello, its lines, exit."""
    sock = channel.connect(server.address)
    with sock:
        sock.sendall(channel.hello(task_id, attempt)
                     + b"".join(channel.encode(m) for m in lines))


def scalar(i: int) -> dict[str, Any]:
    return {"kind": "scalar", "title": "m", "series": "s", "iteration": i, "value": i}


def test_scripts_that_exit_at_once_lose_no_line_and_never_fail_the_run():
    # Given one slot's channel serving 300 runs one after another
    server = ChannelServer()
    try:
        for run in range(300):
            inbox = Inbox()
            server.open_route(f"t{run}", 1, inbox)
            # When each run's script connects, reports and exits at once
            client(server, f"t{run}", 1, scalar(run), scalar(run + 1))
            server.end_route()
            # Then its lines, and only its lines, reached it
            assert [m["iteration"] for m in inbox.messages] == [run, run + 1]
    finally:
        server.close()


def test_a_run_whose_script_never_connects_ends_at_once():
    server = ChannelServer()
    try:
        for _ in range(200):
            server.open_route("t", 1, Inbox())
            server.end_route(timeout=30)  # a hang would show as the test's timeout
    finally:
        server.close()


def test_a_straggler_of_an_earlier_run_is_cut_off():
    server = ChannelServer()
    try:
        for run in range(100):  # the cut-off ones may close as the run ends: many times
            # Given a slot whose first run ended, and a second run open
            first, second = Inbox(), Inbox()
            server.open_route(f"a{run}", 1, first)
            server.end_route()
            server.open_route(f"b{run}", 1, second)
            # When a process of the first run connects now, and one of an earlier attempt
            client(server, f"a{run}", 1, scalar(7))
            client(server, f"b{run}", 0, scalar(8))
            client(server, f"b{run}", 1, scalar(9))
            server.end_route()
            # Then only the second run's own line reached it, the others were refused
            assert first.messages == []
            assert [m["iteration"] for m in second.messages] == [9]
        assert server.refused == 200
    finally:
        server.close()


def test_lines_of_a_connection_still_unaccepted_when_the_script_exits_are_read():
    server = ChannelServer()
    try:
        inbox = Inbox()
        server.open_route("t", 1, inbox)
        # Connections made and closed in a burst, faster than one accept each
        for i in range(20):
            client(server, "t", 1, scalar(i))
        server.end_route()
        assert sorted(m["iteration"] for m in inbox.messages) == list(range(20))
    finally:
        server.close()


def test_a_connection_held_open_by_a_descendant_is_cut_after_the_timeout():
    server = ChannelServer()
    try:
        inbox = Inbox()
        server.open_route("t", 1, inbox)
        held = channel.connect(server.address)
        held.sendall(channel.hello("t", 1) + channel.encode(scalar(1)))
        server.end_route(timeout=0.2)
        assert [m["iteration"] for m in inbox.messages] == [1]
        # The next run is served as usual
        nxt = Inbox()
        server.open_route("u", 1, nxt)
        client(server, "u", 1, scalar(2))
        server.end_route()
        assert [m["iteration"] for m in nxt.messages] == [2]
        held.close()
    finally:
        server.close()


def test_bad_and_endless_lines_are_counted_and_skipped():
    server = ChannelServer()
    try:
        inbox = Inbox()
        server.open_route("t", 1, inbox)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(server.path)
            sock.sendall(channel.hello("t", 1) + b"not json\n[1,2]\n"
                         + channel.encode(scalar(3)))
        server.end_route()
        assert [m["iteration"] for m in inbox.messages] == [3]
        assert server.bad_lines == 2
    finally:
        server.close()


@pytest.fixture
def store(hpo_env: dict[str, str]) -> Store:
    return open_store()


@pytest.mark.slow
def test_an_agent_runs_many_scripts_that_exit_at_once_all_completed_with_their_reports(
        store, hpo_env, tmp_path: Path, queue_name):
    # Given an agent with one slot, and 40 tasks whose script reports once and exits
    template = register_job(store, tmp_path, "channel", steps=1)
    broker = env_for(hpo_env, hpo_env["HPO_BROKER_URL"]) if "HPO_BROKER_URL" in hpo_env \
        else None
    env = broker or env_for(hpo_env, f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    broker_url = env["HPO_BROKER_URL"]
    with running_agent(store, env, tmp_path, "--queue", queue_name):
        ids = [launch(store, broker_url, queue_name, template, steps=1) for _ in range(40)]
        tasks = [wait_final(store, task_id, timeout=90) for task_id in ids]
    # Then every one completed, with its one report, none twice
    assert [t.status for t in tasks] == [Status.completed] * 40
    for task in tasks:
        assert [s.iteration for s in store.task_scalars(task.id, title="metric")] == [0]


def test_a_line_that_breaks_the_decoder_or_the_route_leaves_the_slot_serving():
    # Given a slot's channel, and a run whose script sends a line nested too deep for
    # the JSON decoder (RecursionError, not ValueError) and whose recorder fails once
    server = ChannelServer()
    try:
        calls: list[dict[str, Any]] = []

        def fails_once(message: dict[str, Any]) -> None:
            calls.append(message)
            if len(calls) == 1:
                raise RuntimeError("a recorder bug")

        server.open_route("t1", 1, fails_once)
        sock = channel.connect(server.address)
        with sock:
            sock.sendall(channel.hello("t1", 1) + b"[" * 100_000 + b"\n"
                         + channel.encode(scalar(1)) + channel.encode(scalar(2)))
        server.end_route()
        # Then the bad line is counted, the failing call skipped, the next line taken
        assert server.bad_lines == 1
        assert [m["iteration"] for m in calls] == [1, 2]
        # And the slot's next run is served
        inbox = Inbox()
        server.open_route("t2", 1, inbox)
        client(server, "t2", 1, scalar(3))
        server.end_route()
        assert [m["iteration"] for m in inbox.messages] == [3]
    finally:
        server.close()
