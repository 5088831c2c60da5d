"""Warm slots (hpo-agent --preload, the default) against spawned scripts (--spawn): real
agents, real scripts, the same probe run both ways, compared on what it saw and on what
the store recorded."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from hpo.lifecycle import Status
from hpo.queue import dispatch
from hpo.queue.app import make_app
from hpo.records import ScriptInfo, TaskRecord
from hpo.store import Store, open_store
from tests.agents import JOB, AgentProcess, env_for, running_agent, wait_final, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PROBE = Path(__file__).parent / "scripts" / "probe_job.py"
# Different in every task by design: which task, its spec file, its report socket.
PER_TASK = {"HPO_TASK_ID", "HPO_TASK_SPEC", "HPO_REPORT_ADDR"}


@pytest.fixture
def store(hpo_env: dict[str, str]) -> Store:
    return open_store()


@pytest.fixture
def broker(tmp_path: Path) -> str:
    return f"sqla+sqlite:///{tmp_path / 'broker.db'}"


@pytest.fixture
def env(hpo_env: dict[str, str], broker: str, tmp_path: Path) -> dict[str, str]:
    """The agents' environment, with a fake nvidia-smi listing two GPUs (so a slot
    hands out GPU variables on a host without GPUs) and tmp_path importable (for the
    modules the tests preload)."""
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n[ \"$1\" = -L ] || exit 9\n"
                    "echo 'GPU 0: NVIDIA H200 (UUID: GPU-aaa)'\n"
                    "echo 'GPU 1: NVIDIA H200 (UUID: GPU-bbb)'\n")
    fake.chmod(0o755)
    base = env_for(hpo_env, broker)
    base.pop("CUDA_VISIBLE_DEVICES", None)
    base["PATH"] = f"{fake.parent}:{base['PATH']}"
    base["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path / "modules"),
                                                      base.get("PYTHONPATH")]))
    (tmp_path / "modules").mkdir()
    return base


def run_probe(store: Store, broker: str, queue: str, folder: Path, mode: str = "ok",
              **script: Any) -> tuple[TaskRecord, dict[str, Any]]:
    """The probe as a task of its own, run to its end: the task and what it saw."""
    out = folder / "seen.json"  # the same argv each time: argv is compared
    out.unlink(missing_ok=True)
    task = store.create_task("preload-tests", f"probe {mode}", script=ScriptInfo(
        entry_point=str(PROBE), working_dir=str(folder), argv=[str(out), mode],
        **{"interpreter": sys.executable, **script}))
    dispatch.enqueue(store, make_app(broker), task.id, queue)
    done = wait_final(store, task.id)
    return done, json.loads(out.read_text()) if out.exists() else {}


def command_line(process: psutil.Process) -> str:
    """Its command line; empty for one that ended (a zombie not reaped yet too)."""
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


def warm_processes(agent: AgentProcess) -> list[psutil.Process]:
    return [p for p in psutil.Process(agent.proc.pid).children()
            if "warm slot" in command_line(p)]


def log_of(store: Store, task_id: str) -> str:
    return "\n".join(line.text for line in store.read_logs(task_id))


def spare_of(agent: AgentProcess, other_than: int | None = None) -> psutil.Process:
    """The spare child its warm process forked once idle (agent/warm/spare.py)."""
    def spare() -> psutil.Process | None:
        found = [p for z in warm_processes(agent) for p in z.children()
                 if "warm slot (spare)" in command_line(p) and p.pid != other_than]
        return found[0] if found else None
    return wait_for("the warm process's spare child", spare)


@pytest.mark.parametrize("forked_by", ["fork", "spare"])
def test_a_forked_trial_sees_what_a_spawned_one_sees(store, env, broker, tmp_path,
                                                     queue_name, forked_by):
    """A slot's first task is forked on its request; the next ones run in the spare
    child forked ahead of them: both alike a spawned script."""
    seen = {}
    for how in ("--spawn", "--preload=json"):
        with running_agent(store, env, tmp_path, "--queue", queue_name, "--gpus", "1",
                           how) as agent:
            if how != "--spawn" and forked_by == "spare":
                run_probe(store, broker, queue_name, tmp_path)
                spare = spare_of(agent)
            task, seen[how] = run_probe(store, broker, queue_name, tmp_path)
        assert task.status is Status.completed, task.status_message
        assert store.task_scalars(task.id, title="probe")  # its report reached the store
        assert "probe wrote" in log_of(store, task.id)  # and its output
    spawned, forked = seen["--spawn"], seen["--preload=json"]
    assert not spawned["forked"] and forked["forked"]
    if forked_by == "spare":
        assert forked["pid"] == spare.pid  # the process forked before the task came
    for key in ("name", "file", "spec", "argv", "cwd", "path", "own_group", "cmdline",
                "stdin", "annotations"):
        assert forked[key] == spawned[key], key
    assert forked["name"] == "__main__" and forked["own_group"]
    assert forked["annotations"] == "{'marker': <class 'int'>}"
    assert forked["path"][0] == str(PROBE.parent)
    drop = PER_TASK
    assert {k: v for k, v in forked["env"].items() if k not in drop} == \
        {k: v for k, v in spawned["env"].items() if k not in drop}
    assert forked["env"]["CUDA_VISIBLE_DEVICES"] == "1"
    assert forked["env"]["NVIDIA_VISIBLE_DEVICES"] == "1"
    assert forked["env"]["HPO_TASK_ID"] == forked["task_id"]


@pytest.mark.parametrize("mode", ["exit3", "raise", "sigkill"])
def test_a_failing_script_is_recorded_alike_forked_or_spawned(store, env, broker, tmp_path,
                                                              queue_name, mode):
    recorded = {}
    for how in ("--spawn", "--preload=json"):
        with running_agent(store, env, tmp_path, "--queue", queue_name, how):
            task, seen = run_probe(store, broker, queue_name, tmp_path, mode)
        assert seen["forked"] is (how != "--spawn")
        # Lines of stdout and stderr interleave as their readers take them: a set.
        recorded[how] = (task.status, task.exit_code,
                         sorted((task.status_message or "").splitlines()))
    assert recorded["--spawn"] == recorded["--preload=json"]
    status, exit_code, message = recorded["--spawn"]
    assert status is Status.failed
    assert exit_code == {"exit3": 3, "raise": 1, "sigkill": -signal.SIGKILL}[mode]
    if mode == "raise":
        assert "RuntimeError: the probe raised" in message
        # The traceback starts at the script, as Python's does.
        assert not any("runpy" in line for line in message)


def test_a_script_edited_between_tasks_runs_as_edited(store, env, broker, tmp_path,
                                                       queue_name):
    """The warm process keeps each script's compiled code: an edit (same size, same
    file) is run, not the code kept from before it."""
    script = tmp_path / "edited.py"
    app = make_app(broker)
    with running_agent(store, env, tmp_path, "--queue", queue_name):
        logs = []
        for version in ("1", "2"):
            script.write_text(f"print('version {version}')\n")
            task = store.create_task("preload-tests", f"edited {version}", script=ScriptInfo(
                entry_point=str(script), working_dir=str(tmp_path),
                interpreter=sys.executable))
            dispatch.enqueue(store, app, task.id, queue_name)
            assert wait_final(store, task.id).status is Status.completed
            logs.append(log_of(store, task.id))
    assert "version 1" in logs[0] and "version 2" in logs[1]


def _job(store: Store, folder: Path, **params: Any) -> str:
    script = ScriptInfo(entry_point=str(JOB), working_dir=str(folder),
                        interpreter=sys.executable)
    defaults = {"steps": 10_000, "sleep": 0.01, "exit_code": 0, "print_mb": 0,
                "marker_dir": "", "wait_for": 0, "ignore_sigterm": False}
    return store.create_task("preload-tests", "job", script=script, parameters={
        f"General/{k}": v for k, v in {**defaults, **params}.items()}).id


def _script_of(agent: AgentProcess) -> psutil.Process:
    """The running job, found by its command line: a forked one shows the script's."""
    def probe() -> psutil.Process | None:
        found = [p for p in psutil.Process(agent.proc.pid).children(recursive=True)
                 if str(JOB) in p.cmdline()]
        return found[0] if found else None
    return wait_for("the job's process", probe)


