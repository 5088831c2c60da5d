"""`hpo ui` for a team: the login token, browser sessions, CSRF, failed logins, the Host
names answered beyond loopback, and the refusal to serve other machines without a token.

The rules (hpo.ui.auth, hpo.ui.hosts) are tested directly; the HTTP side against the
app served by uvicorn in a thread of this process (its clock and limits can be changed);
the command line as a real `hpo ui` subprocess."""

from __future__ import annotations

import argparse
import logging
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn

from hpo.cli.ui_cmd import listen, login_token
from hpo.errors import ConfigError
from hpo.lifecycle import Status
from hpo.store import Store, open_store
from hpo.ui import hosts
from hpo.ui.app import create_app
from hpo.ui.auth import MIN_TOKEN_LEN, Auth, FailedLogins, resolve_token
from hpo.ui.login import safe_next
from tests.test_ui import Filled, Reply, fill_store, start_ui, stop_ui

TOKEN = "tok-" + "x" * 28  # what secrets.token_urlsafe(32) makes is as long
MAKE_ONE = "secrets.token_urlsafe(32)"
PROXY_NAME = "hpo.example.com"  # a TLS proxy in front, as --allowed-host names it


@pytest.fixture(autouse=True)
def no_token_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HPO_UI_TOKEN", "HPO_UI_TOKEN_FILE", "HPO_UI_ALLOWED_HOSTS"):
        monkeypatch.delenv(name, raising=False)


# ----- where the token comes from -----------------------------------------------------------


def test_the_token_comes_from_the_flag_file_then_the_variable_then_its_file(
        tmp_path, monkeypatch):
    assert resolve_token() is None
    file = tmp_path / "token"
    file.write_text(f"  {TOKEN}-file\n")
    monkeypatch.setenv("HPO_UI_TOKEN_FILE", str(file))
    assert resolve_token() == (f"{TOKEN}-file", f"$HPO_UI_TOKEN_FILE={file}")
    monkeypatch.delenv("HPO_UI_TOKEN_FILE")
    monkeypatch.setenv("HPO_UI_TOKEN", TOKEN)
    assert resolve_token() == (TOKEN, "$HPO_UI_TOKEN")
    assert resolve_token(file) == (f"{TOKEN}-file", f"--token-file={file}")  # the flag wins
    monkeypatch.setenv("HPO_UI_TOKEN_FILE", str(file))
    with pytest.raises(ConfigError, match="both set"):
        resolve_token()


@pytest.mark.parametrize("content, complaint", [
    ("", "is empty"),
    ("short-one", f"shorter than {MIN_TOKEN_LEN}"),
    ("has a space in it, long enough", "space"),
    ("ünïcødé-tøkéñ-long-enough", "printable ASCII"),
])
def test_a_bad_token_is_refused_without_showing_it(tmp_path, monkeypatch, content, complaint):
    file = tmp_path / "token"
    file.write_text(content)
    for given in (lambda: resolve_token(file),
                  lambda: (monkeypatch.setenv("HPO_UI_TOKEN", content or " "),
                           resolve_token())[1]):
        with pytest.raises(ConfigError) as caught:
            given()
        message = str(caught.value)
        assert complaint in message and MAKE_ONE in message, message
        assert not content or content not in message


def test_an_unreadable_or_oversized_token_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read it"):
        resolve_token(tmp_path / "missing")
    with pytest.raises(ConfigError, match="must be a path"):
        resolve_token("")
    big = tmp_path / "big"
    big.write_bytes(b"x" * 10_000)
    with pytest.raises(ConfigError, match="over 4096 bytes"):
        resolve_token(big)


