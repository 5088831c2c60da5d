"""`hpo ui` in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven by
playwright, which downloads nothing) against a store with one finished and one running
optimization of the digits example, made by the real controller and agents. The running
one's page must draw its table and every plot, then update by itself when a job ends.

Screenshots are kept in the test's tmp_path and copied to test-output/browser/."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from hpo.lifecycle import Status
from hpo.report.figures import FIGURES
from hpo.store import Store, open_store
from tests.agents import wait_for
from tests.conftest import DIGITS_JOBS, missing_service
from tests.test_controller_cli import TASK_ID, digits_config, make_env
from tests.test_ui import start_ui, stop_ui

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
# Fresh profile (playwright's default), and nothing that talks to a network: without
# these Chromium's background connections are refused in closed CI networks.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
WAIT_MS = 30_000


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        missing_service(f"Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_service("the playwright package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# ----- the two optimizations --------------------------------------------------------------


@contextmanager
def running_optimization(env: dict[str, str], folder: Path) -> Iterator[str]:
    """`hpo-controller start` of the digits example, one job at a time and many of them,
    so it is still running while the browser looks; stopped with Ctrl-C afterwards (the
    controller stops its jobs and local agents), killed if it will not go."""
    config = digits_config(folder, max_number_of_concurrent_tasks=1, total_max_jobs=40)
    log = folder / "start.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hpo.controller.cli", "start",
                                 str(config), "--local-agents", "1"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    store = open_store(env["HPO_STORE_URL"])
    try:
        def first_line() -> str | None:
            text = log.read_text()
            assert proc.poll() is None, f"hpo-controller exited: {text}"
            return text.splitlines()[0] if "\n" in text else None

        optimizer_id = wait_for("the optimizer id", first_line, timeout=60)
        assert TASK_ID.match(optimizer_id), log.read_text()
        yield optimizer_id
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        kill_agents(store)
        store.close()


def kill_agents(store: Store) -> None:
    """Agents the controller left behind (it had to be killed): they run in their own
    session. Only a process whose command line names the agent is killed (a pid of an
    agent that exited may belong to another process by now)."""
    for worker in store.list_workers():
        if worker.pid and worker.name in _command_line(worker.pid):
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _command_line(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def finished_optimization(digits_optimization: dict[str, Any],
                          home: Path) -> tuple[dict[str, str], str]:
    """The session's finished optimization of the digits example (conftest), in a copy of
    its store in ``home`` (SQLite's online backup; the shared store stays as it was);
    returns the environment on that copy and the optimization's id."""
    result = digits_optimization["result"]
    assert result.returncode == 0, result.stdout + result.stderr
    env = make_env(home)
    home.mkdir(parents=True)
    source = make_url(digits_optimization["env"]["HPO_STORE_URL"]).database
    with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as shared, \
            closing(sqlite3.connect(make_url(env["HPO_STORE_URL"]).database)) as copy:
        shared.backup(copy)
    return env, digits_optimization["id"]


def done_jobs(store: Store, optimizer_id: str) -> int:
    return len(store.find_tasks(parent=optimizer_id, status=[
        Status.completed, Status.stopped, Status.failed]))


# ----- the page -----------------------------------------------------------------------------


class PageWatch:
    """What a page asked for and complained about."""

    def __init__(self, page: Any) -> None:
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                if m.type == "error" else None)


def assert_plots_drawn(page: Any) -> None:
    """Every figure of the report is an SVG plot in the page; the parallel coordinates
    are a parcoords plot."""
    for stem in FIGURES:
        page.wait_for_selector(f"#figure-{stem} .js-plotly-plot .main-svg", timeout=WAIT_MS)
    assert page.locator("#figure-parallel_coordinates .parcoords").count() >= 1


def rows(page: Any, table: str) -> int:
    return int(page.locator(f"#{table} tbody tr[data-task]").count())


def field(page: Any, name: str) -> str:
    return str(page.locator(f'[data-field="{name}"]').first.inner_text())


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = ROOT / "test-output" / "browser"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, keep / path.name)
    return path