def test_a_forked_trial_is_stopped_on_request_and_by_its_time_limit(
        store, env, broker, tmp_path, queue_name):
    app = make_app(broker)
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--grace", "5") as agent:
        stopped = _job(store, tmp_path)
        dispatch.enqueue(store, app, stopped, queue_name)
        wait_for("a first report", lambda: store.task_scalars(stopped))
        script = _script_of(agent)
        assert any("warm slot" in " ".join(p.cmdline()) for p in script.parents())
        dispatch.abort(store, stopped)
        by_request = wait_final(store, stopped, timeout=15)
        wait_for("its process group to be gone",
                 lambda: not [p for p in psutil.process_iter()
                              if _group(p) == script.pid], timeout=10)
        limited = store.create_task("preload-tests", "limited",
                                    script=store.get_task(stopped).script,
                                    parameters=store.get_task(stopped).parameters,
                                    time_limit=1.0)
        dispatch.enqueue(store, app, limited.id, queue_name)
        by_limit = wait_final(store, limited.id)
    assert by_request.status is Status.stopped and by_request.status_message == "aborted"
    assert by_request.exit_code == -signal.SIGTERM
    assert by_limit.status is Status.stopped
    assert "time limit of 1s reached" in (by_limit.status_message or "")


def _dead(process: psutil.Process) -> bool:
    """Ended: gone, or a zombie its parent (the agent) reaps when it next looks."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _group(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except OSError:
        return None


def test_a_preloaded_module_that_starts_a_thread_makes_its_slot_spawn_saying_why(
        store, env, broker, tmp_path, queue_name):
    (tmp_path / "modules" / "threader.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n")
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--preload",
                       "json,threader") as agent:
        task, seen = run_probe(store, broker, queue_name, tmp_path)
    assert task.status is Status.completed and not seen["forked"]
    reason = "threader: started a thread at import"
    assert reason in log_of(store, task.id)
    assert agent.output().count(reason) == 1


def test_a_preload_that_does_not_import_is_said_once_and_the_rest_runs_warm(
        store, env, broker, tmp_path, queue_name):
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--preload",
                       "no_such_module_here,json") as agent:
        task, seen = run_probe(store, broker, queue_name, tmp_path)
    assert task.status is Status.completed and seen["forked"]
    assert agent.output().count("--preload no_such_module_here does not import") == 1


def test_a_task_preload_is_imported_into_the_warm_process_or_refused_when_unsafe(
        store, env, broker, tmp_path, queue_name):
    (tmp_path / "modules" / "marker_mod.py").write_text("VALUE = 1\n")
    (tmp_path / "modules" / "threader2.py").write_text(
        "import threading, time\n"
        "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n")
    with running_agent(store, env, tmp_path, "--queue", queue_name) as agent:
        warm, warm_seen = run_probe(store, broker, queue_name, tmp_path,
                                    preload=["marker_mod"])
        [zygote] = warm_processes(agent)
        refused, refused_seen = run_probe(store, broker, queue_name, tmp_path,
                                          preload=["threader2"])
        after, after_seen = run_probe(store, broker, queue_name, tmp_path)
    assert warm.status is Status.completed and warm_seen["forked"]
    assert warm_seen["parent"] == zygote.pid
    assert warm_seen["marker_mod"]  # forked after the import, not before
    assert refused.status is Status.completed and not refused_seen["forked"]
    assert "threader2: started a thread at import" in log_of(store, refused.id)
    assert after.status is Status.completed and after_seen["forked"]  # a fresh one


def test_a_warm_process_killed_between_tasks_is_restarted(store, env, broker, tmp_path,
                                                          queue_name):
    with running_agent(store, env, tmp_path, "--queue", queue_name) as agent:
        first, first_seen = run_probe(store, broker, queue_name, tmp_path)
        [zygote] = warm_processes(agent)
        zygote.kill()
        wait_for("the warm process to die", lambda: _dead(zygote))
        second, second_seen = run_probe(store, broker, queue_name, tmp_path)
    assert first.status is second.status is Status.completed
    assert first_seen["forked"] and second_seen["forked"]
    assert first_seen["parent"] == zygote.pid != second_seen["parent"]


def test_a_spare_child_killed_while_idle_is_replaced_and_the_next_task_runs_in_the_next(
        store, env, broker, tmp_path, queue_name):
    """A spare killed before it read anything (it tells its warm process before it
    reads): the warm process forks another, and serves on."""
    with running_agent(store, env, tmp_path, "--queue", queue_name) as agent:
        first, first_seen = run_probe(store, broker, queue_name, tmp_path)
        [zygote] = warm_processes(agent)
        killed = spare_of(agent)
        killed.kill()
        replacement = spare_of(agent, other_than=killed.pid)
        second, second_seen = run_probe(store, broker, queue_name, tmp_path)
        assert warm_processes(agent) == [zygote]
    assert first.status is second.status is Status.completed
    assert first_seen["parent"] == second_seen["parent"] == zygote.pid
    assert second_seen["pid"] == replacement.pid


@pytest.mark.parametrize("last_word", [None, "reading"])
def test_a_spare_that_dies_is_told_idle_or_lost_by_whether_it_began_to_read(last_word):
    """What its warm process does next hangs on this: a spare that died idle read
    nothing (another is forked); one that died after saying it reads may have taken a
    request half off the socket (the warm process ends, the agent starts another)."""
    import socket

    from hpo.agent.warm import protocol
    from hpo.agent.warm.spare import Spare

    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # a spare that says its last word, if any, and dies
        try:
            if last_word:
                protocol.send(theirs, {last_word: True})
        finally:
            os._exit(0)
    theirs.close()
    what, message, fds = Spare(pid, ours).wait()
    assert (what, message, fds) == ("lost" if last_word else "died", {}, [])
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped


def test_a_warm_process_killed_while_its_task_runs_fails_the_task_honestly(
        store, env, broker, tmp_path, queue_name):
    with running_agent(store, env, tmp_path, "--queue", queue_name) as agent:
        task_id = _job(store, tmp_path, sleep=0.05)
        dispatch.enqueue(store, make_app(broker), task_id, queue_name)
        wait_for("a first report", lambda: store.task_scalars(task_id))
        script = _script_of(agent)
        [zygote] = warm_processes(agent)
        zygote.kill()
        task = wait_final(store, task_id, timeout=30)
        # The agent serves on, with a new warm process.
        after, seen = run_probe(store, broker, queue_name, tmp_path)
    assert task.status is Status.failed
    assert "exit status unknown" in (task.status_message or "")
    assert not psutil.pid_exists(script.pid) or script.status() == psutil.STATUS_ZOMBIE
    assert after.status is Status.completed and seen["forked"]


def _yaml(folder: Path, **fields: Any) -> Path:
    import yaml

    (folder / "train.py").write_text("print('training')\n")
    path = folder / "hpo.yaml"
    path.write_text(yaml.safe_dump({
        "base_task": {"script": "train.py", "project": "p", "name": "train"},
        "hyper_parameters": [{"type": "uniform", "name": "General/x", "min_value": 0,
                              "max_value": 1}],
        "objective": {"title": "loss", "series": "loss", "sign": "min"}, **fields}))
    return path


@pytest.mark.timeout(60)
def test_hpo_yaml_preload_is_recorded_in_the_base_tasks_script_and_its_clones(
        store, tmp_path):
    from hpo.controller.yaml_config import load_optimizer_arguments
    from hpo.errors import ConfigError

    arguments = load_optimizer_arguments(
        _yaml(tmp_path, preload="sklearn.ensemble, scipy.optimize"), store)
    base = store.get_task(arguments["base_task_id"])
    assert base.script is not None
    assert base.script.preload == ["sklearn.ensemble", "scipy.optimize"]
    clone = store.clone_task(base.id)
    assert clone.script is not None and clone.script.preload == base.script.preload
    # Registered again with another list: the same task, the new list.
    again = load_optimizer_arguments(_yaml(tmp_path, preload=["json"]), store)
    assert again["base_task_id"] == base.id
    assert store.get_task(base.id).script.preload == ["json"]  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="preload: 'not a module' is not a module name"):
        load_optimizer_arguments(_yaml(tmp_path, preload=["not a module"]), store)


def test_a_task_for_another_interpreter_is_spawned_saying_why(store, env, broker, tmp_path,
                                                              queue_name):
    # A link to the same interpreter in another folder: another environment (a venv's
    # python is such a link), so not the agent's own.
    other = tmp_path / "other-env" / "bin" / "python"
    other.parent.mkdir(parents=True)
    other.symlink_to(sys.executable)
    with running_agent(store, env, tmp_path, "--queue", queue_name):
        task, seen = run_probe(store, broker, queue_name, tmp_path, interpreter=str(other))
    assert f"its interpreter {other} is not the agent's own" in log_of(store, task.id)
    # Spawned there for real: that environment lacks the agent's packages.
    assert task.status is Status.failed and not seen
    assert "ModuleNotFoundError" in (task.status_message or "")


@pytest.mark.timeout(60)
def test_a_task_preload_that_hangs_at_import_spawns_the_task_and_is_not_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A WarmSlot driven directly: the import op has the start's timeout, so a module
    that never finishes importing cannot hold the task where no stop reaches it."""
    from hpo import defaults
    from hpo.agent.warm.slot import WarmSlot

    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "hangs.py").write_text("import time\ntime.sleep(3600)\n")
    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    env = {**os.environ, "PYTHONPATH": str(modules)}
    monkeypatch.setattr(defaults, "WARM_START_TIMEOUT_S", 2.0)
    monkeypatch.setattr(defaults, "KILL_WAIT_S", 1.0)
    slot = WarmSlot("t", [], env)
    try:
        proc, why = slot.launch([sys.executable, str(script)], str(tmp_path), env,
                                preload=["hangs"])
        assert proc is None and why is not None and "hangs" in why and "import" in why
        proc, why = slot.launch([sys.executable, str(script)], str(tmp_path), env,
                                preload=["hangs"])  # forked from a fresh one, no import
        assert why is None and proc is not None
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None and proc.stdout.read() == b"ran\n"
    finally:
        slot.close()


