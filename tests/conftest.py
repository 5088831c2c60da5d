"""Shared fixtures: a store on SQLite and on a real PostgreSQL, and a clean hpo home.

PostgreSQL is taken from TEST_PG_ADMIN_URL (default: postgres on 127.0.0.1:5432, trust
auth). Without a server the PostgreSQL cases skip on a laptop, but fail when CI is set:
a green CI run means they ran.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from hpo.store import Store, open_store, schema

# The strategy contract suite is a library module, not a test module: without this its
# failed asserts would show no values (call it before the module is first imported).
pytest.register_assert_rewrite("hpo.testing.strategy_contract")

PG_ADMIN_URL = os.environ.get(
    "TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
IN_CI = bool(os.environ.get("CI"))


def missing_service(what: str) -> None:
    """Skip on a laptop, fail in CI."""
    if IN_CI:
        pytest.fail(f"{what} is required when CI is set", pytrace=False)
    pytest.skip(f"{what} not available")


def kill_connections_of(database_url: str) -> int:
    """Terminate every server session on the store's database, as a restart would."""
    name = database_url.rsplit("/", 1)[-1]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            return len(conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name}).all())
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"hpo_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any failure to reach or use the server
        admin.dispose()
        missing_service(f"PostgreSQL at {PG_ADMIN_URL} ({str(exc).splitlines()[0]})")
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"))
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty store, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    url = request.getfixturevalue("pg_database_url")
    engine = create_engine(url)
    with engine.begin() as conn:
        existing = [t.name for t in schema.metadata.sorted_tables
                    if engine.dialect.has_table(conn, t.name)]
        if existing:
            conn.execute(text(f"TRUNCATE {', '.join(existing)} RESTART IDENTITY"))
    engine.dispose()
    yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def hpo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private HPO_HOME and store for this test, in os.environ and as a dict for
    subprocesses."""
    home = tmp_path / "hpo-home"
    monkeypatch.setenv("HPO_HOME", str(home))
    monkeypatch.setenv("HPO_STORE_URL", f"sqlite:///{home / 'hpo.db'}")
    for name in ("HPO_TASK_ID", "HPO_TASK_SPEC", "HPO_REPORT_ADDR"):
        monkeypatch.delenv(name, raising=False)
    return dict(os.environ)


@pytest.fixture(scope="session")
def python() -> str:
    return sys.executable


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.RedisError:
        return False


RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def rabbitmq_answers(url: str) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@pytest.fixture(params=["embedded", pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The embedded broker (a SQLite file), a real Redis and a real RabbitMQ."""
    if request.param == "embedded":
        return f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    return server_broker_url(request.param)


def server_broker_url(kind: str) -> str:
    """The URL of the real Redis (``redis``) or RabbitMQ (``rabbitmq``); skips (fails
    in CI) when it does not answer."""
    if kind == "rabbitmq":
        if not rabbitmq_answers(RABBITMQ_URL):
            missing_service(f"RabbitMQ at {RABBITMQ_URL}")
        return RABBITMQ_URL
    if not redis_answers(REDIS_URL):
        missing_service(f"Redis at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def queue_name() -> str:
    """A queue of this test's own, so tests sharing one Redis never see each other."""
    return f"q-{uuid.uuid4().hex[:10]}"


DIGITS_JOBS = 6


@pytest.fixture(scope="session")
def digits_optimization(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The digits example optimized end to end, once for every test that reads what it
    left: `hpo-controller start hpo.yaml --local-agents 2`, DIGITS_JOBS jobs, 2 at a time,
    on an embedded store and broker of its own that hold this one optimization only.

    ``env``: the environment for `hpo-controller` on that store; ``result``: the
    completed `start` (each test asserts it succeeded); ``id``: the optimizer task id.
    Tests only read the store: one that writes works on a copy (test_browser)."""
    from tests.test_controller_cli import ctl, digits_config, make_env

    tmp = tmp_path_factory.mktemp("digits")
    env = make_env(tmp / "home")
    config = digits_config(tmp / "cfg", total_max_jobs=DIGITS_JOBS)
    result = ctl(env, "start", str(config), "--local-agents", "2", timeout=240)
    lines = result.stdout.splitlines()
    return {"env": env, "result": result, "id": lines[0] if lines else None}
