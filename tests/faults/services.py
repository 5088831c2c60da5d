"""A private Redis server that a test may kill and start again on the same port, with no
persistence: a restart loses every waiting message, as a Redis without RDB or AOF (or one
that was flushed, or failed over to an empty replica) does."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_S = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``redis-server`` on a free port of 127.0.0.1, in ``folder``; ``restart()`` kills it
    (SIGKILL: nothing is saved, and there is nothing to save) and starts a fresh one on the
    same port. A context manager: leaving it kills the server."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._start()

    @staticmethod
    def available() -> bool:
        return Path(REDIS_SERVER).is_file()

    def restart(self) -> None:
        self._kill()
        self._start()
        self.restarts += 1

    def close(self) -> None:
        self._kill()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        log = self.folder / "redis.log"
        self._proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.folder),
             "--logfile", str(log), "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        try:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"redis-server on port {self.port} exited "
                                       f"{self._proc.returncode}: see {log}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if time.monotonic() > deadline:
                    self._kill()
                    raise RuntimeError(f"redis-server on port {self.port} did not answer "
                                       f"within {START_TIMEOUT_S}s: see {log}")
                time.sleep(0.02)
        finally:
            client.close()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None