@pytest.mark.timeout(60)
def test_a_fork_whose_pid_never_comes_leaves_no_descriptor_open(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpo.agent.warm import protocol
    from hpo.agent.warm.slot import WarmSlot

    script = tmp_path / "job.py"
    script.write_text("pass\n")
    env = dict(os.environ)
    before = set(os.listdir("/proc/self/fd"))
    slot = WarmSlot("t", [], env)
    try:
        slot.start()
        real = protocol.receive

        def lost(sock: Any) -> Any:  # the warm process dies after the fork request
            raise protocol.Closed()

        monkeypatch.setattr(protocol, "receive", lost)
        proc, why = slot.launch([sys.executable, str(script)], str(tmp_path), env)
        monkeypatch.setattr(protocol, "receive", real)
        assert proc is None and why is not None and "failed to fork" in why
        assert set(os.listdir("/proc/self/fd")) <= before
    finally:
        slot.close()


def test_a_forked_trial_stops_itself_when_its_agent_is_killed(
        store, env, broker, tmp_path, queue_name):
    # The script's parent is the warm process, not the agent: the warm process leaves
    # when the agent's end of its socket closes, and the script sees its parent change.
    with running_agent(store, env, tmp_path, "--queue", queue_name) as agent:
        task_id = _job(store, tmp_path, sleep=0.05)
        dispatch.enqueue(store, make_app(broker), task_id, queue_name)
        wait_for("a first report", lambda: store.task_scalars(task_id))
        script = _script_of(agent)
        [zygote] = warm_processes(agent)
        agent.kill()
        wait_for("the warm process to leave", lambda: _dead(zygote), timeout=15)
        wait_for("the script to stop itself", lambda: _dead(script), timeout=15)


@pytest.mark.timeout(60)
def test_a_warm_process_that_dies_at_import_makes_the_task_spawn_not_fail(
        tmp_path: Path) -> None:
    from hpo.agent.warm.slot import WarmSlot

    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "dies.py").write_text("import os\nos._exit(3)\n")
    script = tmp_path / "job.py"
    script.write_text("pass\n")
    env = {**os.environ, "PYTHONPATH": str(modules)}
    before = set(os.listdir("/proc/self/fd"))
    slot = WarmSlot("t", ["dies"], env)
    try:
        proc, why = slot.launch([sys.executable, str(script)], str(tmp_path), env)
        assert proc is None and why is not None and "exited while importing" in why
        assert set(os.listdir("/proc/self/fd")) <= before
    finally:
        slot.close()


