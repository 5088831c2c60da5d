"""`hpo-controller` and hpo.yaml: the command line as a user types it, in real
subprocesses with real agents, on the embedded store and broker."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo.errors import ConfigError
from hpo.lifecycle import FINAL_STATUSES, Status, TaskType
from hpo.store import Store, open_store
from tests.agents import wait_for
from tests.conftest import DIGITS_JOBS

ROOT = Path(__file__).resolve().parent.parent
DIGITS = ROOT / "examples" / "digits"
TASK_ID = re.compile(r"^[0-9a-f]{32}$")

# A job that reports a slowly falling loss for as long as the file "hold" beside it
# exists (at most a minute), then ends at once: "long" jobs the test can release.
SLOW_SCRIPT = """\
import time
from pathlib import Path
from hpo import Task

task = Task.init(project_name="slow", task_name="slow")
config = task.connect({"x": 0.5, "steps": 600})
hold = Path(__file__).with_name("hold")
logger = task.get_logger()
for step in range(config["steps"]):
    logger.report_scalar("loss", "train", config["x"] / (step + 1), step)
    if not hold.exists():
        break
    time.sleep(0.1)
"""


def ctl(env: dict[str, str], *argv: str, timeout: float = 60
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpo.controller.cli", *argv], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def ok(env: dict[str, str], *argv: str, timeout: float = 60) -> str:
    result = ctl(env, *argv, timeout=timeout)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def make_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(HPO_HOME=str(home), HPO_STORE_URL=f"sqlite:///{home / 'hpo.db'}",
               HPO_BROKER_URL=f"sqla+sqlite:///{home / 'broker.db'}", PYTHONUNBUFFERED="1")
    return env


def digits_config(folder: Path, **changes: Any) -> Path:
    """A copy of examples/digits/hpo.yaml in ``folder`` (the script path made absolute),
    with ``changes`` applied; a change to None removes the field."""
    data = yaml.safe_load((DIGITS / "hpo.yaml").read_text())
    data["base_task"]["script"] = str(DIGITS / "train.py")
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hpo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def optimizer_tasks(store: Store) -> list[Any]:
    return store.find_tasks(type=TaskType.optimizer)


# ----- bad input: one line, exit 2, nothing created ---------------------------------------

RANGE = {"type": "uniform", "name": "alpha", "min_value": 0.1, "max_value": 0.5}

BAD = {
    "unknown field": ({"max_jobs": 3}, ["unknown field 'max_jobs'", "total_max_jobs",
                                        "hyper_parameters"]),
    "missing objective": ({"objective": None}, ["objective: missing", "title"]),
    "min > max": ({"hyper_parameters": [{**RANGE, "min_value": 5.0, "max_value": 1.0}]},
                  ["hyper_parameters[0] (alpha)", "greater than max_value", "swap"]),
    "step <= 0": ({"hyper_parameters": [{**RANGE, "step_size": 0}]},
                  ["hyper_parameters[0] (alpha)", "step_size must be > 0"]),
    "unknown parameter type": ({"hyper_parameters": [{**RANGE, "type": "gaussian"}]},
                               ["unknown type 'gaussian'", "log_uniform"]),
    "unknown strategy": ({"strategy": "simulated_annealing"},
                         ["strategy:", "unknown strategy 'simulated_annealing'", "grid"]),
    "unimportable strategy": ({"strategy": "no_such_module.Strategy"},
                              ["strategy:", "cannot import strategy"]),
    "bad strategy argument": ({"strategy_kwargs": {"temperature": 3}},
                              ["strategy_kwargs", "'temperature'", "seed"]),
    "unknown base task id": ({"base_task": "feedfacefeedface"},
                             ["base_task", "unknown base task 'feedfacefeedface'"]),
    "unknown base task name": ({"base_task": {"project": "nope", "name": "nothing"}},
                               ["base_task", "no task named 'nothing'"]),
    "missing script": ({"base_task": {"script": "missing.py", "project": "p", "name": "n"}},
                       ["base_task: script not found", "missing.py"]),
    "bad sign": ({"objective": {"title": "validation", "series": "accuracy",
                                "sign": "up"}}, ["sign 'up'", "max_global"]),
    "min > max iterations": ({"min_iteration_per_job": 9, "max_iteration_per_job": 3},
                             ["min_iteration_per_job 9 is larger than"]),
    "bad number": ({"total_max_jobs": "many"}, ["total_max_jobs must be a positive integer"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_config_is_one_line_exit_2_and_launches_nothing(hpo_env, tmp_path, case):
    changes, expected = BAD[case]
    config = digits_config(tmp_path / "cfg", **changes)
    result = ctl(hpo_env, "start", str(config), "--local-agents", "1")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith("hpo-controller: error: hpo.yaml: "), line
    for text in expected:
        assert text in line, (text, line)
    store = open_store()
    assert optimizer_tasks(store) == []
    assert store.find_tasks() == []  # not even the template: checked before anything


def test_a_missing_or_malformed_file_is_one_line_exit_2(hpo_env, tmp_path):
    result = ctl(hpo_env, "start", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "config file not found" in result.stderr
    bad = tmp_path / "hpo.yaml"
    bad.write_text("objective: {title: a\nbase_task: [\n")
    result = ctl(hpo_env, "start", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not valid YAML at line" in result.stderr
    bad.write_text("- just\n- a list\n")
    result = ctl(hpo_env, "start", "--store", hpo_env["HPO_STORE_URL"], str(bad))
    assert result.returncode == 2 and "top level must be a mapping" in result.stderr
    # The default is ./hpo.yaml
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "hpo.controller.cli", "start"],
                            env=hpo_env, cwd=tmp_path / "empty", capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "config file not found: hpo.yaml" in result.stderr
    assert optimizer_tasks(open_store()) == []


def test_status_stop_and_resume_of_nothing_are_one_line_errors(hpo_env):
    for argv in (["status"], ["status", "abcdef12"], ["stop", "abcdef12"],
                 ["resume", "abcdef12"]):
        result = ctl(hpo_env, *argv)
        assert result.returncode == 2, argv
        assert result.stderr.count("\n") == 1 and result.stderr.startswith(
            "hpo-controller: error: "), result.stderr
    said = ctl(hpo_env, "status").stderr
    assert "hpo-controller start" in said
    open_store().close()  # an empty store: it says which one it opened
    said = ctl(hpo_env, "status").stderr
    assert f"no optimization in the store at {hpo_env['HPO_STORE_URL']} yet" in said


def test_a_command_that_reads_never_creates_a_store(hpo_env, tmp_path):
    typo = tmp_path / "stroe" / "hpo.db"
    for argv in (["hpo.cli.main", "--store", f"sqlite:///{typo}", "task", "list"],
                 ["hpo.controller.cli", "status", "--store", f"sqlite:///{typo}"],
                 ["hpo.cli.main", "--store", f"sqlite:///{typo}", "workers"]):
        result = subprocess.run([sys.executable, "-m", *argv], env=hpo_env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert f"no store at {typo}" in line and "check the path" in line, line
    assert not typo.parent.exists()


def test_the_command_modules_load_no_heavy_module_until_a_command_runs():
    """The controller's modules load SQLAlchemy, Celery and rich only inside a command,
    under ``loading_modules``: were one of them imported at the top of hpo.cli.common or
    of the CLI, it would load with the collector on, before the pause."""
    heavy = ("sqlalchemy", "celery", "kombu", "rich", "yaml")
    assert _loaded_after("import hpo.cli.common, hpo.controller.cli", heavy) == []
    # Nor does the progress of a run load rich, but for the live panel in a terminal.
    assert _loaded_after("import hpo.controller.display, hpo.controller.session; "
                         "hpo.controller.display.make_display('x', json=True, plain=False)",
                         ("rich",)) == []


def test_a_process_on_redis_loads_no_module_of_the_embedded_broker():
    """The embedded broker's transport is named for kombu, not imported: its module would
    cost a controller or an agent on Redis its imports at its start, for nothing."""
    assert _loaded_after("import hpo.queue.dispatch, hpo.store, kombu; "
                         "from hpo.queue.app import make_app; "
                         "kombu.Connection(make_app('redis://127.0.0.1:9/0').conf.broker_url)"
                         ".transport", ("hpo.queue.embedded",)) == []


def test_the_embedded_broker_works_without_sqlalchemys_orm():
    """The embedded URL finds its transport by its alias, and a publish and a take on it
    load neither kombu's SQLAlchemy transport nor SQLAlchemy's ORM (about 50 ms of
    imports at every controller's and agent's start) nor the MySQL dialect its models
    named."""
    unwanted = ("kombu.transport.sqlalchemy", "sqlalchemy.orm", "sqlalchemy.dialects.mysql")
    assert _loaded_after(
        "from hpo.queue.app import make_app, publish; "
        "app = make_app('sqla+sqlite:///' + __import__('tempfile').mkdtemp() + '/b.db'); "
        "publish(app, 'a' * 32, 'q'); "
        "c = app.connection_for_read(); "
        "assert c.channel().basic_get('q', no_ack=True).payload[0] == ['a' * 32]",
        ("hpo.queue.embedded", *unwanted)) == ["hpo.queue.embedded"]


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}; import sys; print(sorted(m for m in {modules!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True)
    return json.loads(result.stdout.replace("'", '"'))


def test_modules_load_with_the_collector_paused_and_what_they_made_frozen():
    import gc

    from hpo.cli.common import loading_modules

    assert gc.isenabled()
    frozen = gc.get_freeze_count()
    try:
        with loading_modules():
            assert not gc.isenabled()
            made = [[] for _ in range(100)]  # the objects an import would make
            with loading_modules():  # nested: the outer one ends the pause
                assert not gc.isenabled()
            assert not gc.isenabled() and gc.get_freeze_count() == frozen
        assert gc.isenabled()
        assert gc.get_freeze_count() >= frozen + len(made)
        # A collector someone else paused stays paused, and nothing is frozen.
        gc.disable()
        before = gc.get_freeze_count()
        with loading_modules():
            pass
        assert not gc.isenabled() and gc.get_freeze_count() == before
        gc.enable()
    finally:
        gc.enable()
        gc.unfreeze()  # this test process's objects collectable again


def test_help_describes_every_command(hpo_env):
    out = ok(hpo_env, "--help")
    for command in ("start", "status", "stop", "list", "resume", "base_task:"):
        assert command in out
    assert "--local-agents" in ok(hpo_env, "start", "--help")


# ----- hpo.yaml read in process (a real store, nothing launched) --------------------------


def test_a_script_base_task_is_registered_once_and_reused(hpo_env, tmp_path):
    from hpo.controller.yaml_config import load_optimizer_arguments

    store = open_store()
    config = digits_config(tmp_path / "a")
    first = load_optimizer_arguments(config, store)
    second = load_optimizer_arguments(config, store)
    assert first["base_task_id"] == second["base_task_id"]
    [template] = store.find_tasks(project="examples", name="digits")
    assert template.script is not None
    assert template.script.entry_point == str(DIGITS / "train.py")
    assert template.status is Status.created
    # New args update the same template instead of adding one
    data = yaml.safe_load(config.read_text())
    data["base_task"]["args"] = "--verbose --level 3"
    config.write_text(yaml.safe_dump(data))
    third = load_optimizer_arguments(config, store)
    assert third["base_task_id"] == first["base_task_id"]
    assert store.get_task(first["base_task_id"]).script.argv == ["--verbose", "--level", "3"]
    # The other forms name the same task
    for form in (first["base_task_id"], first["base_task_id"][:8],
                 {"id": first["base_task_id"]}, {"project": "examples", "name": "digits"}):
        config = digits_config(tmp_path / "b", base_task=form)
        assert load_optimizer_arguments(config, store)["base_task_id"] == first["base_task_id"]
    assert len(store.find_tasks()) == 1


def test_yaml_fields_become_the_optimizer_arguments(hpo_env, tmp_path):
    from hpo.controller.yaml_config import load_optimizer_arguments
    from hpo.space.ranges import LogUniformParameterRange

    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "train.py").write_text("print('hi')\n")
    config = tmp_path / "cfg" / "hpo.yaml"
    config.write_text(yaml.safe_dump({
        "base_task": {"script": "train.py", "project": "p", "name": "n", "args": ["-x", 1]},
        "hyper_parameters": [{"type": "LogUniformParameterRange", "name": "Args/lr",
                              "min_value": -3, "max_value": -1}],
        "objective": [{"title": "loss", "series": "val", "sign": "min_global"},
                      {"title": "acc", "series": "val", "sign": "max"}],
        "strategy": "hpo.strategies.random_search.RandomSearch",
        "strategy_kwargs": {"seed": 7},
        "execution_queue": "gpu", "total_max_jobs": 3, "time_limit_per_job": 0.5,
        "spawn_project": "sweeps",
    }))
    store = open_store()
    args = load_optimizer_arguments(config, store)
    assert args["hyper_parameters"] == [LogUniformParameterRange("Args/lr", -3, -1)]
    assert args["objective_metric_title"] == ["loss", "acc"]
    assert args["objective_metric_sign"] == ["min_global", "max"]
    assert args["optimizer_class"] == "hpo.strategies.random_search.RandomSearch"
    assert (args["seed"], args["execution_queue"], args["total_max_jobs"]) == (7, "gpu", 3)
    assert args["spawn_project"] == "sweeps" and args["store"] is store
    script = store.get_task(args["base_task_id"]).script
    assert script is not None and script.argv == ["-x", "1"]
    assert script.entry_point == str((tmp_path / "cfg" / "train.py").resolve())
    assert script.working_dir == str((tmp_path / "cfg").resolve())
    with pytest.raises(ConfigError, match="optimizer argument"):
        load_optimizer_arguments(digits_config(tmp_path / "x", strategy_kwargs={
            "store": "sqlite://"}), store)


# ----- a whole optimization of the example ------------------------------------------------


@pytest.fixture(scope="module")
def digits_run(digits_optimization: dict[str, Any]) -> dict[str, Any]:
    """`hpo-controller start hpo.yaml --local-agents 2` of the digits example, DIGITS_JOBS
    jobs (conftest's, run once per session), and its store."""
    env = digits_optimization["env"]
    return {"env": env, "result": digits_optimization["result"],
            "store": open_store(env["HPO_STORE_URL"])}


@pytest.mark.timeout(300)
def test_start_runs_the_example_end_to_end_with_progress_and_summary(digits_run):
    result = digits_run["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    optimizer_id = lines[0]
    assert TASK_ID.match(optimizer_id), lines[0]
    # Plain, line-oriented progress: a line per finished job and progress lines
    job_lines = [line for line in lines if re.search(r"\] job [0-9a-f]{32} completed: "
                                                     r"validation/accuracy 0\.\d+", line)]
    n = DIGITS_JOBS
    assert len(job_lines) == n, result.stdout
    assert any(f"jobs {n}/{n} launched, 0 running, 0 queued; ended: {n} completed |" in line
               for line in lines), result.stdout
    assert all("\x1b[" not in line for line in lines)  # no terminal control codes
    # The summary table of the best jobs, then the end
    assert f"best {n} job(s)" in result.stdout
    header = next(line for line in lines if "validation/acc" in line and "alpha" in line
                  and "] job " not in line)
    # Piped, it fits 100 columns: the least useful columns left out, and said so
    for column in ("eta0", "learning_rate", "penalty", "epochs", "batch_size"):
        assert column in header
    assert ("not shown (too narrow; --wide shows all): iteration, status, duration, agent"
            in lines)
    assert all(len(line) <= 100 for line in lines if line.startswith(" "))  # table rows
    assert lines[-1].startswith(f"optimization {optimizer_id} completed: ")
    # Right after the id, it said which store and broker it ran on
    assert re.fullmatch(rf"\[0:00:0\d\] store {re.escape(digits_run['env']['HPO_STORE_URL'])}"
                        r", broker sqla\+sqlite:///\S+/broker\.db", lines[1]), lines[1]
    # The store: exactly n finished children with typed parameters
    store = digits_run["store"]
    assert store.get_task(optimizer_id).status is Status.completed
    children = store.find_tasks(parent=optimizer_id)
    assert len(children) == n
    for child in children:
        assert child.status is Status.completed, child.status_message
        p = child.parameters
        assert type(p["General/alpha"]) is float and 1e-6 <= p["General/alpha"] <= 0.1
        assert type(p["General/eta0"]) is float and 1e-4 <= p["General/eta0"] <= 0.1
        assert p["General/learning_rate"] in ("optimal", "constant", "invscaling", "adaptive")
        assert p["General/penalty"] in ("l2", "l1", "elasticnet")
        assert type(p["General/epochs"]) is int and p["General/epochs"] in (5, 10, 15)
        assert type(p["General/batch_size"]) is int and p["General/batch_size"] in (64, 128,
                                                                                      256)
        scalars = store.task_scalars(child.id, title="validation", series="accuracy")
        assert [s.iteration for s in scalars] == list(range(p["General/epochs"]))
    # Only one template, however many runs
    assert len(store.find_tasks(project="examples", name="digits")) == 1


@pytest.mark.timeout(300)
def test_status_shows_progress_and_the_best_jobs(digits_run):
    env, store = digits_run["env"], digits_run["store"]
    optimizer_id = digits_run["result"].stdout.splitlines()[0]
    out = ok(env, "status")  # the newest optimization
    assert optimizer_id in out and "completed" in out
    n = DIGITS_JOBS
    assert f"{n}/{n} launched, 0 running, 0 queued" in out
    assert f"{n} completed" in out and "by status" not in out
    assert "learning_rate" in out and "validation/accuracy" in out
    assert ok(env, "status", optimizer_id[:8]) == ok(env, "status", optimizer_id)
    data = json.loads(ok(env, "status", optimizer_id, "--json", "--top", "2"))
    assert data["id"] == optimizer_id and data["status"] == "completed"
    assert (data["launched"], data["done"], data["failed"]) == (n, n, 0)
    assert data["counts"]["completed"] == n
    assert data["budget"]["jobs_launched"] == n and data["budget"]["total_max_jobs"] == n
    assert data["budget"]["compute_min"] > 0 and data["budget"]["wall_min"] > 0
    assert len(data["top"]) == 2
    best = data["top"][0]
    assert best["task_id"] == data["best_task"] and best["objective"] == data["best_value"]
    assert data["top"][0]["objective"] >= data["top"][1]["objective"]  # sign max
    child = store.get_task(best["task_id"])
    assert best["iteration"] == child.parameters["General/epochs"] - 1
    last = store.task_scalars(child.id, title="validation", series="accuracy")[-1]
    assert best["objective"] == pytest.approx(last.value)
    assert set(best["parameters"]) == {f"General/{n}" for n in (
        "alpha", "eta0", "learning_rate", "penalty", "epochs", "batch_size")}
    assert best["parameters"] == {k: child.parameters[k] for k in best["parameters"]}
    assert best["worker"] == child.worker and best["duration_s"] > 0
    every = json.loads(ok(env, "status", "--all", "--json"))
    assert len(every["jobs"]) == n


@pytest.mark.timeout(300)
def test_list_shows_optimizations_newest_first(digits_run):
    env = digits_run["env"]
    optimizer_id = digits_run["result"].stdout.splitlines()[0]
    out = ok(env, "list")  # piped: fits 100 columns, ids cut to a prefix
    n = DIGITS_JOBS
    assert optimizer_id[:8] in out and f"{n}/{n}" in out and "validation/acc" in out
    assert all(len(line) <= 100 for line in out.splitlines())
    wide = ok(env, "list", "--wide")
    assert optimizer_id in wide and "validation/accuracy max" in wide
    [listed] = json.loads(ok(env, "list", "--json"))
    assert listed["id"] == optimizer_id and listed["status"] == "completed"
    assert listed["launched"] == n and listed["best_value"] > 0.5


@pytest.mark.timeout(300)
def test_start_json_prints_json_lines(hpo_env, tmp_path):
    config = digits_config(tmp_path / "cfg", total_max_jobs=2,
                           hyper_parameters=[{"type": "discrete", "name": "epochs",
                                              "values": [2, 3]}])
    result = ctl(hpo_env, "start", str(config), "--local-agents", "2", "--json", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "started" and TASK_ID.match(events[0]["id"])
    jobs = [e for e in events if e["event"] == "job"]
    assert sorted(j["parameters"]["General/epochs"] for j in jobs) == [2, 3]
    assert all(j["status"] == "completed" and j["objective"] > 0 for j in jobs)
    assert any(e["event"] == "progress" for e in events)
    end = events[-1]
    assert end["event"] == "finished" and end["summary"]["id"] == events[0]["id"]
    assert end["summary"]["status"] == "completed" and len(end["summary"]["top"]) == 2


# ----- stopping -----------------------------------------------------------------------------


def slow_config(folder: Path, total: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "slow.py").write_text(SLOW_SCRIPT)
    (folder / "hold").write_text("")
    config = folder / "hpo.yaml"
    config.write_text(yaml.safe_dump({
        "base_task": {"script": "slow.py", "project": "slow", "name": "slow"},
        "hyper_parameters": [{"type": "uniform", "name": "x", "min_value": 0.0,
                              "max_value": 1.0}],
        "objective": {"title": "loss", "series": "train", "sign": "min"},
        "strategy_kwargs": {"seed": 3},
        "max_number_of_concurrent_tasks": 2, "total_max_jobs": total,
    }))
    return config


def start_in_background(env: dict[str, str], config: Path, log: Path
                        ) -> tuple[subprocess.Popen[bytes], str]:
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hpo.controller.cli", "start",
                                 str(config), "--local-agents", "2"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)

    def first_line() -> str | None:
        text = log.read_text()
        assert proc.poll() is None or text, "hpo-controller exited silently"
        return text.splitlines()[0] if "\n" in text else None

    optimizer_id = wait_for("the optimizer id", first_line, timeout=60)
    assert TASK_ID.match(optimizer_id), log.read_text()
    return proc, optimizer_id


def wait_running_jobs(store: Store, optimizer_id: str, count: int) -> None:
    wait_for(f"{count} running jobs", lambda: len(store.find_tasks(
        parent=optimizer_id, status=[Status.running])) >= count, timeout=90)


def assert_stopped_cleanly(store: Store, optimizer_id: str, total: int) -> None:
    wait_for("the optimizer task to be stopped",
             lambda: store.get_task(optimizer_id).status is Status.stopped, timeout=90)
    children = store.find_tasks(parent=optimizer_id)
    assert 2 <= len(children) < total
    assert all(c.status in FINAL_STATUSES for c in children), [c.status for c in children]
    assert any(c.status is Status.stopped for c in children)


@pytest.mark.timeout(300)
def test_stop_ends_a_running_optimization_and_resume_finishes_it(hpo_env, tmp_path):
    store = open_store()
    config = slow_config(tmp_path / "cfg", total=6)
    proc, optimizer_id = start_in_background(hpo_env, config, tmp_path / "start.log")
    try:
        wait_running_jobs(store, optimizer_id, 2)
        # From another process, while it runs
        assert "running" in ok(hpo_env, "status", optimizer_id)
        out = ok(hpo_env, "stop", optimizer_id[:10])
        assert out.startswith(f"{optimizer_id} stop requested")
        assert_stopped_cleanly(store, optimizer_id, total=6)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "start.log").read_text()
    assert f"optimization {optimizer_id} stopped: stopped by request" in log, log
    assert "stopped" in ok(hpo_env, "stop", optimizer_id)  # already stopped: fine
    # resume finishes the same budget, quickly now that the jobs are released
    (tmp_path / "cfg" / "hold").unlink()
    launched = {c.id for c in store.find_tasks(parent=optimizer_id)}
    out = ok(hpo_env, "resume", optimizer_id, "--local-agents", "2", timeout=200)
    assert out.splitlines()[0] == optimizer_id
    assert f"optimization {optimizer_id} completed" in out.splitlines()[-1]
    children = store.find_tasks(parent=optimizer_id)
    assert len(children) == 6 and launched < {c.id for c in children}
    assert all(c.status in FINAL_STATUSES for c in children)
    assert store.get_task(optimizer_id).status is Status.completed


@pytest.mark.timeout(300)
def test_ctrl_c_stops_the_optimization_cleanly(hpo_env, tmp_path):
    store = open_store()
    config = slow_config(tmp_path / "cfg", total=6)
    proc, optimizer_id = start_in_background(hpo_env, config, tmp_path / "start.log")
    try:
        wait_running_jobs(store, optimizer_id, 2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_stopped_cleanly(store, optimizer_id, total=6)
    log = (tmp_path / "start.log").read_text()
    assert "stopping: every job is stopped" in log and "Traceback" not in log, log
    # The local agents went with it
    for worker in store.list_workers():
        wait_for(f"agent {worker.name} (pid {worker.pid}) to exit",
                 lambda w=worker: not _alive(w.pid), timeout=30)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by a parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_the_live_display_reads_the_store_at_most_a_fifth_of_the_time(monkeypatch):
    from types import SimpleNamespace

    from hpo.controller import session

    launched = itertools.count()  # every look finds the optimization moved

    def progress() -> Any:
        return SimpleNamespace(launched=next(launched), running=0, queued=0, finished=0)

    clock = [100.0]
    monkeypatch.setattr(session.time, "monotonic", lambda: clock[0])
    changes = session.Changes(progress)
    assert changes.seen()

    def slow_read() -> str:  # a read of the store that takes 1 s
        clock[0] += 1.0
        return "summary"

    assert changes.timed(slow_read) == "summary"
    clock[0] += 0.5
    assert not changes.seen()  # moved, but 4 x 1 s have not passed since the read
    clock[0] += 3.0
    assert changes.seen()  # 4.5 s after the read started
    changes.timed(lambda: None)  # a quick read: looks are frequent again
    clock[0] += 0.5
    assert changes.seen()


@pytest.mark.timeout(180)
def test_a_script_that_crashes_at_start_ends_the_run_with_exit_1_not_the_budget(
        hpo_env, tmp_path):
    # Given a training script that fails at once, and a budget of 20 jobs
    folder = tmp_path / "crash"
    folder.mkdir()
    (folder / "train.py").write_text("raise SystemExit('cannot find the data folder')\n")
    config = folder / "hpo.yaml"
    config.write_text(yaml.safe_dump({
        "base_task": {"script": "train.py", "project": "crash", "name": "crash"},
        "hyper_parameters": [RANGE],
        "objective": {"title": "validation", "series": "accuracy", "sign": "max"},
        "total_max_jobs": 20, "max_number_of_concurrent_tasks": 2}))
    # When it is started
    result = ctl(hpo_env, "start", str(config), "--local-agents", "2", timeout=150)
    # Then it stops after the first 3 failures, exit 1, saying why and how to see more
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "the first 3 jobs to finish all ended without a result" in output, output
    assert "cannot find the data folder" in output and "hpo task logs ID" in output, output
    store = open_store()
    [optimizer] = optimizer_tasks(store)
    assert optimizer.status is Status.failed
    assert len(store.find_tasks(parent=optimizer.id)) < 20


@pytest.mark.timeout(120)
def test_jobs_no_agent_serves_are_said_so_within_seconds(hpo_env, tmp_path):
    # Given an optimization whose queue no agent serves, with a 15 s time limit (the
    # notice comes NO_AGENT_NOTICE_S, 3 s, after the jobs are queued: a slow CI machine
    # must not reach the limit first)
    config = digits_config(tmp_path / "cfg", execution_queue="nobody-serves-this",
                           optimization_time_limit=0.25, total_max_jobs=2)
    # When it is started without local agents
    result = ctl(hpo_env, "start", str(config), timeout=90)
    # Then it says, long before its time limit, which command would serve the queue
    output = result.stdout + result.stderr
    assert ("no live agent serves queue 'nobody-serves-this': the queued jobs wait until "
            "one does; start one with `hpo-agent --queue nobody-serves-this`") in output, output


@pytest.mark.timeout(60)
@pytest.mark.parametrize("broker", ["redis://:secret@127.0.0.1:1/0",
                                    "amqp://guest:secret@127.0.0.1:1//"])
def test_a_broker_that_does_not_answer_is_one_line_and_nothing_is_created(
        hpo_env, tmp_path, broker):
    config = digits_config(tmp_path / "cfg")
    result = ctl({**hpo_env, "HPO_BROKER_URL": broker}, "start", str(config),
                 "--local-agents", "1", timeout=45)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("hpo-controller: error: cannot reach the broker at ")
    assert "HPO_BROKER_URL" in line and "secret" not in line
    assert open_store().find_tasks() == []  # not even the yaml's base task


@pytest.mark.timeout(180)
def test_a_tuned_name_the_script_never_reads_stops_the_search_at_the_first_job(
        hpo_env, tmp_path):
    # Given the digits example (registered from its script: no parameters known before
    # it runs) with a typo in a tuned name
    config = digits_config(tmp_path / "cfg", total_max_jobs=8, hyper_parameters=[
        {"type": "log_uniform", "name": "alpah", "min_value": -6, "max_value": -1}])
    # When it is started
    result = ctl(hpo_env, "start", str(config), "--local-agents", "2", timeout=150)
    # Then the first job tells: exit 1, the name, the closest one the script reads
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "never read the tuned parameter General/alpah: did you mean General/alpha?" \
        in output, output
    store = open_store()
    [optimizer] = optimizer_tasks(store)
    assert len(store.find_tasks(parent=optimizer.id)) < 8


def test_an_optimization_id_that_is_wrong_says_what_is_wrong_and_where_ids_are(
        hpo_env, monkeypatch):
    # Given two optimizations whose ids share a prefix, and a task that is no optimization
    from hpo.store import tasks as store_tasks

    ids = iter(["abcd" + "0" * 28, "abcd" + "1" * 28, "abce" + "2" * 28])
    monkeypatch.setattr(store_tasks, "new_task_id", lambda: next(ids))
    store = open_store(create=True)
    for name in ("first", "second"):
        store.create_task("p", name, type=TaskType.optimizer)
    store.create_task("p", "a job")
    cases = {
        # too short: the rule, not "no such id"
        ("stop", "ab"): "an id prefix needs at least 4 characters",
        # ambiguous: the candidates, with their names
        ("status", "abcd"): f"abcd{'0' * 28} (first), abcd{'1' * 28} (second)",
        # a task that is no optimization (a job), and an unknown id: where the ids are
        ("stop", "abce"): "'abce' is a training task, not an optimization: "
                          "`hpo-controller list` shows",
        ("report", "ffff"): "no optimization with id 'ffff': `hpo-controller list` shows",
        # not an id at all
        ("resume", "xyz!"): "is not an optimization id",
    }
    for argv, said in cases.items():
        result = ctl(hpo_env, *argv)
        # Then each is one line, exit code 2, that says what is wrong
        assert result.returncode == 2, argv
        assert result.stderr.count("\n") == 1, result.stderr
        assert said in result.stderr, (argv, result.stderr)
        assert "hpo task list" not in result.stderr and "hpo-controller list" in result.stderr
