"""Private Redis and PostgreSQL servers listening on one address only (the test bridge's),
with their default ports and their default network settings: what an agent on another
host meets. Each is a context manager that stops its server and removes its files.

PostgreSQL is a cluster of its own (``initdb``, about 2 s, then ``pg_ctl start``), not
the machine's server reached through a forwarder: a forwarder would answer the TCP
handshake itself and keep its own connection to the server alive through a cut, so the
server would never see the silence a real client's server sees. Only the settings that
make it quick are changed (no fsync), none of the network ones: the server keeps the
system's TCP keepalive defaults, as a packaged server does.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 30.0


def postgres_bin() -> Path | None:
    """The newest folder that holds initdb, pg_ctl and postgres (Debian keeps them off
    PATH, under /usr/lib/postgresql/<version>/bin)."""
    def version(folder: str) -> float:
        try:
            return float(Path(folder).parent.name)
        except ValueError:
            return 0.0
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(folder) / tool, os.X_OK)
               for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(folder)
    return None


def missing() -> str | None:
    """What a private server needs and this machine lacks (None: nothing)."""
    if not Path(REDIS_SERVER).is_file():
        return f"redis-server ({REDIS_SERVER})"
    if postgres_bin() is None:
        return "PostgreSQL's initdb and pg_ctl (/usr/lib/postgresql/*/bin)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "a `postgres` user to run a private PostgreSQL cluster (it refuses root)"
    return None


class BridgeRedis:
    """``redis-server`` on ``ip``:6379, no persistence; ``url`` to reach it."""

    def __init__(self, folder: Path, ip: str, port: int = 6379) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://{ip}:{port}/0"
        self.log = folder / "redis.log"
        self._proc = subprocess.Popen(
            [REDIS_SERVER, "--bind", ip, "--port", str(port), "--protected-mode", "no",
             "--save", "", "--appendonly", "no", "--dir", str(folder),
             "--logfile", str(self.log), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(host=ip, port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            _wait_up("redis-server", self._proc, self.log, lambda: bool(client.ping()),
                     redis.RedisError)
        except BaseException:
            self.close()
            raise
        finally:
            client.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def __enter__(self) -> BridgeRedis:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class BridgePostgres:
    """A fresh PostgreSQL cluster listening on ``ip``:5432 only (its Unix socket in its
    own folder, so it never meets the machine's server), trust auth for the bridge's
    subnet; ``url`` names its ``postgres`` database."""

    def __init__(self, ip: str, subnet: str, port: int = 5432) -> None:
        folder = postgres_bin()
        assert folder is not None, missing()
        self._bin = folder
        account = pwd.getpwnam("postgres")
        self._user = (account.pw_uid, account.pw_gid)
        # Under /tmp, not pytest's tmp_path: the server runs as `postgres`, which cannot
        # enter root's 0700 folders; and a short path keeps the socket's under 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="hpo-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.url = f"postgresql+psycopg://postgres@{ip}:{port}/postgres"
        self._started = False
        try:
            os.chown(self.root, *self._user)
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                      "--no-sync", "--no-instructions")
            with (self.data / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {subnet} trust\n")
            options = (f"-c listen_addresses={ip} -c port={port} "
                       f"-c unix_socket_directories={self.root} -c fsync=off "
                       "-c synchronous_commit=off -c full_page_writes=off")
            self._started = True
            self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                      "-w", "-t", str(int(START_TIMEOUT_S)), "start")
            engine = create_engine(self.url)
            try:
                _wait_up("postgres", None, self.log,
                         lambda: _answers(engine), OperationalError)
            finally:
                engine.dispose()
        except BaseException:
            self.close()
            raise

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run([str(self._bin / tool), *args], user=self._user[0],
                              group=self._user[1], cwd=self.root, capture_output=True,
                              text=True, timeout=START_TIMEOUT_S + 10)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): "
                               f"{done.stderr.strip() or done.stdout.strip()}")

    def close(self) -> None:
        """Stop the server at once (``-m immediate``; SIGKILL should that fail) and
        remove the cluster."""
        if self._started:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    pid = int((self.data / "postmaster.pid").read_text().split()[0])
                    os.kill(pid, signal.SIGKILL)
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> BridgePostgres:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _answers(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1")).scalar() == 1


def _wait_up(what: str, proc: subprocess.Popen[bytes] | None, log: Path,
             probe: Callable[[], bool], errors: type[BaseException]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}: see {log}")
        with contextlib.suppress(errors):
            if probe():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within {START_TIMEOUT_S}s: see {log}")
        time.sleep(0.05)
