"""ClearML's SDK surface in hpo (issue 13, parts 1 and 2): scripts written like ClearML's
own examples (tests/scripts/clearml_like/) run by hand and under a real agent, and what
the store recorded is checked; plus the pieces one by one (TaskParameters, get_tasks'
filters, the output capture's bound, the connected-dict watcher)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hpo.lifecycle import Status
from hpo.queue import dispatch
from hpo.queue.app import make_app
from hpo.store import Store, open_store
from tests.agents import env_for, running_agent, wait_final

EXAMPLES = Path(__file__).parent / "scripts" / "clearml_like"


def run_example(env: dict[str, str], name: str, *argv: str, cwd: Path | None = None
                ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *argv], env=env,
                            capture_output=True, text=True, timeout=120, cwd=cwd, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    return result, (json.loads(lines[-1].removeprefix("RESULT ")) if lines else None)


def result_in_log(store: Store, task_id: str) -> dict[str, Any]:
    """What a script run by an agent printed as its RESULT line (the agent keeps stdout)."""
    lines = [line.text for line in store.read_logs(task_id) if line.text.startswith("RESULT ")]
    assert lines, [line.text for line in store.read_logs(task_id)]
    return dict(json.loads(lines[-1].removeprefix("RESULT ")))


def hpo_cli(env: dict[str, str], *argv: str) -> str:
    result = subprocess.run([sys.executable, "-m", "hpo.cli.main", *argv], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


# ----- run by hand -----------------------------------------------------------------------

def test_every_plot_call_of_a_clearml_style_script_is_stored_and_shown(hpo_env, tmp_path):
    # When a script making every Logger plot call runs by hand
    result, seen = run_example(hpo_env, "plots_reporting.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert seen is not None
    # Then each report is in the store, by kind
    store = open_store()
    task_id = seen["task_id"]
    assert store.report_counts(task_id) == {
        "confusion_matrix": 2, "histogram": 3, "image": 1, "media": 1, "plotly": 1,
        "scatter2d": 3, "table": 2}
    tables = {r.series: r.payload for r in store.task_reports(task_id, kind="table")}
    assert tables["list of rows"] == {"columns": ["last name", "first name", "age"],
                                      "rows": [["Doe", "Jane", 31], ["Roe", "Rick", 44]]}
    animals = tables["pandas with index"]
    assert animals["columns"] == ["animal", "legs", "wings", "seen"]
    assert animals["rows"][2] == ["spider", 8, 0, "NaN"]  # ClearML's text for NaN
    (heat, top) = store.task_reports(task_id, kind="confusion_matrix")
    assert heat.payload["data"][0]["type"] == "heatmap"
    assert top.payload["layout"]["yaxis"]["autorange"] == "reversed"
    modes = [r.payload["data"][0]["mode"] for r in store.task_reports(task_id, kind="scatter2d")]
    assert modes == ["lines", "markers", "lines+markers"]
    # and the image is a PNG file under the artifact root
    from hpo.sdk import files

    (image,) = store.task_reports(task_id, kind="image")
    assert image.file is not None
    assert files.resolve(image.file).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # and the single value, the scalars and the output (stdout, stderr, a log-only line)
    assert {(m.title, m.series) for m in store.scalar_summary([task_id])} == {
        ("Summary", "accuracy"), ("loss", "train")}
    logs = [(line.stream, line.text) for line in store.read_logs(task_id)]
    assert ("report", "a line for the log only") in logs
    assert ("stdout", "a line printed and logged") in logs
    assert ("stderr", "a warning on stderr") in logs
    assert "a line for the log only" not in result.stdout  # print_console=False
    # and `hpo task show` sums them up
    shown = hpo_cli(hpo_env, "task", "show", task_id)
    for section in ("single values", "reports", "tables", "images and media"):
        assert section in shown
    assert "2 x 3" in shown and "4 x 4" in shown


def test_artifacts_of_every_kind_come_back_as_they_went_in(hpo_env, tmp_path):
    result, seen = run_example(hpo_env, "artifacts_example.py", str(tmp_path / "data"),
                               cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert seen is not None
    assert seen["types"] == {"Numpy Eye": "ndarray", "Pandas": "DataFrame",
                             "a string": "str", "an object": "set", "dictionary": "dict",
                             "local file": "PosixPath", "local folder": "PosixPath"}
    assert seen["dictionary"] == {"legs": {"dog": 4, "falcon": 2}, "seen": [10, 2]}
    assert seen["eye_trace"] == 5.0 and seen["object"] == [1, 2, 3]
    # Read from another process, as ClearML's artifacts_retrieval example does
    from hpo import Task

    task = Task.get_task(task_id=seen["task_id"])
    # (the registered DataFrame was uploaded at the end, with the row added after)
    assert list(task.artifacts["train"].get().index) == ["falcon", "dog", "spider"]
    assert task.artifacts["dictionary"].metadata == {"counting": "legs"}
    assert list(task.artifacts["Pandas"].get()["legs"]) == [2, 4]
    folder = Path(task.artifacts["local folder"].get_local_copy())
    assert (folder / "sub" / "weights.bin").read_bytes() == bytes(range(256))
    # and through the command line
    listed = json.loads(hpo_cli(hpo_env, "task", "artifacts", seen["task_id"], "--json"))
    assert {a["name"] for a in listed} == {*seen["types"], "train"}
    out = Path(hpo_cli(hpo_env, "task", "artifact", seen["task_id"], "local file",
                       "--out", str(tmp_path / "copy.txt")).strip())
    assert out.read_text() == "some notes\n"


def test_configuration_properties_and_later_dict_changes_are_recorded(hpo_env, tmp_path):
    result, seen = run_example(hpo_env, "configuration_example.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert seen is not None
    task = open_store().get_task(seen["task_id"])
    params = task.parameters
    # The connected dict's changes after connect, in the loop too
    assert params["General/new_param"] == "this is new"
    assert params["General/float"] == 9.9 and params["General/step_seen"] == 2
    assert params["General/color"] == "Color.RED" and params["General/tuple"] == [1, 2, 3]
    # TaskParameters in the section it was connected to
    assert params["from TaskParameters-like object/iterations"] == 1000
    assert params["from TaskParameters-like object/target_accuracy"] == 0.95
    # configuration objects: a dict, and a file's text
    assert params["Configuration/configuration dictionary"]["learning_rate"] == 0.01
    assert params["Configuration/model file"].startswith("# a model configuration file")
    # user properties, tags, comment
    assert seen["properties"] == {"custom1": "great", "custom2": True, "custom3": 1}
    assert (params["properties/custom1"], params["properties/custom3"]) == ("great", 1)
    assert task.tags == ["example", "configuration"]
    assert task.comment == "configured by the example"
    shown = hpo_cli(hpo_env, "task", "show", task.id)
    assert "configuration objects" in shown and "user properties" in shown
    # And a clone's configuration is edited like a parameter, from the command line
    clone_id = hpo_cli(hpo_env, "task", "clone", task.id, "--param",
                       'Configuration/configuration dictionary={"learning_rate": 0.5}',
                       "--param", "Configuration/model file=layers: 5").strip()
    clone = open_store().get_task(clone_id).parameters
    assert clone["Configuration/configuration dictionary"] == {"learning_rate": 0.5}
    assert clone["Configuration/model file"] == "layers: 5"
    from hpo import Task

    edited = Task.get_task(task_id=clone_id)
    edited.set_configuration_object("model file", config_text="layers: 6\n")
    assert edited.get_configuration_object("model file") == "layers: 6\n"
    assert edited.get_configuration_object_as_dict("configuration dictionary") == {
        "learning_rate": 0.5}


def test_execute_remotely_by_hand_stops_the_run_and_queues_the_task(hpo_env, tmp_path):
    env = {**hpo_env, "EXAMPLE_QUEUE": "remote-q",
           "HPO_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}"}
    result, seen = run_example(env, "remote_execution.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert seen is None  # the training after execute_remotely did not run here
    (task,) = open_store().find_tasks(project="clearml-like", name="remote execution")
    assert (task.status, task.queue) == (Status.queued, "remote-q")
    assert task.parameters == {"General/epochs": 2, "General/lr": 0.1}
    assert open_store().task_scalars(task.id) == []


# ----- under a real agent -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_examples_run_under_an_agent_as_clones_a_user_edited(
        hpo_env, tmp_path, broker_url, queue_name):
    store = open_store()
    # Given the examples run once by hand (ClearML's way to make a template)
    templates = {}
    for name, argv in (("configuration_example.py", ()), ("plots_reporting.py", ()),
                       ("artifacts_example.py", (str(tmp_path / "data"),))):
        result, seen = run_example(hpo_env, name, *argv, cwd=tmp_path)
        assert result.returncode == 0 and seen is not None, result.stderr
        templates[name] = seen["task_id"]
    # and the remote-execution example, which queues itself
    env = env_for(hpo_env, broker_url)
    result, _ = run_example({**env, "EXAMPLE_QUEUE": queue_name}, "remote_execution.py",
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (remote,) = store.find_tasks(project="clearml-like", name="remote execution")
    # When clones are edited like parameters (a configuration object too) and enqueued
    config = store.clone_task(templates["configuration_example.py"], parameters={
        "General/int": "7", "Args/argparser_int_value": 4,
        "Configuration/configuration dictionary": {"nested": {"key": "edited"},
                                                   "learning_rate": 0.5},
        "Configuration/model file": "layers: 5\n"})
    plots = store.clone_task(templates["plots_reporting.py"])
    stored = store.clone_task(templates["artifacts_example.py"])
    app = make_app(broker_url)
    for clone in (config, plots, stored):
        dispatch.enqueue(store, app, clone.id, queue_name)
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--concurrency", "2"):
        done = {t: wait_final(store, t, timeout=120)
                for t in (config.id, plots.id, stored.id, remote.id)}
    for task in done.values():
        assert task.status is Status.completed, (task.name, task.status_message)

    # Then the configuration clone ran with the edits, typed like the script's values
    seen = result_in_log(store, config.id)
    assert seen["int"] == 7 and seen["argparser_int_value"] == 4
    assert seen["learning_rate"] == 0.5 and seen["config_text"] == "layers: 5\n"
    assert store.task_scalars(config.id, title="accuracy")[0].value == 5.0
    params = store.get_task(config.id).parameters
    assert params["General/new_param"] == "this is new"  # later changes, via the agent
    assert params["General/step_seen"] == 2
    assert params["properties/custom2"] is True
    assert store.get_task(config.id).tags == ["example", "configuration"]
    # and the plots clone reported what the hand run did, as attempt 1 (fenced)
    assert store.report_counts(plots.id) == store.report_counts(templates["plots_reporting.py"])
    assert {r.attempt for r in store.task_reports(plots.id)} == {1}
    assert result_in_log(store, plots.id)["heavy"] == []  # the SDK's agent path stays light
    assert ("report", "a line for the log only") in [
        (line.stream, line.text) for line in store.read_logs(plots.id)]
    # and the artifacts clone's uploads are recorded and readable
    from hpo import Task

    assert Task.get_task(task_id=stored.id).artifacts["Numpy Eye"].get().trace() == 5.0
    assert result_in_log(store, stored.id)["types"]["dictionary"] == "dict"
    # and the self-queued task ran its training on the agent
    assert result_in_log(store, remote.id)["ran_training"] is True
    assert result_in_log(store, remote.id)["heavy"] == []
    assert [s.iteration for s in store.task_scalars(remote.id, title="loss")] == [0, 1]


# ----- the pieces ---------------------------------------------------------------------------

def test_task_parameters_validate_and_connect_like_clearmls(hpo_env):
    from hpo import Task
    from hpo.task_parameters import TaskParameters, param, percent_param

    class Params(TaskParameters):
        iterations = param(type=int, range=(0, 10), default=5)
        rate = percent_param(default=0.5)
        name = param(type=str, desc="a name", default="x")

    assert Params().to_dict() == {"iterations": 5, "rate": 0.5, "name": "x"}
    with pytest.raises(ValueError, match=r"iterations must be in range \[0, 10\]"):
        Params(iterations=11)
    with pytest.raises(TypeError, match="rate must be float"):
        Params(rate=1)
    with pytest.raises(ValueError, match="Unknown key"):
        Params().update_from_dict({"nope": 1})
    task = Task.init(project_name="p", task_name="params")
    try:
        Params(iterations=3).connect(task)
        assert task.get_parameters()["General/iterations"] == 3
    finally:
        task.close()


def test_get_tasks_filters_as_clearml(hpo_env):
    from hpo import Task

    store = open_store()
    a = store.create_task("p", "train resnet", tags=["best", "gpu"])
    b = store.create_task("p", "train vgg", tags=["gpu"])
    c = store.create_task("p", "evaluate", tags=["debug"])
    store.create_task("other", "train resnet")
    store.enqueue(b.id, "q")

    def ids(**kwargs: Any) -> set[str]:
        return {t.id for t in Task.get_tasks(project_name="p", **kwargs)}

    assert ids(task_name="train") == {a.id, b.id}
    assert ids(task_name="^train r") == {a.id}
    assert ids(tags=["best", "debug"]) == {a.id, c.id}
    assert ids(tags=["__$all", "best", "gpu"]) == {a.id}
    assert ids(tags=["-debug"]) == {a.id, b.id}
    assert ids(task_filter={"status": ["queued"]}) == {b.id}
    assert [t.id for t in Task.get_tasks(task_ids=[c.id, a.id])] == [c.id, a.id]
    assert Task.get_task(project_name="p", task_name="train vgg").id == b.id
    assert Task.get_task(project_name="p", task_name="train resnet", tags=["best"]).id == a.id
    names = [t.name for t in Task.get_tasks(project_name="p",
                                            task_filter={"order_by": ["name"]})]
    assert names == sorted(names)
    from hpo.errors import ConfigError

    with pytest.raises(ConfigError, match=r"docs/clearml\.md"):
        Task.get_tasks(task_filter={"system_tags": ["x"]})


def test_output_beyond_the_limit_is_counted_not_kept():
    from hpo.sdk.output import OutputCapture

    capture = OutputCapture(max_bytes=20)
    capture.add("stdout", "0123456789\n0123456789\nabc")
    capture.add("stdout", "def\n")
    assert [text for _, _, text in capture.take()] == ["0123456789", "0123456789"]
    assert capture.dropped == 7
    assert "7 more bytes" in capture.dropped_note()[0][2]


def test_the_watcher_writes_a_dicts_changes_once_per_look_not_per_assignment():
    from hpo.sdk.tracking import ConnectedWatch

    writes: list[dict[str, Any]] = []
    watch = ConnectedWatch(writes.append)
    config = {"lr": 0.1, "nested": {"a": 1}}
    watch.watch(lambda: {"lr": config["lr"], "nested/a": config["nested"]["a"]},
                {"lr": 0.1, "nested/a": 1})
    for i in range(10_000):  # a training loop assigning on every step
        config["lr"] = i
        config["nested"]["a"] = i
    watch.stop()
    assert writes[-1] == {"lr": 9999, "nested/a": 9999}
    assert len(writes) <= 2  # the periodic look may have caught the loop once


def test_the_recorder_keeps_good_reports_and_skips_hostile_ones():
    from hpo.agent.recorder import Batch, Recorder

    class Store:
        def __init__(self) -> None:
            self.batches: list[dict[str, Any]] = []

        def append_batch(self, task_id: str, **kwargs: Any) -> int:
            self.batches.append(kwargs)
            return 0

    store = Store()
    recorder = Recorder(store, "t", 1, max_log_bytes=10_000)  # type: ignore[arg-type]
    recorder.close()  # the flusher stopped: the flush below is this test's
    report = {"kind": "table", "title": "t", "series": "s", "iteration": 0,
              "payload": {"columns": [], "rows": []}, "file": None, "time": 1.0}
    recorder.on_message({"kind": "report", "report": report})
    recorder.on_message({"kind": "report", "report": {**report, "file": "../../x"}})
    recorder.on_message({"kind": "report", "report": "not a dict"})
    recorder.on_message({"kind": "artifact", "artifact": {"name": "a"}})
    recorder.on_message({"kind": "task", "fields": {"status": "completed"}})
    recorder.on_message({"kind": "task", "fields": {"add_tags": ["x"]}})
    recorder.on_message({"kind": "task", "fields": {"add_tags": ["y"], "comment": "c"}})
    recorder.on_message({"kind": "log", "text": "quiet\nline"})
    recorder.flush()
    (batch,) = store.batches
    assert [r.title for r in batch["reports"]] == ["t"] and batch["artifacts"] == []
    assert batch["fields"] == {"add_tags": ["x", "y"], "comment": "c"}
    assert [(s, text) for _, s, text in batch["logs"]] == [("report", "quiet"),
                                                          ("report", "line")]
    # and a batch kept by an older agent (no reports in it) still reads
    old = {"seq": 1, "scalars": [], "logs": [], "parameters": {}}
    assert Batch.from_json(old).reports == []


@pytest.mark.timeout(120)
def test_the_web_views_task_page_shows_what_a_clearml_style_script_reported(
        hpo_env, tmp_path):
    from tests.test_ui import http, start_ui, stop_ui

    # Given the plots and the artifacts examples run by hand
    _, plots = run_example(hpo_env, "plots_reporting.py", cwd=tmp_path)
    _, stored = run_example(hpo_env, "artifacts_example.py", str(tmp_path / "data"),
                            cwd=tmp_path)
    _, configured = run_example(hpo_env, "configuration_example.py", cwd=tmp_path)
    assert plots and stored and configured
    store = open_store()
    server = start_ui(hpo_env["HPO_STORE_URL"], tmp_path / "ui.log")
    try:
        # When their task pages are opened
        page = http(f"{server.url}/tasks/{plots['task_id']}").text()
        # Then the plots are there for plotly.js, the tables as tables, the image inline
        assert 'id="plots-data"' in page and '"type": "heatmap"' in page
        assert "<td>spider</td>" in page and "<th>animal</th>" in page
        (image,) = store.task_reports(plots["task_id"], kind="image")
        assert f'src="/api/tasks/{plots["task_id"]}/reports/{image.id}"' in page
        png = http(f"{server.url}/api/tasks/{plots['task_id']}/reports/{image.id}")
        assert png.status == 200 and png.headers["content-type"] == "image/png"
        assert png.body[:4] == b"\x89PNG"
        # and a reported HTML file is a download in a sandbox, never a page of this site
        (media,) = store.task_reports(plots["task_id"], kind="media")
        html = http(f"{server.url}/api/tasks/{plots['task_id']}/reports/{media.id}")
        assert html.status == 200
        assert html.headers["content-type"] == "application/octet-stream"
        assert html.headers["content-disposition"].startswith("attachment")
        assert "sandbox" in html.headers["content-security-policy"]
        # and a report id of another task, or none, is not found
        other = http(f"{server.url}/api/tasks/{stored['task_id']}/reports/{image.id}")
        assert other.status == 404
        assert http(f"{server.url}/api/tasks/{plots['task_id']}/reports/x").status == 404
        # and the artifacts are listed and downloadable
        page = http(f"{server.url}/tasks/{stored['task_id']}").text()
        assert "Numpy Eye" in page and "archive" in page
        got = http(f"{server.url}/api/tasks/{stored['task_id']}/artifacts/dictionary")
        assert got.status == 200 and json.loads(got.body)["legs"] == {"dog": 4, "falcon": 2}
        # and configuration objects and user properties have their own sections
        page = http(f"{server.url}/tasks/{configured['task_id']}").text()
        assert "Configuration objects" in page and "User properties" in page
        assert "configured by the example" in page
    finally:
        stop_ui(server.proc)


@pytest.mark.timeout(120)
def test_a_tasks_files_need_the_login_like_every_page(hpo_env, tmp_path, monkeypatch):
    from tests.test_ui import http, start_ui, stop_ui

    _, stored = run_example(hpo_env, "artifacts_example.py", str(tmp_path / "data"),
                            cwd=tmp_path)
    assert stored
    token = "tok-" + "y" * 28
    monkeypatch.setenv("HPO_UI_TOKEN", token)
    server = start_ui(hpo_env["HPO_STORE_URL"], tmp_path / "ui.log")
    try:
        url = f"{server.url}/api/tasks/{stored['task_id']}/artifacts/dictionary"
        assert http(url).status == 401
        assert http(url, headers={"Authorization": f"Bearer {token}"}).status == 200
    finally:
        stop_ui(server.proc)


def test_logging_set_up_before_task_init_is_kept_in_the_log_too(hpo_env, tmp_path):
    code = ("import logging, sys\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "from hpo import Task\n"
            "task = Task.init(project_name='p', task_name='logging')\n"
            "logging.info('an info message')\n"
            "params = task.connect({'lr': 0.1})\n"
            "params['lr'] = 0.5\n"
            "print('read back', task.get_parameter('lr'))\n"
            "task.close()\n"
            "assert logging.getLogger().handlers[0].stream is sys.stderr\n")
    result = subprocess.run([sys.executable, "-c", code], env=hpo_env, capture_output=True,
                            text=True, timeout=60, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
    assert "INFO:root:an info message" in result.stderr  # still printed
    assert "read back 0.5" in result.stdout  # a change a moment ago is read back
    (task,) = open_store().find_tasks(project="p", name="logging")
    assert ("stderr", "INFO:root:an info message") in [
        (line.stream, line.text) for line in open_store().read_logs(task.id)]


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_chromium_draws_a_tasks_reported_plots_and_images(hpo_env, tmp_path):
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, PageWatch, screenshot
    from tests.test_ui import start_ui, stop_ui

    if not CHROMIUM.exists():
        from tests.conftest import missing_service

        missing_service(f"Chromium at {CHROMIUM}")
    playwright_api = pytest.importorskip("playwright.sync_api")
    _, plots = run_example(hpo_env, "plots_reporting.py", cwd=tmp_path)
    assert plots
    server = start_ui(hpo_env["HPO_STORE_URL"], tmp_path / "ui.log")
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                 headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                watch = PageWatch(page)
                page.goto(f"{server.url}/tasks/{plots['task_id']}")
                # one figure per plot title: 2 histograms, 2 matrices, 1 scatter, 1 plotly
                page.wait_for_function(
                    "document.querySelectorAll('#plots .js-plotly-plot .main-svg')"
                    ".length >= 6", timeout=WAIT_MS)
                image = page.locator(".samples img").first
                image.wait_for(timeout=WAIT_MS)
                assert page.evaluate("(img) => img.naturalWidth", image.element_handle()) == 16
                screenshot(page, tmp_path, "task-reports")
                assert watch.errors == []
            finally:
                browser.close()
    finally:
        stop_ui(server.proc)