def _ui_args(host: str, token_file: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(host=host, token_file=token_file)


def test_a_token_is_required_beyond_loopback_and_used_wherever_it_is_set(monkeypatch):
    # Loopback without a token: open, as before.
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert login_token(_ui_args(host)) is None, host
    # Beyond loopback without one: refused, naming where a token goes and how to make one.
    for host in ("0.0.0.0", "::", "192.168.1.5", "my-laptop.lan"):
        with pytest.raises(ConfigError) as caught:
            login_token(_ui_args(host))
        message = str(caught.value)
        for text in ("HPO_UI_TOKEN", "--token-file", MAKE_ONE, f"--host {host}"):
            assert text in message, (host, text)
    # With a token: required on any address, loopback included.
    monkeypatch.setenv("HPO_UI_TOKEN", TOKEN)
    assert login_token(_ui_args("127.0.0.1")) == TOKEN
    assert login_token(_ui_args("0.0.0.0")) == TOKEN


# ----- sessions, CSRF tokens, failed logins -------------------------------------------------


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_session_cookie_is_signed_and_expires():
    clock = Clock()
    auth = Auth(TOKEN, session_s=3600, clock=clock)
    session, cookie = auth.new_session()
    assert auth.session(cookie) == session and session.expires == clock.now + 3600
    # Any change to the cookie, or another token's key, and it is no session.
    expires, session_id, signature = cookie.split(".")
    for forged in (f"{int(expires) + 9999}.{session_id}.{signature}",
                   f"{expires}.{session_id}x.{signature}", f"{expires}.{session_id}.",
                   cookie + ".x", "", "x" * 500):
        assert auth.session(forged) is None, forged
    assert Auth(TOKEN + "-rotated", clock=clock).session(cookie) is None
    # Expired.
    clock.now += 3600
    assert auth.session(cookie) is None


def test_logging_out_ends_that_session_only():
    auth = Auth(TOKEN)
    first, first_cookie = auth.new_session()
    _, second_cookie = auth.new_session()
    auth.end(first)
    assert auth.session(first_cookie) is None
    assert auth.session(second_cookie) is not None


def test_a_csrf_token_belongs_to_its_session_and_token():
    auth = Auth(TOKEN)
    first, _ = auth.new_session()
    second, _ = auth.new_session()
    assert auth.csrf_matches(first, auth.csrf(first))
    assert not auth.csrf_matches(first, auth.csrf(second))
    assert not auth.csrf_matches(first, "") and not auth.csrf_matches(first, None)
    assert Auth(TOKEN + "-other").csrf(first) != auth.csrf(first)


def test_failed_logins_lock_a_client_out_until_the_window_passes():
    clock = Clock()
    failures = FailedLogins(limit=3, window_s=60, clock=clock)
    assert [failures.failed("10.0.0.1") for _ in range(2)] == [1, 2]
    assert failures.wait_s("10.0.0.1") == 0
    clock.now += 10
    assert failures.failed("10.0.0.1") == 3
    assert failures.wait_s("10.0.0.1") == pytest.approx(50)  # the first leaves at 60
    assert failures.wait_s("10.0.0.2") == 0  # another client is not held up
    clock.now += 50
    assert failures.wait_s("10.0.0.1") == 0 and failures.failed("10.0.0.1") == 2


# ----- Host names ---------------------------------------------------------------------------


def test_loopback_and_wildcard_addresses():
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert hosts.is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.5", "fe80::1%eth0", "example.com", "localhost.evil"):
        assert not hosts.is_loopback(host), host
    assert hosts.is_wildcard("0.0.0.0") and hosts.is_wildcard("::")
    assert not hosts.is_wildcard("10.0.0.5")


def test_the_names_answered_are_those_users_type(monkeypatch):
    # Loopback: the loopback names (and what --allowed-host adds), nothing else.
    assert hosts.answered_hosts("127.0.0.1") == sorted(hosts.LOOPBACK_HOSTS)
    assert "hpo.example.com" in hosts.answered_hosts("127.0.0.1", ["HPO.example.com"])
    # A given address: it, the machine's names, and the loopback names.
    names = hosts.answered_hosts("10.1.2.3", ["*.example.com", "fd00::5"])
    assert {"10.1.2.3", socket.gethostname().lower(), "localhost", "*.example.com",
            "[fd00::5]"} <= set(names)
    # Every address: each of the machine's addresses too.
    names = hosts.answered_hosts("0.0.0.0")
    assert hosts.machine_addresses() <= set(names) and "127.0.0.1" in names
    monkeypatch.setenv("HPO_UI_ALLOWED_HOSTS", "proxy.example.com, *")
    assert {"proxy.example.com", "*"} <= set(hosts.answered_hosts("0.0.0.0"))


@pytest.mark.parametrize("given", ["hpo.example.com:8080", "http://hpo.example.com",
                                   "a*b.example.com", "*example.com", "", "two words"])
def test_a_malformed_allowed_host_is_refused(given):
    with pytest.raises(ConfigError, match="not a host name"):
        hosts.answered_hosts("0.0.0.0", [given])


def test_after_login_only_a_path_here_is_followed():
    assert safe_next("/optimizations/abcd?top=5") == "/optimizations/abcd?top=5"
    for given in (None, "", "//evil.example/", "/\\evil.example", "https://evil.example",
                  "evil", "/login?next=/", "/a\nb"):
        assert safe_next(given) == "/", given


# ----- over HTTP: the app in this process ---------------------------------------------------


@dataclass
class Served:
    url: str
    auth: Auth
    filled: Filled
    store: Store

    def get(self, path: str, **kwargs: Any) -> Reply:
        return call(f"{self.url}{path}", **kwargs)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect is an answer to look at, not to follow


_OPENER = urllib.request.build_opener(_NoRedirects())


def call(url: str, *, method: str = "GET", data: bytes | None = None,
         headers: dict[str, str] | None = None) -> Reply:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=30) as response:
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, dict(error.headers), error.read())