@pytest.mark.timeout(300)  # it may be the first to run the shared optimization
def test_live_pages_draw_update_without_reload_and_stop_in_chromium(
        chromium, digits_optimization, tmp_path):
    # A finished optimization, and a running one started beside it in the same store.
    env, finished_id = finished_optimization(digits_optimization, tmp_path / "home")
    store = open_store(env["HPO_STORE_URL"])
    with running_optimization(env, tmp_path / "running") as running_id:
        # A running optimization with a job done, so its page has rows to start with.
        wait_for("a finished job", lambda: done_jobs(store, running_id) >= 1, timeout=60)
        server = start_ui(env["HPO_STORE_URL"], tmp_path / "ui.log")
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 900})
            watch = PageWatch(page)

            # The running optimization: table rows and every plot, then a live update.
            page.goto(f"{server.url}/optimizations/{running_id}")
            page.wait_for_selector("#top-jobs tbody tr[data-task]", timeout=WAIT_MS)
            assert_plots_drawn(page)
            assert field(page, "status") == "running"
            assert rows(page, "all-jobs") >= 1
            done_before = int(field(page, "done"))
            top_before = rows(page, "top-jobs")
            assert done_before >= 1 and top_before >= 1
            page.evaluate("window.__marker = 1")
            page.wait_for_function(
                f"Number(document.querySelector('[data-field=\"done\"]').textContent) > "
                f"{done_before} && document.querySelectorAll('#top-jobs tbody tr[data-task]')"
                f".length > {top_before}", timeout=WAIT_MS)
            assert page.evaluate("window.__marker") == 1  # the same page: no reload
            assert rows(page, "top-jobs") > top_before
            assert "completed" in page.locator("#top-jobs tbody tr[data-task]").first.inner_text()
            shot = screenshot(page, tmp_path, "running-optimization")

            # The front page lists both, with their status.
            page.goto(f"{server.url}/")
            listing = page.locator("#optimizations").inner_text()
            assert running_id[:8] in listing and finished_id[:8] in listing
            assert "running" in listing and "completed" in listing
            assert page.locator("text=Agents").count() >= 1
            # The running one's agent, and the finished one's that stopped, with when
            agents = page.locator("#agent-list").inner_text()
            assert "running" in agents and "stopped" in agents, agents
            # It refreshes itself: the running optimization launches more jobs.
            page.evaluate("window.__marker = 3")
            page.wait_for_function(
                "(before) => document.getElementById('optimizations').innerText !== before",
                arg=listing, timeout=WAIT_MS)
            assert page.evaluate("window.__marker") == 3
            screenshot(page, tmp_path, "optimizations")

            # The finished one: every job in the table, every plot, no more polling.
            page.goto(f"{server.url}/optimizations/{finished_id}")
            page.wait_for_selector("#top-jobs tbody tr[data-task]", timeout=WAIT_MS)
            assert_plots_drawn(page)
            page.wait_for_function(
                "document.getElementById('updated').textContent.includes('finished')",
                timeout=WAIT_MS)
            assert rows(page, "top-jobs") == DIGITS_JOBS
            assert field(page, "status") == "completed"
            assert page.locator("#stop").count() == 0  # nothing to stop: no button
            screenshot(page, tmp_path, "finished-optimization")

            # Its best job's page, through the table's link: scalars and the log.
            page.locator("#top-jobs tbody tr[data-task] a.id").first.click()
            page.wait_for_selector("#scalars .js-plotly-plot .main-svg", timeout=WAIT_MS)
            page.wait_for_function("document.getElementById('log').textContent"
                                   ".includes('validation accuracy')", timeout=WAIT_MS)
            assert field(page, "status") == "completed"
            assert "General/alpha" in page.locator("#parameters").inner_text()
            screenshot(page, tmp_path, "task")

            # The stop button ends the running optimization (its controller stops the
            # jobs); the page sees it end without a reload.
            page.goto(f"{server.url}/optimizations/{running_id}")
            page.wait_for_selector("#top-jobs tbody tr[data-task]", timeout=WAIT_MS)
            page.on("dialog", lambda dialog: dialog.accept())
            page.evaluate("window.__marker = 2")
            page.locator("#stop").click()
            page.wait_for_function(
                "document.querySelector('[data-field=\"status\"]').textContent === 'stopped'",
                timeout=WAIT_MS)
            assert page.evaluate("window.__marker") == 2
            assert page.locator("#stop").count() == 0  # nothing left to stop: no button
            assert store.get_task(running_id).status is Status.stopped

            assert watch.errors == []
            outside = [u for u in watch.requests
                       if not u.startswith(server.url) and not u.startswith("data:")]
            assert outside == []  # nothing fetched from anywhere else
            assert shot.stat().st_size > 50_000
        finally:
            stop_ui(server.proc)
    store.close()


# ----- the login ------------------------------------------------------------------------------


def test_a_browser_logs_in_stops_a_task_with_its_csrf_token_and_logs_out(
        chromium, tmp_path, monkeypatch):
    from tests.test_ui import fill_store

    token = "browser-test-token-0123456789abcdef"
    monkeypatch.setenv("HPO_UI_TOKEN", token)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    filled = fill_store(store, url)
    server = start_ui(url, tmp_path / "ui.log")
    try:
        context = chromium.new_context()
        page = context.new_page()
        watch = PageWatch(page)
        # A page asked for without a login leads to the login form, and back after it.
        page.goto(f"{server.url}/tasks/{filled.running}")
        assert page.url.startswith(f"{server.url}/login?next=")
        page.fill("#token", "not-the-token-0123456789")
        page.click("section.login button[type=submit]")
        assert page.locator("#login-error").inner_text() == "Wrong token."
        page.fill("#token", token)
        page.click("section.login button[type=submit]")
        page.wait_for_url(f"{server.url}/tasks/{filled.running}", timeout=WAIT_MS)
        page.wait_for_selector("#scalars .js-plotly-plot .main-svg", timeout=WAIT_MS)
        (cookie,) = context.cookies()
        assert cookie["name"] == "hpo_session" and cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        # The stop button sends the session's CSRF token: the stop goes through.
        page.on("dialog", lambda dialog: dialog.accept())
        page.locator("#stop").click()
        wait_for("the stop request", lambda: store.get_task(filled.running).stop_requested,
                 timeout=30)
        screenshot(page, tmp_path, "logged-in-task")
        # Logging out ends the session: pages lead to the login form again.
        page.click("form.logout button")
        page.wait_for_url(f"{server.url}/login", timeout=WAIT_MS)
        page.goto(f"{server.url}/")
        assert page.url.startswith(f"{server.url}/login?next=")
        # The wrong token's 403 is the only complaint.
        assert [e for e in watch.errors if "status of 403" not in e] == []
        context.close()
    finally:
        stop_ui(server.proc)
        store.close()
