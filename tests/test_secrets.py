"""Store and broker passwords: where a URL may come from (a flag, a file, the
environment) and which source wins, that no message shows a password, and that an
agent keeps them off every command line and out of its scripts' environment unless it
runs with --pass-credentials. End to end on PostgreSQL and on a Redis of our own that
requires a password."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

import hpo.agent.cli as agent_cli
import hpo.cli.main as hpo_cli
import hpo.controller.cli as controller_cli
from hpo import defaults, limits
from hpo.agent.script_env import script_environment
from hpo.cli import common
from hpo.errors import ConfigError
from hpo.lifecycle import Status
from hpo.queue import dispatch
from hpo.queue.app import make_app
from hpo.records import ScriptInfo
from hpo.settings import STORE, Settings
from hpo.store import Store, open_store
from hpo.store.engine import safe_url
from tests.agents import running_agent, wait_final, wait_for
from tests.conftest import missing_service

SECRET = f"s3cret-{uuid.uuid4().hex[:12]}"  # appears nowhere unless leaked
JOB = Path(__file__).parent / "scripts" / "secrets_job.py"
URL_VARIABLES = (defaults.ENV_STORE_URL, defaults.ENV_STORE_URL_FILE, defaults.ENV_BROKER_URL,
                 defaults.ENV_BROKER_URL_FILE, defaults.ENV_WITHHELD_URLS)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No URL variable from the outside; a private HPO_HOME (the default store's place)."""
    for name in URL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(defaults.ENV_HOME, str(tmp_path / "home"))
    return tmp_path