@pytest.mark.timeout(60)
def test_a_warm_process_started_ahead_becomes_its_slots_with_the_slots_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a forked local agent starts one before its start message: the slot takes it
    instead of spawning a second, and it is then what one spawned for the slot would
    be: a preloaded module reads the slot's environment, its output is the agent's."""
    from hpo.agent.warm import slot as warm

    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "reads_env.py").write_text(
        "import os\nSEEN = os.environ.get('HPO_SEEN'), os.environ.get('HPO_AHEAD_ONLY')\n")
    script = tmp_path / "job.py"
    script.write_text("import reads_env\nprint(*reads_env.SEEN)\n")
    monkeypatch.setenv("PYTHONPATH", str(modules))
    monkeypatch.delenv("HPO_SEEN", raising=False)
    monkeypatch.setenv("HPO_AHEAD_ONLY", "the controller's")
    warm.start_ahead(1)
    [ahead] = warm._ahead
    env = {**os.environ, "HPO_SEEN": "the slot's"}
    del env["HPO_AHEAD_ONLY"]
    slot = warm.WarmSlot("t", ["reads_env"], env)
    try:
        slot.start()
        assert slot._proc is not None and slot._proc.pid == ahead.proc.pid
        for fd in (1, 2):
            assert os.readlink(f"/proc/{ahead.proc.pid}/fd/{fd}") == os.readlink(
                "/proc/self/fd/2")
        proc, why = slot.launch([sys.executable, str(script)], str(tmp_path), env)
        assert why is None and proc is not None
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None and proc.stdout.read() == b"the slot's None\n"
    finally:
        slot.close()
        warm.discard_ahead()


@pytest.mark.timeout(60)
def test_a_warm_process_started_ahead_under_other_python_settings_is_not_used(
        tmp_path: Path) -> None:
    from hpo.agent.warm import slot as warm

    warm.start_ahead(1)
    [ahead] = warm._ahead
    env = {**os.environ, "PYTHONHASHSEED": "7"}  # Python would start differently
    slot = warm.WarmSlot("t", [], env)
    try:
        slot.start()
        assert slot._proc is not None and slot._proc.pid != ahead.proc.pid
        assert ahead.proc.wait(timeout=30) is not None  # it leaves when let go
        assert not warm._ahead
    finally:
        slot.close()
        warm.discard_ahead()


@pytest.mark.timeout(60)
def test_a_warm_process_whose_adoption_fails_gives_way_to_a_fresh_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The adoption's exchange cut (the process started ahead dies as it is taken): the
    slot spawns its own and stays warm, rather than spawning every task from then on."""
    from hpo.agent.warm import protocol
    from hpo.agent.warm import slot as warm

    script = tmp_path / "job.py"
    script.write_text("print('ran')\n")
    warm.start_ahead(1)
    [ahead] = warm._ahead
    real = protocol.send

    def cut(sock: Any, message: dict[str, Any], fds: Any = ()) -> None:
        if message.get("op") == "adopt":
            raise protocol.Closed()
        real(sock, message, fds)

    monkeypatch.setattr(protocol, "send", cut)
    env = dict(os.environ)
    slot = warm.WarmSlot("t", [], env)
    try:
        slot.start()
        assert slot._proc is not None and slot._proc.pid != ahead.proc.pid
        assert ahead.proc.wait(timeout=30) is not None  # let go: its socket closed
        proc, why = slot.launch([sys.executable, str(script)], str(tmp_path), env)
        assert why is None and proc is not None  # forked, warm
        assert proc.wait(timeout=30) == 0
        assert proc.stdout is not None and proc.stdout.read() == b"ran\n"
    finally:
        slot.close()
        warm.discard_ahead()
