"""`hpo task`: the command line as a user types it, in real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpo.optimization.ends import End, end_of
from hpo.store import open_store

DEMO = Path(__file__).parent / "scripts" / "sdk_demo.py"


def hpo(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpo.cli.main", *argv], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def ok(env: dict[str, str], *argv: str) -> str:
    result = hpo(env, *argv)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def template_id(hpo_env: dict[str, str]) -> str:
    """The demo script run once by hand: a template task with typed parameters."""
    out = subprocess.run([sys.executable, str(DEMO)], env=hpo_env, capture_output=True,
                         text=True, timeout=60, check=True)
    return json.loads(out.stdout.splitlines()[-1])["task_id"]


def test_a_script_run_by_hand_appears_in_task_list(hpo_env, template_id):
    out = ok(hpo_env, "task", "list")  # piped: ids cut to a prefix to fit 100 columns
    assert template_id[:8] in out and "sdk-tests" in out and "completed" in out
    listed = json.loads(ok(hpo_env, "task", "list", "--json", "--project", "sdk-tests"))
    assert [t["id"] for t in listed] == [template_id]
    assert json.loads(ok(hpo_env, "task", "list", "--json", "--status", "queued")) == []


def test_task_show_gives_parameters_with_types_and_last_metrics(hpo_env, template_id):
    out = ok(hpo_env, "task", "show", template_id[:8])
    assert "General/epochs" in out and "int" in out and "bool" in out
    assert "accuracy" in out and "validation" in out
    shown = json.loads(ok(hpo_env, "task", "show", template_id, "--json"))
    assert shown["task"]["parameters"]["General/epochs"] == 3
    [metric] = shown["metrics"]
    assert (metric["last"], metric["last_iteration"]) == (pytest.approx(0.52), 2)


def test_clone_overrides_one_parameter_and_keeps_the_others_types(hpo_env, template_id):
    clone_id = ok(hpo_env, "task", "clone", template_id, "--param", "General/lr=0.5",
                  "--param", "epochs=7", "--name", "demo lr=0.5").strip()
    clone = open_store().get_task(clone_id)
    template = open_store().get_task(template_id)
    assert clone.status.value == "created" and clone.name == "demo lr=0.5"
    assert clone.parameters["General/lr"] == 0.5
    assert clone.parameters["General/epochs"] == 7
    for key, value in template.parameters.items():
        assert type(clone.parameters[key]) is type(value), key
    assert clone.script == template.script


def test_task_create_registers_a_script_without_running_it(hpo_env, tmp_path):
    created = json.loads(ok(
        hpo_env, "task", "create", "--script", str(DEMO), "--project", "p", "--name", "n",
        "--param", "General/lr=0.01", "--param", "Args/batch=32", "--param", "flag=true",
        "--tag", "base", "--json", "--args", "--batch", "4"))
    assert created["status"] == "created"
    assert created["parameters"] == {"General/lr": 0.01, "Args/batch": 32, "General/flag": True}
    assert created["script"]["argv"] == ["--batch", "4"]
    assert created["tags"] == ["base"]
    assert open_store().get_task(created["id"]).script.entry_point == str(DEMO)


def test_scalars_and_logs_show_what_the_script_reported(hpo_env, template_id):
    scalars = json.loads(ok(hpo_env, "task", "scalars", template_id, "--json"))
    assert [s["iteration"] for s in scalars] == [0, 1, 2]
    assert "training done" in ok(hpo_env, "task", "logs", template_id)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["task", "show", "0123456789abcdef"], "no task with id"),
        (["task", "clone", "deadbeef", "--param", "lr=1"], "no task with id"),
        (["task", "create", "--script", "/no/such.py", "--project", "p", "--name", "n"],
         "script not found"),
        (["--store", "postgresql+psycopg://nobody@127.0.0.1:1/x", "task", "list"],
         "cannot reach the store"),
        (["task", "list", "--store", "nonsense://"], "store"),
    ],
    ids=["unknown-id", "unknown-clone-source", "missing-script", "unreachable-store",
         "bad-store-url"],
)
def test_bad_input_is_one_clear_line_and_exit_code_2(hpo_env, argv, message):
    open_store().close()  # a store that exists: an unknown id is then the error
    result = hpo(hpo_env, *argv)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_param_is_one_clear_line_and_exit_code_2(hpo_env, template_id):
    result = hpo(hpo_env, "task", "clone", template_id, "--param", "no-equals-sign")
    assert result.returncode == 2
    assert "malformed --param" in result.stderr and "Section/name=value" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_help_explains_every_action(hpo_env):
    out = ok(hpo_env, "task", "--help")
    for action in ("create", "list", "show", "clone", "scalars", "logs"):
        assert action in out


def test_enqueue_dequeue_and_abort_from_the_command_line(hpo_env, template_id, tmp_path):
    env = {**hpo_env, "HPO_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}"}
    clone_id = ok(env, "task", "clone", template_id).strip()
    assert "queued on fast" in ok(env, "task", "enqueue", clone_id, "--queue", "fast")
    assert open_store().get_task(clone_id).queue == "fast"
    assert "created" in ok(env, "task", "dequeue", clone_id)
    ok(env, "task", "enqueue", clone_id)
    assert "stopped" in ok(env, "task", "abort", clone_id)
    stopped = open_store().get_task(clone_id)
    assert stopped.status_message == "stopped by hpo task abort"
    assert end_of(stopped, has_result=False) is End.user  # never ran: the user stopped it


def test_an_unreachable_broker_leaves_the_task_created_and_says_so(hpo_env, template_id):
    clone_id = ok(hpo_env, "task", "clone", template_id).strip()
    result = hpo(hpo_env, "task", "enqueue", clone_id, "--broker", "redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert "cannot reach the broker" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert open_store().get_task(clone_id).status.value == "created"


def test_a_task_id_that_is_wrong_says_what_is_wrong_and_where_ids_are(hpo_env, monkeypatch):
    # Given three tasks, two of whose ids share a prefix
    from hpo.store import tasks as store_tasks

    ids = iter(["abcd" + "0" * 28, "abcd" + "1" * 28, "ef01" + "2" * 28])
    monkeypatch.setattr(store_tasks, "new_task_id", lambda: next(ids))
    store = open_store(create=True)
    for name in ("one", "two", "three"):
        store.create_task("p", name)
    cases = {
        ("task", "show", "ab"): "task id 'ab' is too short: an id prefix needs at least 4 "
                                "characters; `hpo task list` shows the ids",
        ("task", "abort", "abcd"): f"task id prefix 'abcd' is ambiguous: it starts "
                                   f"abcd{'0' * 28} (one), abcd{'1' * 28} (two); give more",
        ("task", "show", "ffff"): "no task with id 'ffff': `hpo task list` shows the ids",
        ("task", "logs", "nope"): "'nope' is not a task id: an id is 32 hex digits",
    }
    for argv, said in cases.items():
        result = hpo(hpo_env, *argv)
        assert result.returncode == 2, argv
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert said in result.stderr, (argv, result.stderr)
    # And a unique prefix still names its task
    assert "three" in ok(hpo_env, "task", "show", "ef01")


def test_task_list_piped_fits_100_columns_and_wide_shows_whole_ids(hpo_env, template_id):
    lines = ok(hpo_env, "task", "list").splitlines()
    assert all(len(line) <= 100 for line in lines), lines
    assert any(template_id[:8] in line for line in lines)
    wide = ok(hpo_env, "task", "list", "--wide")
    assert template_id in wide and "tags" in wide
    assert ok(hpo_env, "--wide", "task", "list") == wide  # before the command too


def test_a_reader_that_stops_early_is_no_error(hpo_env):
    # Given a task whose `show` prints table after table, into `head -1`
    store = open_store(create=True)
    task = store.create_task("p", "many", parameters={f"General/p{n}": n for n in range(300)})
    result = subprocess.run(f"{sys.executable} -m hpo.cli.main task show {task.id} | head -1",
                            shell=True, env=hpo_env, capture_output=True, text=True,
                            timeout=60, check=False)
    # Then the first line came, and no traceback for the tables no one reads
    assert result.stdout == f"task {task.id}\n"
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr
