"""Local agents (hpo-controller start --local-agents): the optimization does not wait
for them to start, and hears it when one cannot."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

from hpo.controller.local_agents import LocalAgents
from hpo.errors import HpoError
from hpo.lifecycle import Status
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


def test_where_threads_run_the_agents_are_spawned_and_their_logs_say_why(
        tmp_path: Path, hpo_env, monkeypatch):
    # Given a controller process where a thread already runs (fork would copy only the
    # forking thread, and a lock the other one held would stay locked in the agent)
    from hpo.controller import local_agents

    monkeypatch.setattr(local_agents, "_not_forked", [])
    monkeypatch.setattr("sys.executable", shutil.which("false"))
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="busy-thread", daemon=True)
    thread.start()
    try:
        # When agents are prepared for forking, Then none is forked
        local_agents.prepare_forks(1, "sqlite://", f"sqla+sqlite:///{tmp_path / 'b.db'}")
        assert local_agents._forks == []
    finally:
        release.set()
        thread.join()
    # and the agent is spawned (here: an interpreter that exits at once), its log
    # saying in one line why it was not forked
    with pytest.raises(HpoError, match="exited at start"):
        LocalAgents(open_store(), f"sqla+sqlite:///{tmp_path / 'b.db'}", "q", 1,
                    tmp_path / "logs")
    [log] = (tmp_path / "logs").glob("*.log")
    first = log.read_text().splitlines()[0]
    # (the threads named: earlier tests in this process may have left some of their own)
    assert first.startswith("hpo-controller: agent spawned, not forked: threads already "
                            "run in the controller ("), first
    assert "busy-thread" in first, first


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_controllers_forked_agents_run_its_jobs_and_leave_when_it_is_killed(
        tmp_path: Path, hpo_env):
    # Given hpo-controller start --local-agents 2 running two jobs that wait for a file
    import signal
    import subprocess
    import sys

    import psutil

    from tests.agents import wait_for
    from tests.test_controller_cli import slow_config

    config = slow_config(tmp_path / "cfg", total=4)
    store = open_store()
    with (tmp_path / "controller.log").open("wb") as out:
        ctl = subprocess.Popen([sys.executable, "-m", "hpo.controller.cli", "start",
                                str(config), "--local-agents", "2", "--plain"], env=hpo_env,
                               stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for("2 running jobs on 2 agents", lambda: len(
            {t.worker for t in store.find_tasks(status=[Status.running]) if t.worker}) == 2 or (
                ctl.poll() is not None and (tmp_path / "controller.log").read_text()),
            timeout=90)
        assert ctl.poll() is None, (tmp_path / "controller.log").read_text()
        # Then its agents are forks of it (no new interpreter), registered by name, their
        # output in their own log files, shown by ps as hpo-agent is
        workers = store.list_workers()
        assert len(workers) == 2
        agents = [psutil.Process(w.pid) for w in workers]
        for agent, worker in zip(agents, workers, strict=True):
            assert agent.ppid() == ctl.pid
            assert os.getsid(agent.pid) == agent.pid  # its own session
            assert "hpo.agent.cli" in " ".join(agent.cmdline())
            log = next((tmp_path / "hpo-home" / "logs").rglob(f"{worker.name}.log"))
            assert f"agent {worker.name} serving queues" in log.read_text()
            # and their slot's warm process is the one each started before its start
            # (said once the slot has adopted it: after the "task started" line when the
            # first task came before the warm process had imported hpo, on a busy machine)
            wait_for(f"{worker.name}'s warm slot", lambda log=log: ", started ahead)" in
                     log.read_text(), timeout=60)
        # When the controller is SIGKILLed
        ctl.send_signal(signal.SIGKILL)
        ctl.wait(timeout=10)
        # Then its agents stop by themselves and unregister, as on a SIGTERM
        _, alive = psutil.wait_procs(agents, timeout=60)
        assert not alive, [a.pid for a in alive]
        wait_for("the agents to unregister", lambda: not store.list_workers(), timeout=30)
    finally:
        (tmp_path / "cfg" / "hold").unlink(missing_ok=True)
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_forks_never_started_leave_with_a_controller_that_fails_first(tmp_path: Path,
                                                                       hpo_env):
    # Given an hpo.yaml the controller refuses after it has forked its agents
    import subprocess
    import sys

    import psutil

    from tests.agents import wait_for

    config = tmp_path / "hpo.yaml"
    config.write_text("base_task: {script: missing.py}\nno_such_field: 1\n")
    # When it is started with --local-agents
    result = subprocess.run([sys.executable, "-m", "hpo.controller.cli", "start",
                             str(config), "--local-agents", "2"], env=hpo_env,
                            capture_output=True, text=True, timeout=60, check=False)
    # Then it fails in one line, and no fork of it is left behind
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("hpo-controller: error:"), result.stderr

    def of_this_test() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter():
            try:
                if (proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE
                        and proc.environ().get("HPO_HOME") == hpo_env["HPO_HOME"]):
                    found.append(proc)
            except (psutil.Error, OSError):
                pass
        return found

    wait_for("the forks to leave", lambda: not of_this_test(), timeout=30)


# ----- the forks themselves, made from this test's process -----------------------------


@pytest.fixture
def forks(tmp_path: Path, hpo_env):
    """Forks of this process made as hpo-controller makes its agents; let go (and
    reaped) at the end of the test."""
    from hpo.controller.agent_forks import fork_agents

    made = []

    def fork(count: int = 1) -> list:
        made.extend(fork_agents(count, f"sqla+sqlite:///{tmp_path / 'broker' / 'b.db'}"))
        return made[-count:]

    yield fork
    for agent in made:
        agent.discard()
        try:
            agent.wait(timeout=30)
        except Exception:
            agent.kill()
            agent.wait()


def _link(pid: int, fd: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return ""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_a_fork_waiting_for_its_start_holds_none_of_the_controllers_descriptors(forks):
    import select

    from tests.agents import wait_for

    # Given a pipe whose write end the controller has (as a CI runner's, or an flock)
    read_end, write_end = os.pipe()
    try:
        # When an agent is forked, and the controller closes its own copy
        [agent] = forks(1)
        os.close(write_end)
        write_end = -1
        # Then the pipe ends (the fork did not keep it), while the fork still waits
        wait_for("the pipe's end", lambda: select.select([read_end], [], [], 0.05)[0],
                 timeout=30)
        assert os.read(read_end, 1) == b""
        assert agent.poll() is None
        # and its stdin and output are /dev/null until its start gives it its log
        wait_for("stdio on /dev/null", lambda: all(
            _link(agent.pid, fd) == os.devnull for fd in (0, 1, 2)), timeout=30)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def test_a_fork_has_an_agents_signal_handlers_not_the_controllers(forks):
    import signal

    from tests.agents import wait_for

    # Given a controller with a SIGTERM handler of its own
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        [agent] = forks(1)
    finally:
        signal.signal(signal.SIGTERM, previous)

    def status(field: str) -> int:
        text = Path(f"/proc/{agent.pid}/status").read_text()
        return int(next(line.split()[1] for line in text.splitlines()
                        if line.startswith(field + ":")), 16)

    # When it waits for its start, Then none is blocked and SIGTERM is not caught
    wait_for("Python's handlers", lambda: status("SigBlk") == 0 and not (
        status("SigCgt") >> (signal.SIGTERM - 1)) & 1, timeout=30)
    # so that a SIGTERM ends it (the controller's handler would have kept it)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(timeout=30) == -signal.SIGTERM


def test_a_forked_agent_that_exits_with_a_message_says_it_in_its_log(
        tmp_path: Path, forks, monkeypatch):
    # Given an agent that exits as sys.exit("text") does
    import hpo.agent.cli

    def refuse(argv: list[str]) -> int:
        raise SystemExit("hpo-agent: no queue to serve")

    monkeypatch.setattr(hpo.agent.cli, "main", refuse)
    [agent] = forks(1)
    # When it starts, Then it ends with status 1, the text in its log (as Python does)
    agent.start(["--queue", "q"], dict(os.environ), tmp_path / "agent.log")
    assert agent.wait(timeout=60) == 1
    assert "hpo-agent: no queue to serve" in (tmp_path / "agent.log").read_text()


def test_a_poll_does_not_wait_behind_a_blocking_wait(forks):
    import sys

    from tests.agents import wait_for

    # Given a thread blocked in wait() on a fork that waits for its start
    [agent] = forks(1)
    codes: list[int] = []
    waiter = threading.Thread(target=lambda: codes.append(agent.wait()), daemon=True)
    waiter.start()
    wait_for("the waiter to block", lambda: sys._current_frames()[
        waiter.ident].f_code.co_name in ("wait", "_reap"))
    # When another thread polls, Then it hears at once that the fork runs
    assert agent.poll() is None
    # and the waiter has its status once the fork leaves
    agent.discard()
    waiter.join(30)
    assert codes == [0]


def test_the_warm_up_opens_no_connection_and_creates_nothing(tmp_path: Path):
    from hpo.agent.worker import warm_up

    # Given an embedded broker's URL whose folder does not exist yet
    folder = tmp_path / "broker"
    # When a fork warms up for it, Then nothing is created (the agent does that)
    warm_up(f"sqla+sqlite:///{folder / 'b.db'}")
    assert not folder.exists()


def test_a_thread_started_by_the_drivers_imports_is_seen(tmp_path: Path, hpo_env,
                                                          monkeypatch):
    from hpo.controller import local_agents

    # Given a driver whose import starts a thread
    release = threading.Event()
    started: list[threading.Thread] = []

    def import_drivers(urls: list[str]) -> None:
        started.append(threading.Thread(target=release.wait, name="driver-thread",
                                        daemon=True))
        started[0].start()

    monkeypatch.setattr(local_agents, "import_drivers", import_drivers)
    monkeypatch.setattr(local_agents, "_not_forked", [])
    try:
        # When agents are prepared, Then none is forked, and the thread is named why
        local_agents.prepare_forks(1, "sqlite://", f"sqla+sqlite:///{tmp_path / 'b.db'}")
        assert local_agents._forks == []
        assert "driver-thread" in local_agents._not_forked[0]
    finally:
        release.set()
        for thread in started:
            thread.join()


def test_forks_let_go_unstarted_are_reaped(tmp_path: Path, hpo_env, monkeypatch):
    from hpo.controller import local_agents
    from hpo.controller.agent_forks import fork_agents

    # Given two prepared forks (made whatever threads earlier tests left), of which the
    # run takes one
    prepared = fork_agents(2, f"sqla+sqlite:///{tmp_path / 'b.db'}")
    monkeypatch.setattr(local_agents, "_forks", list(prepared))
    monkeypatch.setattr(local_agents, "_dropped", [])
    pids = [fork.pid for fork in prepared]
    [taken] = local_agents._take_forks(1)
    taken.discard()
    taken.wait(timeout=30)
    # When the agents stop, Then the other is reaped too: no zombie is left
    local_agents.reap_dropped(timeout=30)
    for pid in pids:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_a_fork_let_go_unstarted_takes_its_warm_process_with_it(forks):
    import psutil

    from tests.agents import wait_for

    # Given a fork waiting for its start, its slot's warm process started ahead
    [fork] = forks()
    parent = psutil.Process(fork.pid)
    warm = wait_for("the warm process started ahead", lambda: next(
        (p for p in parent.children() if "warm" in " ".join(p.cmdline())), None), timeout=30)
    # When the fork is let go without a start
    fork.discard()
    fork.wait(timeout=30)
    # Then its warm process leaves too (its socket closed), left to no one

    def gone() -> bool:
        try:
            return warm.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for("the warm process to leave", gone, timeout=30)
