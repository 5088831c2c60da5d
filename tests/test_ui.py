"""`hpo ui`: the real server in a subprocess, read with urllib, on a store filled through
the Store API (an optimization with finished, running and queued jobs, scalars, logs,
monitor samples and an agent's heartbeat)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hpo.lifecycle import Status, TaskType
from hpo.optimization.config import OptimizerConfig
from hpo.report.figures import FIGURES
from hpo.space.ranges import DiscreteParameterRange, UniformParameterRange
from hpo.store import Store, open_store
from hpo.strategies.base import Objective
from tests.agents import terminate, wait_for

EXTERNAL_URL = re.compile(r"https?://", re.IGNORECASE)


# ----- the server -------------------------------------------------------------------------


@dataclass
class UiServer:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_ui(store_url: str, log: Path, *extra: str) -> UiServer:
    """`hpo ui --port 0`: the port it picked is read from its first line; then polled
    until it answers."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hpo.cli.main", "ui", "--port", "0",
                                 "--store", store_url, *extra],
                                stdout=out, stderr=subprocess.STDOUT)

    def announced() -> str | None:
        found = re.search(r"at (http://\S+/) ", log.read_text(errors="replace"))
        assert found or proc.poll() is None, f"hpo ui exited: {log.read_text()}"
        return found.group(1).rstrip("/") if found else None

    try:
        url = wait_for("hpo ui to print its URL", announced, timeout=30)
        wait_for("hpo ui to answer", lambda: _answers(url), timeout=30)
    except BaseException:
        stop_ui(proc)
        raise
    return UiServer(proc, url, log)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/static/style.css", timeout=2):
            return True
    except (urllib.error.URLError, ConnectionError):
        return False


def stop_ui(proc: subprocess.Popen[bytes]) -> None:
    terminate(proc)



# ----- the store ----------------------------------------------------------------------------


@dataclass
class Filled:
    url: str
    optimizer: str
    completed: list[str]  # best first
    running: str
    queued: str
    template: str
    agent: str
    stopped_agent: str  # an agent that served ui-queue and stopped


def fill_store(store: Store, url: str) -> Filled:
    """An optimization as the controller and agents leave it: two completed jobs, one
    running (reporting, logging, monitored), one queued; an agent heartbeating."""
    template = store.create_task("ui-tests", "train", parameters={
        "General/x": 0.5, "General/opt": "sgd", "General/steps": 4})
    optimizer = store.create_task("ui-tests", "search", type=TaskType.optimizer)
    store.set_status(optimizer.id, Status.running)
    config = OptimizerConfig(
        base_task_id=template.id,
        hyper_parameters=[UniformParameterRange("General/x", 0.0, 1.0),
                          DiscreteParameterRange("General/opt", ["sgd", "adam"])],
        objectives=[Objective("loss", "total", "min")], strategy="random",
        max_number_of_concurrent_tasks=2, total_max_jobs=6, execution_queue="ui-queue")
    store.create_optimization(optimizer.id, config.to_dict())
    agent = "agent-ui-1"

    def job(x: float, opt: str, losses: list[float], end: Status | None) -> str:
        child = store.clone_task(template.id, parent=optimizer.id, name=f"train x={x}",
                                 parameters={"General/x": x, "General/opt": opt})
        store.enqueue(child.id, "ui-queue")
        if end is None and not losses:
            return child.id  # stays queued
        attempt = store.claim(child.id, agent)
        assert attempt is not None
        now = time.time()
        store.append_scalars(child.id, [("loss", "total", i, v, now)
                                        for i, v in enumerate(losses)], attempt=attempt)
        store.append_scalars(child.id, [(":monitor:machine", "cpu_percent", i, 50.0 + i, now)
                                        for i in range(3)], attempt=attempt)
        store.append_logs(child.id, [(now, "stdout", f"step {i} loss {v}")
                                     for i, v in enumerate(losses)])
        if end is not None:
            store.finish(child.id, attempt, end, exit_code=0)
        return child.id

    good = job(0.3, "adam", [0.9, 0.5, 0.2], Status.completed)
    fair = job(0.8, "sgd", [0.9, 0.7, 0.6], Status.completed)
    running = job(0.5, "sgd", [0.95, 0.8], None)
    queued = job(0.1, "adam", [], None)
    store.heartbeat(agent, queues=["ui-queue"], slots=["cpu0", "cpu1"], running=[running],
                    host="ui-host", pid=1234)
    stopped_agent = "agent-ui-gone"
    store.heartbeat(stopped_agent, queues=["ui-queue"], slots=["cpu0"], host="old-host")
    store.remove_worker(stopped_agent)
    return Filled(url, optimizer.id, [good, fair], running, queued, template.id, agent,
                  stopped_agent)


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[UiServer, Filled, Store]]:
    tmp = tmp_path_factory.mktemp("ui")
    url = f"sqlite:///{tmp / 'store.db'}"
    store = open_store(url)
    filled = fill_store(store, url)
    server = start_ui(url, tmp / "ui.log")
    try:
        yield server, filled, store
    finally:
        stop_ui(server.proc)
        store.close()