def cookie_of(reply: Reply) -> str:
    """``name=value`` of the session cookie the reply sets."""
    return reply.headers["set-cookie"].split(";")[0]


def form(**fields: str) -> dict[str, Any]:
    return {"method": "POST", "data": urllib.parse.urlencode(fields).encode(),
            "headers": {"Content-Type": "application/x-www-form-urlencoded"}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The app with a token, on a free loopback port, answering its port's Host names."""
    tmp = tmp_path_factory.mktemp("ui-auth")
    url = f"sqlite:///{tmp / 'store.db'}"
    store = open_store(url)
    filled = fill_store(store, url)
    auth = Auth(TOKEN, fail_delay_s=0.0)
    names = hosts.answered_hosts("127.0.0.1", [PROXY_NAME])
    app = create_app(url, allowed_hosts=names, auth=auth)
    sock = listen("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    port = sock.getsockname()[1]
    try:
        for _ in range(300):
            if server.started:
                break
            threading.Event().wait(0.05)
        yield Served(f"http://127.0.0.1:{port}", auth, filled, store)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        app.state.store.close()
        store.close()


@pytest.fixture
def ui(served: Served) -> Served:
    served.auth.failures = FailedLogins(limit=3)  # each test starts with a clean record
    return served


def log_in(ui: Served, token: str = TOKEN, next_path: str = "/") -> Reply:
    return ui.get("/login", **form(token=token, next=next_path))


def session_headers(ui: Served) -> tuple[dict[str, str], str]:
    """A logged-in browser's Cookie header, and the CSRF token its pages carry."""
    cookie = cookie_of(log_in(ui))
    page = ui.get("/", headers={"Cookie": cookie}).text()
    found = re.search(r'<meta name="hpo-csrf" content="([^"]+)">', page)
    assert found, page
    return {"Cookie": cookie}, found.group(1)


def test_without_a_login_pages_redirect_to_it_and_the_api_answers_401(ui):
    optimizer = ui.filled.optimizer
    reply = ui.get(f"/optimizations/{optimizer}?top=5")
    assert reply.status == 303
    assert reply.headers["location"] == f"/login?next=/optimizations/{optimizer}%3Ftop%3D5"
    for path, method in ((f"/api/optimizations/{optimizer}", "GET"),
                         (f"/api/tasks/{ui.filled.running}/stop", "POST")):
        reply = ui.get(path, method=method, data=b"{}" if method == "POST" else None,
                       headers={"Content-Type": "application/json"})
        assert reply.status == 401, path
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.json()["error"] == "Login required"
    assert ui.store.get_task(ui.filled.running).stop_requested is False
    # What needs no login: the login page, the static files (no data), the health check.
    assert ui.get("/login").status == 200
    assert ui.get("/static/style.css").status == 200
    reply = ui.get("/healthz", headers={"Host": "10.9.8.7:80"})  # a probe's Host
    assert reply.status == 200 and reply.text() == "ok\n"


def test_a_wrong_token_is_refused_and_logged_without_the_token(ui, caplog):
    with caplog.at_level(logging.INFO, logger="hpo.ui"):
        reply = log_in(ui, token="wrong-" + TOKEN)
    assert reply.status == 403 and "Wrong token." in reply.text()
    assert "set-cookie" not in reply.headers
    assert "failed login from 127.0.0.1 (wrong token; 1 in the last" in caplog.text
    assert "wrong-" not in caplog.text and TOKEN not in caplog.text


def test_the_right_token_sets_a_strict_httponly_cookie_and_goes_back(ui, caplog):
    with caplog.at_level(logging.INFO, logger="hpo.ui"):
        reply = log_in(ui, next_path=f"/tasks/{ui.filled.running}")
    assert reply.status == 303 and reply.headers["location"] == f"/tasks/{ui.filled.running}"
    flags = [part.strip().lower() for part in reply.headers["set-cookie"].split(";")]
    assert flags[0].startswith("hpo_session=")
    assert {"httponly", "samesite=strict", "path=/", "max-age=43200"} <= set(flags)
    assert "secure" not in flags  # over plain http a Secure cookie would never return
    assert "login from 127.0.0.1" in caplog.text and TOKEN not in caplog.text
    # Pages and the API work with the cookie; the page carries a logout form.
    cookie = {"Cookie": cookie_of(reply)}
    page = ui.get(f"/optimizations/{ui.filled.optimizer}", headers=cookie)
    assert page.status == 200 and 'action="/logout"' in page.text()
    assert page.headers["cache-control"] == "private, no-cache"  # no proxy keeps it
    api = ui.get(f"/api/optimizations/{ui.filled.optimizer}", headers=cookie)
    assert api.status == 200 and api.json()["summary"]["status"] == "running"
    # A next that leads elsewhere leads home.
    assert log_in(ui, next_path="//evil.example/").headers["location"] == "/"


def test_the_cookie_is_secure_behind_a_proxy_that_says_https(ui):
    # uvicorn believes X-Forwarded-Proto from $FORWARDED_ALLOW_IPS (loopback by default).
    reply = ui.get("/login", **{**form(token=TOKEN, next="/"), "headers": {
        "Content-Type": "application/x-www-form-urlencoded", "X-Forwarded-Proto": "https"}})
    assert reply.status == 303 and "; secure" in reply.headers["set-cookie"].lower()


def test_a_cross_site_post_with_the_cookie_but_no_csrf_token_is_refused(ui):
    cookie, csrf = session_headers(ui)
    stop = f"/api/tasks/{ui.filled.running}/stop"
    json_post = {"method": "POST", "data": b"{}"}
    # What a forged request could carry: the cookie, without or with a wrong CSRF token.
    for extra in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": ""}):
        reply = ui.get(stop, **json_post, headers={
            **cookie, **extra, "Content-Type": "application/json"})
        assert reply.status == 403, extra
        assert "X-CSRF-Token" in reply.json()["message"]
    # The right token, from a page of another site or a sandboxed frame (Origin):
    # refused as well.
    port = ui.url.rsplit(":", 1)[1]
    for origin in ("https://evil.example", "null", f"http://127.0.0.1.evil.example:{port}"):
        reply = ui.get(stop, **json_post, headers={
            **cookie, "X-CSRF-Token": csrf, "Content-Type": "application/json",
            "Origin": origin})
        assert reply.status == 403, origin
    assert ui.store.get_task(ui.filled.running).stop_requested is False
    # From the page itself: the stop goes through.
    reply = ui.get(stop, **json_post, headers={
        **cookie, "X-CSRF-Token": csrf, "Content-Type": "application/json",
        "Origin": f"http://127.0.0.1:{port}"})
    assert reply.status == 200 and reply.json()["stop_requested"] is True
    assert ui.store.get_task(ui.filled.running).stop_requested is True


def test_behind_a_proxy_a_login_from_its_name_is_same_origin(ui):
    # A proxy that forwards to 127.0.0.1 with its own Host: the browser's Origin names
    # the proxy, which --allowed-host names too.
    def login_from(origin: str) -> Reply:
        return ui.get("/login", **{**form(token=TOKEN, next="/"), "headers": {
            "Content-Type": "application/x-www-form-urlencoded", "Origin": origin}})

    assert login_from(f"https://{PROXY_NAME}").status == 303
    assert login_from(f"https://{PROXY_NAME}.evil.example").status == 403
    assert login_from("https://evil.example").status == 403


def test_a_script_sends_the_token_as_a_bearer(ui):
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    reply = ui.get(f"/api/tasks/{ui.filled.completed[0]}", headers=bearer)
    assert reply.status == 200 and reply.json()["task"]["status"] == "completed"
    assert ui.get("/", headers=bearer).status == 200
    # A POST by bearer needs no CSRF token: no browser sends that header by itself.
    reply = ui.get(f"/api/tasks/{ui.filled.queued}/stop", method="POST", data=b"{}",
                   headers={**bearer, "Content-Type": "application/json"})
    assert reply.status == 200 and reply.json()["status"] == "stopped"
    assert ui.store.get_task(ui.filled.queued).status is Status.stopped
    for wrong in (f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer", f"bearer  {TOKEN[:-1]}"):
        reply = ui.get(f"/api/tasks/{ui.filled.completed[0]}", headers={
            "Authorization": wrong})
        assert reply.status == 401, wrong
        assert "invalid_token" in reply.headers["www-authenticate"]
        ui.auth.failures = FailedLogins(limit=3)


def test_failed_logins_are_limited_per_client(ui):
    for _ in range(3):
        assert log_in(ui, token="guess-" + TOKEN).status == 403
    # Locked out: even the right token waits (else the limit would not slow guessing).
    for reply in (log_in(ui), ui.get("/api/tasks/abcd1234", headers={
            "Authorization": f"Bearer {TOKEN}"})):
        assert reply.status == 429
        assert 0 < int(reply.headers["retry-after"]) <= 300


def test_logout_ends_the_session(ui):
    cookie, csrf = session_headers(ui)
    # Without its CSRF token (a forged logout): refused.
    assert ui.get("/logout", **form(csrf="forged")).status == 303  # no session: nothing to end
    refused = ui.get("/logout", method="POST", data=b"csrf=forged", headers={
        **cookie, "Content-Type": "application/x-www-form-urlencoded"})
    assert refused.status == 403
    assert ui.get("/", headers=cookie).status == 200
    reply = ui.get("/logout", method="POST", data=f"csrf={csrf}".encode(), headers={
        **cookie, "Content-Type": "application/x-www-form-urlencoded"})
    assert reply.status == 303 and reply.headers["location"] == "/login"
    assert "max-age=0" in reply.headers["set-cookie"].lower()
    # The old cookie no longer opens anything.
    assert ui.get("/", headers=cookie).status == 303


def test_a_forged_cookie_is_no_login(ui):
    cookie, _ = session_headers(ui)
    name, value = cookie["Cookie"].split("=", 1)
    forged = f"{name}={value[:-2]}AA"
    assert ui.get("/", headers={"Cookie": forged}).status == 303
    assert ui.get("/api/tasks/abcd1234", headers={"Cookie": forged}).status == 401


def test_other_host_names_are_refused_before_any_login(ui):
    assert ui.get("/login", headers={"Host": "attacker.example"}).status == 400


# ----- the command line ---------------------------------------------------------------------


def run_ui(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hpo.cli.main", "ui", *args],
                          capture_output=True, text=True, timeout=30, check=False, env=env)


def test_serving_other_machines_without_a_token_is_refused_in_one_line(tmp_path):
    result = run_ui("--host", "0.0.0.0", "--port", "0", "--store",
                    f"sqlite:///{tmp_path / 'store.db'}")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    for text in ("--host 0.0.0.0", "HPO_UI_TOKEN", "--token-file", MAKE_ONE):
        assert text in result.stderr, text


def test_the_token_is_never_taken_on_the_command_line(tmp_path):
    for args in (["--token", TOKEN], [f"--token={TOKEN}"]):
        result = run_ui(*args, "--store", f"sqlite:///{tmp_path / 'store.db'}")
        assert result.returncode == 2, args
        assert TOKEN not in result.stderr + result.stdout, args
        assert "ps" in result.stderr and "HPO_UI_TOKEN" in result.stderr, args
    help_text = run_ui("--help").stdout
    assert "never taken on the command line" in " ".join(help_text.split())
    assert "/healthz" in help_text


def test_a_real_server_on_every_address_requires_the_token(tmp_path, monkeypatch):
    token_file = tmp_path / "ui-token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.setenv("HPO_UI_TOKEN_FILE", str(token_file))
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    filled = fill_store(store, url)
    server = start_ui(url, tmp_path / "ui.log", "--host", "0.0.0.0")
    try:
        assert "login required" in server.output()
        api = f"{server.url}/api/optimizations/{filled.optimizer}"
        assert call(api).status == 401
        assert call(f"{server.url}/").status == 303
        assert call(api, headers={"Authorization": "Bearer wrong-token-0123456789"}
                    ).status == 401
        reply = call(api, headers={"Authorization": f"Bearer {TOKEN}"})
        assert reply.status == 200
        assert reply.json()["summary"]["id"] == filled.optimizer
        assert call(f"{server.url}/healthz").status == 200
        # The machine's own name is answered (what a colleague types).
        port = server.url.rsplit(":", 1)[1]
        reply = call(api, headers={"Authorization": f"Bearer {TOKEN}",
                                   "Host": f"{socket.gethostname()}:{port}"})
        assert reply.status == 200
        assert call(api, headers={"Authorization": f"Bearer {TOKEN}",
                                  "Host": "attacker.example"}).status == 400
        # The failure was logged, the token never.
        output = server.output()
        assert "failed login from" in output and TOKEN not in output
    finally:
        stop_ui(server.proc)
        store.close()
