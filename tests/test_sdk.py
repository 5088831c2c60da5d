"""The training-script SDK: run by hand it writes to the store; run under an agent it
reads overrides from the task spec and reports over the channel, standard library only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from hpo.lifecycle import Status
from hpo.store import open_store

DEMO = Path(__file__).parent / "scripts" / "sdk_demo.py"


def run_demo(env: dict[str, str], *argv: str, check: bool = True) -> dict[str, Any]:
    result = subprocess.run([sys.executable, str(DEMO), *argv], env=env, capture_output=True,
                            text=True, timeout=60, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def test_a_script_run_by_hand_is_registered_with_typed_parameters_and_scalars(hpo_env):
    # When the demo script runs by hand with --batch 8
    seen = run_demo(hpo_env, "--batch", "8")
    # Then the store has a completed template task with everything it connected and reported
    store = open_store()
    task = store.get_task(seen["task_id"])
    assert (task.project, task.name, task.status) == ("sdk-tests", "demo", Status.completed)
    assert task.parameters == {
        "General/lr": 0.1, "General/epochs": 3, "General/use_bn": True,
        "General/layers": [64, 32], "General/note": None,
        "General/optimizer/name": "sgd", "General/optimizer/momentum": 0.9,
        "Args/batch": 8, "Args/fail": False,
    }
    assert type(task.parameters["General/epochs"]) is int
    assert task.script is not None and task.script.entry_point == str(DEMO)
    assert task.script.argv == ["--batch", "8"]
    values = [s.value for s in store.task_scalars(task.id, title="accuracy")]
    assert values == pytest.approx([0.5, 0.51, 0.52])
    # and its output, as an agent would have kept it (still printed: the JSON line was read)
    logs = [(line.stream, line.text) for line in store.read_logs(task.id)]
    assert logs[0] == ("stdout", "training done")
    assert logs[1][0] == "stdout" and logs[1][1].startswith('{"task_id"')


def test_running_the_script_again_reuses_its_task_and_replaces_what_it_reported(hpo_env):
    first = run_demo(hpo_env)
    second = run_demo(hpo_env)
    assert first["task_id"] == second["task_id"]
    store = open_store()
    assert len(store.task_scalars(first["task_id"])) == 3
    assert len(store.find_tasks(project="sdk-tests")) == 1


def test_an_uncaught_exception_marks_the_task_failed(hpo_env):
    seen = run_demo(hpo_env, "--fail", check=False)
    task = open_store().get_task(seen["task_id"])
    assert task.status is Status.failed
    assert "RuntimeError: boom" in (task.status_message or "")


class ChannelServer:
    """A stand-in for the agent's side of the report channel: collects JSON lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[dict[str, Any]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                self.messages.append(json.loads(line))


def test_under_an_agent_connect_returns_the_overrides_with_their_types(tmp_path, hpo_env):
    # Given a task spec with overridden parameters, as an agent writes it
    spec = {"id": "f" * 32, "project": "p", "name": "clone", "parameters": {
        "General/lr": 0.5, "General/epochs": "2", "General/use_bn": False,
        "General/optimizer/momentum": 0.5, "Args/batch": 64}}
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    server = ChannelServer(tmp_path / "channel.sock")
    env = {**hpo_env, "HPO_TASK_ID": spec["id"], "HPO_TASK_SPEC": str(spec_path),
           "HPO_REPORT_ADDR": f"unix:{server.path}"}
    # When the script runs
    seen = run_demo(env, "--batch", "8")
    server.thread.join(timeout=10)
    # Then it saw the overridden values, typed like the script's own
    assert seen["task_id"] == spec["id"]
    assert seen["config"]["lr"] == 0.5
    assert seen["config"]["epochs"] == 2 and isinstance(seen["config"]["epochs"], int)
    assert seen["config"]["use_bn"] is False
    assert seen["config"]["optimizer"] == {"name": "sgd", "momentum": 0.5}
    assert seen["batch"] == 64
    # and it imported nothing heavy
    assert seen["heavy"] == []
    # and its reports arrived over the channel
    scalars = [m for m in server.messages if m["kind"] == "scalar"]
    assert [(m["title"], m["series"], m["iteration"]) for m in scalars] == [
        ("accuracy", "validation", i) for i in range(2)]
    assert scalars[1]["value"] == pytest.approx(0.55)
    # and no store was created: the child never touched it
    assert not Path(hpo_env["HPO_HOME"], "hpo.db").exists()


def test_importing_hpo_costs_milliseconds_and_no_heavy_module():
    code = ("import sys, time; t = time.perf_counter(); import hpo; "
            "print(time.perf_counter() - t); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sqlalchemy', 'celery', 'kombu', 'psutil', 'rich', 'typing')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "0"})
    _seconds, modules = out.stdout.splitlines()
    assert modules == "[]"


def test_connect_rejects_what_it_cannot_bind(hpo_env):
    from hpo import Task
    from hpo.errors import ConfigError

    task = Task.init(project_name="p", task_name="n")
    try:
        with pytest.raises(ConfigError, match="takes a dict"):
            task.connect(42)
    finally:
        task.close()
    assert open_store().get_task(task.id).status is Status.completed


def test_a_run_is_tagged_with_the_parameters_it_was_given_and_never_read(tmp_path):
    from hpo.sdk.agent_backend import AgentBackend
    from hpo.sdk.task import Task as SdkTask

    # Given a run under an agent whose task sets alpha, a typo alpah, a key the script
    # adds later, and an Args value the script reads another way
    backend = AgentBackend({"id": "t" * 32, "checkpoint_dir": str(tmp_path),
                            "parameters": {"General/alpha": 0.1, "General/alpah": 0.2,
                                           "General/seen": 0, "Args/x": 1}}, None)
    task = SdkTask(backend)
    params = task.connect({"alpha": 1.0})
    task.set_parameter("General/seen", 5)  # written by the script: it knows it
    # When it ends
    task._finish(None, None)
    # Then only the tuned-looking key it never read is named (Args was never connected)
    assert params["alpha"] == 0.1
    assert [t for t in backend.tags if t.startswith("unread:")] == ["unread:General/alpah"]