# ----- HTTP helpers -------------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.body)


def http(url: str, *, method: str = "GET", data: bytes | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), error.read())


def post_json(url: str, body: Any = None) -> Reply:
    return http(url, method="POST", data=json.dumps(body or {}).encode(),
                headers={"Content-Type": "application/json"})


# ----- pages and JSON -----------------------------------------------------------------------


def test_front_page_lists_the_optimization_the_agent_and_the_queue(ui):
    server, filled, _ = ui
    reply = http(f"{server.url}/")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
    page = reply.text()
    assert f'href="/optimizations/{filled.optimizer}"' in page
    assert "ui-tests / search" in page and "running" in page and "random" in page
    assert "loss/total min" in page
    assert "4 / 6" in page  # jobs launched / total_max_jobs
    assert "0.2" in page  # the best value so far
    assert filled.agent in page and "ui-host" in page and "cpu0, cpu1" in page
    # The agent that stopped is listed too, after the running one, saying when it left
    agents = page[page.index('id="agent-list"'):page.index('id="queues"')]
    running_row = agents[agents.index('class="agent-running"'):]
    assert running_row.index(filled.agent) < running_row.index(filled.stopped_agent)
    stopped_row = agents[agents.index('class="agent-stopped"'):]
    assert re.search(rf"<td>{filled.stopped_agent}</td>\s*<td><span class=\"status "
                     r"status-stopped\">stopped</span> [^<]+ ago</td>", stopped_row), stopped_row
    assert "No agent" not in agents
    # The queue lengths: one task waits in ui-queue, which the running agent serves
    # (the stopped one no longer does).
    queues = page[page.index('id="queues"'):]
    assert re.search(r"<td>ui-queue</td><td class=\"num\">1</td><td class=\"num\">1</td>",
                     queues), queues


def test_agents_are_running_silent_or_stopped_and_only_running_ones_serve(
        tmp_path, monkeypatch):
    from hpo.ui import views

    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    monkeypatch.setattr(store, "now", lambda: 1000.0)
    for name in ("a-stopped", "b-silent", "c-running"):
        store.heartbeat(name, queues=["q"])
    store.remove_worker("a-stopped")
    monkeypatch.setattr(views.time, "time", lambda: 1000.0 + 60)
    monkeypatch.setattr(store, "now", lambda: 1000.0 + 59)
    store.heartbeat("c-running", queues=["q"])

    page = views.front_page(store, [])

    assert [(a.worker.name, a.state) for a in page.agents] == [
        ("b-silent", "silent"), ("c-running", "running"), ("a-stopped", "stopped")]
    assert page.agents[-1].stopped_age_s == 60
    assert page.queues == [("q", 0, 1)]
    store.close()