def url_file(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


# ----- where a URL comes from ---------------------------------------------------------------

SOURCES = ["flag", "flag file", "env", "env file"]


@pytest.mark.parametrize("given", [SOURCES[i:] for i in range(len(SOURCES))] + [[]],
                         ids=lambda g: "+".join(g) or "nothing")
def test_the_first_source_given_wins_flag_then_its_file_then_env_then_its_file(
        clean_env, monkeypatch, given):
    # Given the store URL in several places at once (but never a value and its own
    # file together: that is a mistake, tested below), each naming its source
    flag = file = None
    if "flag" in given:
        flag = "sqlite:///flag.db"
    elif "flag file" in given:
        file = url_file(clean_env, "flag.url", "sqlite:///flag-file.db")
    if "env" in given:
        monkeypatch.setenv(defaults.ENV_STORE_URL, "sqlite:///env.db")
    elif "env file" in given:
        monkeypatch.setenv(defaults.ENV_STORE_URL_FILE,
                           str(url_file(clean_env, "env.url", "sqlite:///env-file.db")))
    # When it is resolved
    url = Settings.load(store_url=flag, store_file=file).store_url
    # Then the first of flag, flag file, env, env file wins, else the default
    expected = {"flag": "sqlite:///flag.db", "flag file": "sqlite:///flag-file.db",
                "env": "sqlite:///env.db", "env file": "sqlite:///env-file.db"}
    assert url == (expected[given[0]] if given else
                   f"sqlite:///{clean_env / 'home' / 'hpo.db'}")


def test_a_url_file_is_read_with_surrounding_whitespace_stripped(clean_env, monkeypatch):
    path = url_file(clean_env, "broker.url", f"\n  redis://:{SECRET}@host:6379/0  \n\n")
    monkeypatch.setenv(defaults.ENV_BROKER_URL_FILE, str(path))
    assert Settings.load().broker_url == f"redis://:{SECRET}@host:6379/0"
    assert STORE.resolve(None, path) == (f"redis://:{SECRET}@host:6379/0",
                                         f"--store-file={path}")


def test_a_value_and_its_file_together_are_refused_naming_both(clean_env, monkeypatch):
    path = url_file(clean_env, "store.url", "sqlite:///a.db")
    with pytest.raises(ConfigError, match="--store and --store-file are both given"):
        _ = Settings.load(store_url="sqlite:///b.db", store_file=path).store_url
    monkeypatch.setenv(defaults.ENV_BROKER_URL, "redis://host")
    monkeypatch.setenv(defaults.ENV_BROKER_URL_FILE, str(path))
    with pytest.raises(ConfigError, match=r"\$HPO_BROKER_URL and \$HPO_BROKER_URL_FILE are "
                       "both set: unset one"):
        _ = Settings.load().broker_url
    # but a flag overrides both variables without asking which of them was meant
    assert Settings.load(broker_url="redis://flag").broker_url == "redis://flag"


@pytest.mark.parametrize("problem", ["missing", "empty", "folder", "binary", "huge"])
def test_a_url_file_that_gives_no_url_is_one_line_naming_its_path(clean_env, problem):
    path = clean_env / f"{problem}.url"
    if problem == "empty":
        path.write_text(" \n\t\n")
    elif problem == "folder":
        path.mkdir()
    elif problem == "binary":
        path.write_bytes(b"\xff\xfe" + SECRET.encode())
    elif problem == "huge":
        path.write_text("redis://" + "x" * 100_000)
    with pytest.raises(ConfigError) as raised:
        _ = Settings.load(store_file=path).store_url
    message = str(raised.value)
    assert f"--store-file={path}" in message and "\n" not in message
    assert SECRET not in message


# ----- passwords: found, never shown ---------------------------------------------------------

@pytest.mark.parametrize("url, password", [
    (f"postgresql+psycopg://hpo:{SECRET}@db:5432/hpo", SECRET),
    (f"redis://:{SECRET}@cache:6379/0", SECRET),
    (f"amqp://guest:{SECRET}@mq:5672//", SECRET),
    (f"postgresql+psycopg://hpo@db/hpo?sslmode=require&password={SECRET}", SECRET),
    ("postgresql+psycopg://hpo@db/hpo", None),
    ("redis://cache:6379/0", None),
    ("sqlite:////var/lib/hpo/hpo.db", None),
    ("sqla+sqlite:///broker.db", None),
    ("http://[::1", None),  # not a URL: nothing to find, no crash
])
def test_a_password_is_found_in_the_user_part_or_the_query(url, password):
    assert limits.url_password(url) == password
    assert SECRET not in limits.hide_password(url)


def test_a_bad_broker_url_from_a_file_is_named_by_its_file_not_its_password(clean_env):
    # Given a broker URL of no supported scheme, with a password, in a file
    path = url_file(clean_env, "broker.url", f"rediz://:{SECRET}@host/0")
    with pytest.raises(ConfigError) as raised:
        common.broker_from(argparse.Namespace(broker=None, broker_file=str(path)))
    # Then the message names the file and shows the URL without its password
    assert str(raised.value).startswith(f"--broker-file={path}: broker URL 'rediz://:***@")
    assert SECRET not in str(raised.value)


def run_main(prog: str, argv: list[str]) -> tuple[Any, str, str]:
    """A console script's main(argv) in this process: (exit code, stdout, stderr)."""
    main = {"hpo": hpo_cli.main, "hpo-agent": agent_cli.main,
            "hpo-controller": controller_cli.main}[prog]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.mark.postgres
def test_a_password_on_the_command_line_works_with_one_warning_line(
        clean_env, pg_url_with_password):
    open_store(pg_url_with_password).close()  # a store that exists: the command reads it
    code, out, err = run_main("hpo", ["--store", pg_url_with_password, "task", "list",
                                      "--json"])
    assert code == 0, err
    assert isinstance(json.loads(out), list)  # the session's database: others' tasks too
    assert err.count("\n") == 1, err
    assert err.startswith("hpo: warning: the password in --store is visible to other users")
    assert "--store-file" in err and SECRET not in err


@pytest.mark.parametrize("prog, argv, fragment", [
    ("hpo", ["task", "list", "--store", "sqlite:///a.db", "--store-file", "{file}"],
     "--store and --store-file are both given"),
    ("hpo", ["--store-file", "{missing}", "task", "list"],
     "--store-file={missing}: cannot read it"),
    ("hpo", ["task", "enqueue", "abcd", "--broker-file", "{missing}"],
     "--broker-file={missing}: cannot read it"),
    ("hpo", ["workers", "--reap", "--broker-file", "{file}"],
     "--broker-file={file}: broker URL 'sqlite:///"),
    ("hpo-agent", ["--store-file", "{missing}"], "--store-file={missing}: cannot read it"),
    ("hpo-agent", ["--broker", "redis://h", "--broker-file", "{file}"],
     "--broker and --broker-file are both given"),
    ("hpo-controller", ["list", "--store-file", "{missing}"],
     "--store-file={missing}: cannot read it"),
    ("hpo-controller", ["start", "x.yaml", "--broker-file", "{missing}"],
     "--broker-file={missing}: cannot read it"),
])
def test_bad_url_sources_are_one_line_and_exit_2(clean_env, prog, argv, fragment):
    file = url_file(clean_env, "store.url", f"sqlite:///{clean_env / 'x.db'}")
    missing = clean_env / "no-such.url"
    argv = [a.format(file=file, missing=missing) for a in argv]
    code, _out, err = run_main(prog, argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"{prog}: error: "), err
    assert fragment.format(file=file, missing=missing) in err


# ----- what a script gets ---------------------------------------------------------------------

AGENT_ENV = {
    "PATH": "/usr/bin", "HOME": "/home/hpo",
    defaults.ENV_STORE_URL: f"postgresql+psycopg://hpo:{SECRET}@db/hpo",
    defaults.ENV_BROKER_URL: "redis://cache:6379/0",
}


def test_a_script_gets_no_url_with_a_password_and_no_url_file():
    env = script_environment({**AGENT_ENV, defaults.ENV_BROKER_URL_FILE: "/run/secrets/b"},
                             keep_credentials=False)
    assert defaults.ENV_STORE_URL not in env
    assert defaults.ENV_BROKER_URL not in env and defaults.ENV_BROKER_URL_FILE not in env
    assert env[defaults.ENV_WITHHELD_URLS] == "HPO_STORE_URL,HPO_BROKER_URL"
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/hpo"
    assert SECRET not in json.dumps(env)


def test_a_script_gets_a_url_without_a_password():
    env = script_environment(AGENT_ENV, keep_credentials=False)
    assert env[defaults.ENV_BROKER_URL] == "redis://cache:6379/0"
    assert env[defaults.ENV_WITHHELD_URLS] == "HPO_STORE_URL"


def test_with_credentials_a_script_gets_everything_the_agent_has():
    base = {**AGENT_ENV, defaults.ENV_BROKER_URL_FILE: "/run/secrets/b"}
    base.pop(defaults.ENV_BROKER_URL)
    assert script_environment(base, keep_credentials=True) == base


def test_the_agents_own_urls_replace_its_environment_and_their_files():
    # Given an agent that read its URLs from files (--store-file, $HPO_BROKER_URL_FILE)
    base = {"PATH": "/usr/bin", defaults.ENV_STORE_URL_FILE: "/run/secrets/s",
            defaults.ENV_BROKER_URL_FILE: "/run/secrets/b",
            defaults.ENV_WITHHELD_URLS: "HPO_STORE_URL"}  # the agent's own agent's
    store, broker = "sqlite:////data/hpo.db", f"redis://:{SECRET}@cache/0"
    # Then with credentials its scripts get the URLs it uses, not the files
    kept = script_environment(base, keep_credentials=True, store_url=store,
                              broker_url=broker)
    assert kept == {"PATH": "/usr/bin", defaults.ENV_STORE_URL: store,
                    defaults.ENV_BROKER_URL: broker}
    # and without, the password-less store only
    plain = script_environment(base, keep_credentials=False, store_url=store,
                               broker_url=broker)
    assert plain == {"PATH": "/usr/bin", defaults.ENV_STORE_URL: store,
                     defaults.ENV_WITHHELD_URLS: "HPO_BROKER_URL"}
    assert base[defaults.ENV_STORE_URL_FILE] == "/run/secrets/s"  # base is left alone


def test_a_store_read_in_a_script_without_its_url_says_to_pass_credentials(
        clean_env, monkeypatch):
    # Given the environment an agent gives a script when the store URL has a password
    monkeypatch.setenv(defaults.ENV_WITHHELD_URLS, "HPO_STORE_URL")
    # Then opening the store fails naming the fix, rather than opening the default store
    with pytest.raises(ConfigError, match="start the agent with --pass-credentials"):
        open_store()
    assert not (clean_env / "home" / "hpo.db").exists()
    # while the broker, not withheld, still resolves (each URL is resolved when read)
    assert Settings.load().broker_url.startswith("sqla+sqlite:///")


# ----- end to end: an agent with passwords in its URLs ------------------------------------------

@pytest.fixture
def pg_url_with_password(pg_database_url: str) -> str:
    """The test database, with a password in the URL (trust auth accepts any)."""
    return make_url(pg_database_url).set(password=SECRET).render_as_string(
        hide_password=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[str]:
    """A redis-server of this test's own that requires SECRET (the shared one has no
    password, and refuses an AUTH): its URL."""
    server = shutil.which("redis-server")
    if server is None:
        missing_service("redis-server")
    port = free_port()
    proc = subprocess.Popen(
        [str(server), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    # The password goes in by the config command, not on redis-server's command line:
    # the secret must be on no command line at all for the scans below to mean anything.
    import redis

    try:
        client = redis.Redis(port=port, socket_timeout=2)
        wait_for("redis-server to answer",
                 lambda: proc.poll() is not None or _pings(client), timeout=20)
        assert proc.poll() is None, "redis-server exited at start"
        client.config_set("requirepass", SECRET)
        yield f"redis://:{SECRET}@127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def agent_env(tmp_path: Path, store_file: Path | None, broker_file: Path | None
              ) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in URL_VARIABLES and not k.startswith("HPO_TASK")}
    env.update({defaults.ENV_HOME: str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"})
    if store_file:
        env[defaults.ENV_STORE_URL_FILE] = str(store_file)
    if broker_file:
        env[defaults.ENV_BROKER_URL_FILE] = str(broker_file)
    return env


def run_job(store: Store, broker: str, tmp_path: Path, queue: str) -> tuple[str, Path]:
    out = tmp_path / "seen.json"
    script = ScriptInfo(entry_point=str(JOB), working_dir=str(tmp_path),
                        interpreter=sys.executable)
    template = store.create_task("secrets", "job", script=script,
                                 parameters={"General/out": str(out)})
    clone = store.clone_task(template.id, name="job")
    dispatch.enqueue(store, make_app(broker), clone.id, queue)
    return clone.id, out


def assert_completed_with_its_scalars(store: Store, task_id: str) -> None:
    task = wait_final(store, task_id, timeout=90)
    assert task.status is Status.completed, task.status_message
    values = [(s.iteration, s.value) for s in store.task_scalars(task_id, title="metric")]
    assert values == [(i, float(i)) for i in range(3)]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(180)
def test_an_agent_with_its_urls_in_files_keeps_the_passwords_off_command_lines_and_scripts(
        tmp_path, pg_url_with_password, redis_with_password):
    # Given the store and broker URLs, with passwords, in secret files named by the
    # environment (the Docker and Kubernetes way)
    store_file = url_file(tmp_path, "store.url", pg_url_with_password + "\n")
    broker_file = url_file(tmp_path, "broker.url", redis_with_password + "\n")
    env = agent_env(tmp_path, store_file, broker_file)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    store = open_store(pg_url_with_password)
    try:
        with running_agent(store, env, tmp_path, "--queue", queue) as agent:
            # When it runs a job that looks for them
            task_id, out = run_job(store, redis_with_password, tmp_path, queue)
            assert_completed_with_its_scalars(store, task_id)
        seen = json.loads(out.read_text())
        # Then the script's environment holds neither password, nor the files' paths
        assert SECRET not in json.dumps(seen["environ"])
        assert defaults.ENV_STORE_URL_FILE not in seen["environ"]
        assert seen["environ"][defaults.ENV_WITHHELD_URLS] == "HPO_STORE_URL,HPO_BROKER_URL"
        # and no process's command line holds it (the agent was running then)
        assert any(agent.name in line or "hpo.agent.cli" in line
                   for line in seen["command_lines"])
        assert not [line for line in seen["command_lines"] if SECRET in line]
        # and a store read in the script said what to do instead of opening another store
        assert "start the agent with --pass-credentials" in seen["store_read"]
        # and the agent's own log does not show it either, naming them masked
        assert SECRET not in agent.output()
        assert (f"uses store {safe_url(pg_url_with_password)} and broker "
                f"{limits.hide_password(redis_with_password)}") in agent.output()
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(180)
def test_with_pass_credentials_the_script_gets_the_urls_the_agent_read_from_its_flag_files(
        tmp_path, pg_url_with_password, redis_with_password):
    # Given an agent told its URLs by --store-file and --broker-file, with
    # --pass-credentials
    store_file = url_file(tmp_path, "store.url", pg_url_with_password)
    broker_file = url_file(tmp_path, "broker.url", redis_with_password)
    env = agent_env(tmp_path, None, None)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    store = open_store(pg_url_with_password)
    try:
        with running_agent(store, env, tmp_path, "--queue", queue, "--store-file",
                           str(store_file), "--broker-file", str(broker_file),
                           "--pass-credentials") as agent:
            task_id, out = run_job(store, redis_with_password, tmp_path, queue)
            assert_completed_with_its_scalars(store, task_id)
        seen = json.loads(out.read_text())
        # Then the script has the agent's URLs, passwords included, and can use them
        assert seen["environ"][defaults.ENV_STORE_URL] == pg_url_with_password
        assert seen["environ"][defaults.ENV_BROKER_URL] == redis_with_password
        assert defaults.ENV_WITHHELD_URLS not in seen["environ"]
        assert seen["store_read"] == task_id
        # but still on no command line
        assert not [line for line in seen["command_lines"] if SECRET in line]
        assert SECRET not in agent.output()
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(240)
def test_the_controllers_local_agents_get_the_urls_from_files_without_a_command_line(
        tmp_path, pg_url_with_password, redis_with_password):
    # Given hpo-controller with its URLs in secret files, starting its own agent
    store_file = url_file(tmp_path, "store.url", pg_url_with_password)
    broker_file = url_file(tmp_path, "broker.url", redis_with_password)
    env = agent_env(tmp_path, store_file, broker_file)
    out = tmp_path / "seen.json"
    config = tmp_path / "hpo.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "base_task": {"script": str(JOB), "project": "secrets", "name": "controller"},
        "hyper_parameters": [{"type": "discrete", "name": "out", "values": [str(out)]}],
        "objective": {"title": "metric", "series": "value", "sign": "max"},
        "total_max_jobs": 1}))
    # When it runs an optimization of one job
    result = subprocess.run(
        [sys.executable, "-m", "hpo.controller.cli", "start", str(config), "--local-agents",
         "1", "--plain"], env=env, capture_output=True, text=True, timeout=200, check=False)
    # Then the job ran on the store of the files, on an agent started without a URL on
    # its command line, with no password in its environment
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(out.read_text())
    assert any("hpo.agent.cli" in line for line in seen["command_lines"])
    assert not [line for line in seen["command_lines"] if SECRET in line]
    assert SECRET not in json.dumps(seen["environ"])
    assert SECRET not in result.stdout + result.stderr
    # and it said which store and broker it used, their passwords masked
    assert (f"store {safe_url(pg_url_with_password)}, broker "
            f"{limits.hide_password(redis_with_password)}") in result.stdout
    for log in (tmp_path / "home" / "logs").rglob("*.log"):
        assert SECRET not in log.read_text(errors="replace"), log
    store = open_store(pg_url_with_password)
    try:
        [job] = [t for t in store.find_tasks(project="secrets") if t.parent]
        assert_completed_with_its_scalars(store, job.id)
    finally:
        store.close()


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:s3c@h:6379/0", "redis://:***@h:6379/0"),
    ("postgresql+psycopg://u:p@h/db?x=1", "postgresql+psycopg://u:***@h/db?x=1"),
    ("amqp://guest:guest@h//", "amqp://guest:***@h//"),  # the password is the user name
    ("postgresql//u:pw@h/db", "postgresql//u:***@h/db"),  # mistyped: masked all the same
    ("postgresql://h/db?user=a&password=zz&x=1", "postgresql://h/db?user=a&password=***&x=1"),
    ("sqlite:////tmp/a:b@c.db", "sqlite:////tmp/a:b@c.db"),  # a path: nothing to hide
])
def test_a_password_is_masked_by_its_place_in_the_url(url: str, shown: str) -> None:
    assert limits.hide_password(url) == shown


def test_a_store_url_that_cannot_be_used_is_one_line_without_its_password() -> None:
    for url in ("postgresql//u:pw@h/db", "sqlite://u:pw@/x.db"):
        done = subprocess.run([sys.executable, "-m", "hpo.cli.main", "--store", url, "task",
                               "list"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "pw" not in done.stderr and "Traceback" not in done.stderr
        assert "bad store URL" in done.stderr
