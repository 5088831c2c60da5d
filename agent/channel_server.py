"""The agent's end of a task's report channel (see ``hpo.sdk.channel``)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from hpo.sdk import channel

# One JSON line longer than this is a broken client, not a report.
_MAX_LINE = 1 << 20


class ChannelServer:
    """Listens on a Unix socket in a private temporary folder; every JSON line a client
    sends is handed to ``on_message``. Bad lines are counted and skipped."""

    def __init__(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        self._on_message = on_message
        # A short path: Unix socket paths are limited to about 100 characters.
        self._dir = tempfile.mkdtemp(prefix="hpo-")
        self.path = os.path.join(self._dir, "r.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(self.path)
        self._sock.listen(8)
        self._threads: list[threading.Thread] = []
        self._closed = False
        self.bad_lines = 0
        accept = threading.Thread(target=self._accept, name="hpo-channel", daemon=True)
        accept.start()

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            reader = threading.Thread(target=self._read, args=(conn,), daemon=True)
            self._threads.append(reader)
            reader.start()

    def _read(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                if len(line) > _MAX_LINE:
                    self.bad_lines += 1
                    continue
                try:
                    message = channel.decode(line)
                except ValueError:
                    self.bad_lines += 1
                    continue
                self._on_message(message)

    def close(self, timeout: float = 2.0) -> None:
        """Stop accepting and wait for clients' last lines (the script has exited)."""
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        for reader in self._threads:
            reader.join(timeout)
        shutil.rmtree(self._dir, ignore_errors=True)