def test_a_finished_optimization_offers_no_stop_button(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    filled = fill_store(store, url)
    store.set_status(filled.optimizer, Status.completed)
    server = start_ui(url, tmp_path / "ui.log")
    try:
        page = http(f"{server.url}/optimizations/{filled.optimizer}").text()
        assert "Stop optimization" not in page and 'id="stop"' not in page
    finally:
        stop_ui(server.proc)
        store.close()


def test_an_optimization_never_started_reads_so_on_the_front_page(tmp_path):
    # Given an optimizer created and never started (its task completed by the script
    # that built it, no state, no job)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    opt = store.create_task("p", "never", type="optimizer")
    store.create_optimization(opt.id, {"objectives": [], "hyper_parameters": []})
    store.set_status(opt.id, Status.running)
    store.set_status(opt.id, Status.completed)
    server = start_ui(url, tmp_path / "ui.log")
    try:
        # Then the front page says so, as `hpo-controller list` does, not "completed"
        page = http(f"{server.url}/").text()
        row = page[page.index(opt.id[:8]):]
        row = row[:row.index("</tr>")]
        assert "never started" in row and "completed" not in row
    finally:
        stop_ui(server.proc)
        store.close()


def test_front_page_lines_are_read_again_only_when_their_optimization_changed(tmp_path):
    from hpo.ui.caches import ListingCache

    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    filled = fill_store(store, url)
    cache = ListingCache()
    [first] = cache.rows(store)
    assert first.listing.best_value == 0.2 and first.strategy == "random"
    # Nothing changed: the same line, without reading the jobs
    assert cache.rows(store)[0] is first
    # The running job finishes better: the line is read again
    attempt = store.get_task(filled.running).attempt
    store.append_scalars(filled.running, [("loss", "total", 2, 0.1, time.time())],
                         attempt=attempt)
    store.finish(filled.running, attempt, Status.completed, exit_code=0)
    [again] = cache.rows(store)
    assert again is not first and again.listing.best_value == 0.1
    store.close()


def test_optimization_page_and_its_json(ui):
    server, filled, _ = ui
    page = http(f"{server.url}/optimizations/{filled.optimizer}")
    assert page.status == 200
    html = page.text()
    for stem in FIGURES:
        assert f'data-stem="{stem}"' in html
    assert 'id="top-jobs"' in html and "/static/plotly.min.js" in html
    assert "Stop optimization" in html  # it runs
    reply = http(f"{server.url}/api/optimizations/{filled.optimizer}")
    assert reply.status == 200 and reply.headers["content-type"] == "application/json"
    data = reply.json()
    summary = data["summary"]
    assert summary["id"] == filled.optimizer and summary["status"] == "running"
    assert (summary["launched"], summary["done"], summary["running"], summary["queued"]) == (
        4, 2, 1, 1)
    # The ends counted in the words of the tables (hpo.optimization.ends), as rendered
    assert summary["ends"] == {"completed": 2, "completed without objective": 0,
                               "stopped by a limit": 0, "stopped by the user": 0, "failed": 0}
    assert '<dt>stopped by the user</dt><dd data-field="end:stopped by the user">0' in html
    assert [row["end"] for row in summary["top"]] == ["completed", "completed"]
    assert [row["task_id"] for row in summary["top"]] == filled.completed  # min: best first
    best = summary["top"][0]
    assert best["objective"] == pytest.approx(0.2) and best["iteration"] == 2
    assert best["parameters"] == {"General/x": 0.3, "General/opt": "adam"}
    assert best["worker"] == filled.agent and best["duration_s"] is not None
    assert len(summary["jobs"]) == 4
    assert data["parameters"] == ["General/x", "General/opt"]
    assert data["final"] is False
    assert set(data["figures"]) == set(FIGURES)
    for stem, figure in data["figures"].items():
        assert "data" in figure and "layout" in figure, stem
    parcoords = data["figures"]["parallel_coordinates"]["data"][0]
    assert parcoords["type"] == "parcoords"


def test_an_unchanged_optimization_is_a_bodiless_304_and_a_change_is_seen(ui):
    server, filled, store = ui
    url = f"{server.url}/api/optimizations/{filled.optimizer}"
    first = http(url)
    etag = first.headers["etag"]
    again = http(url, headers={"If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    # A new objective report of the running job changes the learning curves: new data.
    attempt = store.get_task(filled.running).attempt
    store.append_scalars(filled.running, [("loss", "total", 2, 0.7, time.time())],
                         attempt=attempt)
    # Seen at once, or (the answer cache) once the last build is 4 build times old.
    changed = wait_for("the changed answer", lambda: (
        reply if (reply := http(url, headers={"If-None-Match": etag})).status == 200
        else None), timeout=10)
    assert changed.headers["etag"] != etag
    assert changed.json()["version"] == changed.headers["etag"].strip('"')


def test_the_answer_cache_shares_a_build_and_rebuilds_a_slow_view_less_often(monkeypatch):
    from hpo.ui import caches

    clock = [1000.0]
    monkeypatch.setattr(caches.time, "monotonic", lambda: clock[0])
    builds: list[str] = []

    def build(body: str, seconds: float) -> Any:
        def run() -> bytes:
            builds.append(body)
            clock[0] += seconds
            return body.encode()
        return run

    cache = caches.AnswerCache(keep=2)
    assert cache.get("view", "v1", build("one", 2.0)) == ("v1", b"one")
    assert cache.get("view", "v1", build("again", 2.0)) == ("v1", b"one")  # shared
    clock[0] += 1.0  # 3 s after a 2 s build began: too young to build again
    assert cache.get("view", "v2", build("two", 2.0)) == ("v1", b"one")
    clock[0] += 6.0  # 9 s > 4 x 2 s: the new version is built
    assert cache.get("view", "v2", build("two", 2.0)) == ("v2", b"two")
    assert builds == ["one", "two"]
    cache.get("other", "v1", build("o", 0.0))
    cache.get("third", "v1", build("t", 0.0))  # keep=2: "view" is forgotten
    assert cache.get("view", "v2", build("two again", 0.0)) == ("v2", b"two again")


def test_task_page_shows_parameters_scalars_monitor_and_log(ui):
    server, filled, _ = ui
    best = filled.completed[0]
    page = http(f"{server.url}/tasks/{best}")
    assert page.status == 200
    html = page.text()
    assert "General/x" in html and "General/opt" in html and "adam" in html
    assert 'class="tuned"' in html  # the optimization's parameters are marked
    assert f'href="/optimizations/{filled.optimizer}"' in html
    assert 'id="stop"' not in html  # a completed task cannot be stopped: no button
    assert 'id="stop"' in http(f"{server.url}/tasks/{filled.running}").text()
    data = http(f"{server.url}/api/tasks/{best}").json()
    assert data["task"]["status"] == "completed" and data["final"] is True
    assert list(data["scalars"]) == ["loss"]
    [trace] = data["scalars"]["loss"]["data"]
    assert trace["name"] == "total" and trace["x"] == [0, 1, 2]
    assert list(data["monitor"]) == ["machine: cpu_percent"]
    assert [line["text"] for line in data["log"]] == [
        "step 0 loss 0.9", "step 1 loss 0.5", "step 2 loss 0.2"]
    # The log goes on from a cursor: nothing new after the last line.
    cursor = data["log_cursor"]
    more = http(f"{server.url}/api/tasks/{best}?log_after={cursor}").json()
    assert more["log"] == [] and more["log_cursor"] == cursor


def test_unknown_ids_and_pages_are_404(ui):
    server, filled, _ = ui
    for path in ("/optimizations/ffffffffffff", "/tasks/ffffffffffff", "/nothing/here",
                 f"/optimizations/{filled.template}"):  # a task, but no optimization
        reply = http(f"{server.url}{path}")
        assert reply.status == 404, path
        assert "Not found" in reply.text() and "Traceback" not in reply.text(), path
        assert reply.headers["content-type"].startswith("text/html"), path
    api = http(f"{server.url}/api/optimizations/ffffffffffff")
    assert api.status == 404 and api.json()["error"] == "Not found"


def test_plotly_js_is_served_locally_with_caching_headers(ui):
    server, _, _ = ui
    reply = http(f"{server.url}/static/plotly.min.js")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/javascript")
    assert "max-age" in reply.headers["cache-control"]
    assert len(reply.body) > 1_000_000 and b"plotly" in reply.body[:2000].lower()


def test_no_page_refers_to_anything_outside_the_server(ui):
    server, filled, _ = ui
    for path in ("/", f"/optimizations/{filled.optimizer}", f"/tasks/{filled.running}",
                 "/tasks/ffffffffffff", "/static/live.js", "/static/optimization.js",
                 "/static/task.js", "/static/index.js", "/static/style.css"):
        reply = http(f"{server.url}{path}")
        assert not EXTERNAL_URL.search(reply.text()), (path, EXTERNAL_URL.search(reply.text()))
        # And the browser is told to load nothing from elsewhere.
        policy = reply.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy, path


def test_other_hosts_are_refused(ui):
    # A loopback server answers loopback names only: a DNS-rebinding page cannot use it.
    server, _, _ = ui
    reply = http(f"{server.url}/", headers={"Host": "attacker.example"})
    assert reply.status == 400
    for name in ("localhost", "127.0.0.1", "[::1]"):  # every loopback name is answered
        port = server.url.rsplit(":", 1)[1].rstrip("/")
        assert http(f"{server.url}/", headers={"Host": f"{name}:{port}"}).status == 200, name


# ----- the stop buttons ---------------------------------------------------------------------


def test_stop_refuses_forms_and_gets_and_works_with_json(ui):
    server, filled, store = ui
    stop = f"{server.url}/api/tasks/{filled.running}/stop"
    # What a cross-site form can send: refused, nothing changed.
    for content_type in ("application/x-www-form-urlencoded", "text/plain",
                         "multipart/form-data; boundary=x"):
        reply = http(stop, method="POST", data=b"a=1", headers={"Content-Type": content_type})
        assert reply.status == 415, content_type
    assert http(stop).status == 405
    assert store.get_task(filled.running).stop_requested is False
    # JSON: the running task is flagged for its agent, as `hpo task abort` does.
    reply = post_json(stop)
    assert reply.status == 200 and reply.json()["stop_requested"] is True
    assert store.get_task(filled.running).stop_requested is True
    # A queued task stops at once; a finished one cannot be stopped (409).
    reply = post_json(f"{server.url}/api/tasks/{filled.queued}/stop")
    assert reply.status == 200 and reply.json()["status"] == "stopped"
    assert store.get_task(filled.queued).status is Status.stopped
    reply = post_json(f"{server.url}/api/tasks/{filled.completed[0]}/stop")
    assert reply.status == 409 and "only a queued or running task" in reply.json()["message"]


def test_without_a_token_a_post_from_another_site_is_still_refused(ui):
    # No login on loopback, but a page elsewhere cannot make the browser stop anything.
    server, filled, _ = ui
    reply = http(f"{server.url}/api/tasks/{filled.running}/stop", method="POST",
                 data=b"{}", headers={"Content-Type": "application/json",
                                      "Origin": "http://attacker.example"})
    assert reply.status == 403
    assert http(f"{server.url}/login").status == 404  # no login page: nothing to log in to
    assert http(f"{server.url}/healthz").text() == "ok\n"


def test_stop_an_optimization_like_hpo_controller_stop(ui):
    server, filled, store = ui
    stop = f"{server.url}/api/optimizations/{filled.optimizer}/stop"
    assert http(stop, method="POST", data=b"x=1", headers={
        "Content-Type": "application/x-www-form-urlencoded"}).status == 415
    assert store.get_task(filled.optimizer).stop_requested is False
    assert post_json(f"{server.url}/api/optimizations/{filled.template}/stop").status == 404
    reply = post_json(stop)
    assert reply.status == 200 and reply.json()["stop_requested"] is True
    record = store.get_task(filled.optimizer)
    assert record.stop_requested and record.status_message == "stopped from hpo ui"


# ----- the command line ---------------------------------------------------------------------


def test_help_explains_the_command():
    result = subprocess.run([sys.executable, "-m", "hpo.cli.main", "ui", "--help"],
                            capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0
    for text in ("--port", "--host", "--store", "127.0.0.1", "stop buttons", "Ctrl-C"):
        assert text in result.stdout, text


def test_a_port_in_use_is_one_line_and_exit_2(ui, tmp_path):
    server, filled, _ = ui
    port = server.url.rsplit(":", 1)[1]
    result = subprocess.run([sys.executable, "-m", "hpo.cli.main", "ui", "--port", port,
                             "--store", filled.url], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and f"port {port}" in result.stderr
    assert "in use" in result.stderr and result.stdout == ""


def test_an_unreachable_store_is_a_clear_page_not_a_traceback(tmp_path):
    # A SQLite file under a plain file (not a folder) cannot be opened.
    (tmp_path / "not-a-folder").write_text("")
    url = f"sqlite:///{tmp_path / 'not-a-folder' / 'store.db'}"
    server = start_ui(url, tmp_path / "ui.log")
    try:
        for path in ("/", "/api/optimizations/abcd1234"):
            reply = http(f"{server.url}{path}")
            assert reply.status == 503, (path, reply.text())
            assert "The store cannot be read" in reply.text()
            assert "Traceback" not in reply.text()
    finally:
        stop_ui(server.proc)


def test_ctrl_c_exits_cleanly(tmp_path):
    server = start_ui(f"sqlite:///{tmp_path / 'store.db'}", tmp_path / "ui.log")
    try:
        server.proc.send_signal(signal.SIGINT)
        # Served requests are finished first; then the exit code of every hpo command
        # after Ctrl-C, and one line.
        assert server.proc.wait(timeout=15) == 130, server.output()
        assert server.output().splitlines()[1:] == ["hpo: interrupted"], server.output()
    finally:
        stop_ui(server.proc)
