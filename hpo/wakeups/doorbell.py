"""A doorbell on one host: Unix datagram sockets in a folder that belongs to a resource.

Each listener binds a socket of its own in the folder (a unique name, removed on close);
a ring sends one small datagram to every socket there, without blocking: a listener
whose buffer is full has wake-ups waiting already, and one woken once is enough. A
socket that refuses (its process died without removing it) is removed by the ringer.
The folder's listing is cached and read again only when the folder changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import Connection

from hpo.wakeups.base import Announcer, Listener, ListenerUnavailable, OnChange

log = logging.getLogger("hpo.wakeups")

_SUFFIX = ".sock"
# A payload is a hint (a task id, a queue name): a longer one is cut to this.
_MAX_PAYLOAD = 256
# A socket's path must fit sockaddr_un.sun_path: 108 bytes on Linux, 104 on macOS, the
# terminating NUL included; a folder whose sockets would not fit moves under the temp dir.
_SUN_PATH_MAX = 100
_LONGEST_NAME = "4294967295-" + "f" * 8 + _SUFFIX  # what _socket_name makes, at most
# Folder mtimes are as coarse as a second on some file systems: a listing taken less than
# this after the folder last changed may miss a socket bound in that same tick.
_MTIME_TICK_NS = 1_000_000_000


def bell_folder(resource: Path, suffix: str) -> Path:
    """Where the listeners of ``resource`` bind: ``<resource><suffix>`` beside it, or,
    when a socket's path there would be too long for a Unix socket, a short folder under
    the temp dir named by a hash of that path (every process computes the same one)."""
    resolved = Path(os.path.realpath(resource.expanduser()))
    beside = resolved.with_name(resolved.name + suffix)
    if len(os.fsencode(beside / _LONGEST_NAME)) <= _SUN_PATH_MAX:
        return beside
    digest = hashlib.sha256(os.fsencode(beside)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"hpo-bell-{digest}"


class Doorbell:
    """Rings the listeners of one folder; safe from any thread, never raises."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._targets: tuple[str, ...] = ()
        self._listed_mtime_ns: int | None = None
        self._listed_at_ns = 0

    def ring(self, payload: str) -> None:
        """A datagram with ``payload`` (a task id, a queue name) to every listener."""
        try:
            targets = self._listing()
            if not targets:
                return
            data = payload.encode("utf-8", "replace")[:_MAX_PAYLOAD] or b"*"
            sender = self._sender()
            for path in targets:
                self._send(sender, data, path)
        except Exception as exc:  # a wake-up is a hint: never the writer's failure
            log.debug("doorbell %s not rung: %s", self.folder, exc)

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None

    def _send(self, sender: socket.socket, data: bytes, path: str) -> None:
        try:
            sender.sendto(data, path)
        except BlockingIOError:
            pass  # its buffer is full: it has wake-ups to read already
        except ConnectionRefusedError:
            # No process holds it: its listener died without removing it.
            with contextlib.suppress(OSError):
                os.unlink(path)
            self._forget()
        except FileNotFoundError:
            self._forget()  # closed since the listing
        except OSError:
            pass  # closing (EPIPE), or not a socket of ours: not ours to judge

    def _listing(self) -> tuple[str, ...]:
        try:
            mtime_ns = os.stat(self.folder).st_mtime_ns
        except OSError:
            return ()  # no folder: no listener has ever bound here
        with self._lock:
            if mtime_ns == self._listed_mtime_ns and \
                    self._listed_at_ns - mtime_ns > _MTIME_TICK_NS:
                return self._targets
            listed_at = time.time_ns()
            try:
                with os.scandir(self.folder) as entries:
                    targets = tuple(e.path for e in entries if e.name.endswith(_SUFFIX))
            except OSError:
                targets = ()
            self._targets, self._listed_mtime_ns, self._listed_at_ns = (
                targets, mtime_ns, listed_at)
            return targets

    def _forget(self) -> None:
        with self._lock:
            self._listed_mtime_ns = None

    def _sender(self) -> socket.socket:
        with self._lock:
            if self._socket is None:
                sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sender.setblocking(False)
                self._socket = sender
            return self._socket


class DoorbellAnnouncer(Announcer):
    """A SQLite store's announcer: what a transaction announced is kept on its
    connection and rung once it has committed (a ring before the commit would wake a
    listener that reads the old rows)."""

    _KEY = "hpo_wakeups_announced"

    def __init__(self, doorbell: Doorbell) -> None:
        self.doorbell = doorbell

    def announce(self, conn: Connection, payload: str) -> None:
        conn.info.setdefault(self._KEY, set()).add(payload)

    def settle(self, conn: Connection, committed: bool) -> None:
        try:
            announced = conn.info.pop(self._KEY, None)
        except Exception:  # an invalidated connection: nothing of it committed
            return  # (and the write's own error, not this, is the one raised)
        if committed and announced:
            for payload in announced:
                self.doorbell.ring(payload)


class DoorbellListener(Listener):
    """A socket bound in ``folder`` (made if missing) and a thread that hands each
    datagram to ``on_change``. ListenerUnavailable when it cannot bind there."""

    def __init__(self, folder: Path, on_change: OnChange) -> None:
        self.folder = folder
        self._on_change = on_change
        self._closing = False
        try:
            folder.mkdir(parents=True, exist_ok=True)
            self.path = str(folder / _socket_name())
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                self._socket.bind(self.path)
            except OSError:
                self._socket.close()
                raise
        except OSError as exc:
            raise ListenerUnavailable(
                f"cannot listen in {folder}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._serve, name="hpo-doorbell",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # first: no ringer sends here any more
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the thread's recv
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)
        self._socket.close()

    def _serve(self) -> None:
        while True:
            try:
                data = self._socket.recv(_MAX_PAYLOAD)
            except OSError:
                return
            if self._closing:
                return
            try:
                self._on_change(data.decode("utf-8", "replace") or None)
            except Exception:  # the waiter's bug must not end its wake-ups
                log.exception("a doorbell listener's callback failed")


def _socket_name() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}"
