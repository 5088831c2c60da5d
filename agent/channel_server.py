"""The agent's end of the report channel (see ``hpo.sdk.channel``): one per slot.

One Unix socket and one thread serve every task a slot runs, one after another: the
thread accepts and reads every connection with a selector, so nothing is set up or torn
down per task, and no reader thread can be waited for before it started. Each connection
belongs to the route (task, attempt, where its lines go) that was open when it was
accepted; its first line may be a hello naming the task and attempt it reports for, and
one that names another (a previous task's straggler) is cut off, never let into the
current task's record.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo.sdk import channel

log = logging.getLogger("hpo.agent")

# One JSON line longer than this is a broken client, not a report.
_MAX_LINE = 1 << 20
_READ_SIZE = 64 * 1024


@dataclass(eq=False)
class _Route:
    """Where one run's lines go, and the connections that carry them."""

    task_id: str
    attempt: int
    on_message: Callable[[dict[str, Any]], None]
    open: set[socket.socket] = field(default_factory=set)
    ended: threading.Event = field(default_factory=threading.Event)  # no connection open
    closing: bool = False  # the run ended: its last connection to close ends the route


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    route: _Route | None
    buffer: bytearray = field(default_factory=bytearray)
    greeted: bool = False  # its first line was read


class ChannelServer:
    """Listens on a Unix socket in a private temporary folder for a slot's whole life.
    ``open_route`` before a run's script starts, ``end_route`` once it has exited;
    every JSON line of the run's connections goes to its ``on_message``. Bad lines are
    counted (``bad_lines``) and skipped."""

    def __init__(self) -> None:
        # A short path: Unix socket paths are limited to about 100 characters.
        self._dir = tempfile.mkdtemp(prefix="hpo-")
        self.path = os.path.join(self._dir, "r.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(self.path)
        self._listener.listen(socket.SOMAXCONN)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._route: _Route | None = None
        self._drain: list[_Route] = []  # routes whose run ended: accept what is pending
        self._closed = False
        self.bad_lines = 0
        self.refused = 0  # connections of another task or attempt, cut off
        self._thread = threading.Thread(target=self._loop, name="hpo-channel", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"unix:{self.path}"

    @property
    def folder(self) -> Path:
        """The slot's private folder (the task spec is written there)."""
        return Path(self._dir)

    def open_route(self, task_id: str, attempt: int,
                   on_message: Callable[[dict[str, Any]], None]) -> None:
        """Lines from connections accepted from now on go to ``on_message``."""
        with self._lock:
            self._route = _Route(task_id, attempt, on_message)

    def end_route(self, timeout: float = 2.0) -> None:
        """The run's script has exited: read what its connections still hold (those
        still waiting to be accepted too), up to ``timeout`` for the last lines, then
        cut off any left open (a descendant that kept the socket)."""
        with self._lock:
            route, self._route = self._route, None
            if route is None:
                return
            route.closing = True
            self._drain.append(route)
        self._wake()
        if not route.ended.wait(timeout):
            with self._lock:
                left = list(route.open)
            for sock in left:
                self._cut(sock)
            self._wake()
            route.ended.wait(timeout)

    def close(self) -> None:
        """Stop serving: every connection is cut, the socket and its folder removed."""
        with self._lock:
            self._closed = True
        self._wake()
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)
        shutil.rmtree(self._dir, ignore_errors=True)

    # ----- the serving thread -------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    if self._closed:
                        break
                for key, _events in self._selector.select():
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._on_wake()
                    else:
                        self._read(key.data)
        finally:
            for key in list(self._selector.get_map().values()):
                key.fileobj.close()  # type: ignore[union-attr]
            self._selector.close()
            self._wake_w.close()
            with self._lock:
                routes = [r for r in (self._route, *self._drain) if r is not None]
            for route in routes:
                route.ended.set()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # closed, or its buffer is full: the loop wakes anyway
            pass

    def _on_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        # A run that ended: its script may have connected (and written, and exited)
        # without the connection being accepted yet. The ended runs are taken first,
        # then what waits is accepted: each of them ended after its script's connects,
        # so those are accepted before the run is judged.
        with self._lock:
            draining, self._drain = self._drain, []
        self._accept(draining[-1] if draining else None)
        for route in draining:
            self._settle(route)

    def _accept(self, ended: _Route | None = None) -> None:
        """Take every waiting connection, for the open run (else ``ended``, the run
        that just ended: its script connected before it exited)."""
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            with self._lock:
                # Between a run's end and its drain, its script's connections are its.
                # The newest first: a run may end while an earlier end is drained.
                route = self._route or (self._drain[-1] if self._drain else None) or ended
                if route is not None:
                    route.open.add(sock)
            self._selector.register(sock, selectors.EVENT_READ, _Connection(sock, route))

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if conn.buffer:
                self._line(conn, bytes(conn.buffer))
            self._drop(conn)
            return
        conn.buffer += data
        while True:
            end = conn.buffer.find(b"\n")
            if end < 0:
                if len(conn.buffer) > _MAX_LINE:  # a line without end: a broken client
                    self.bad_lines += 1
                    self._drop(conn)
                return
            line = bytes(conn.buffer[:end + 1])
            del conn.buffer[:end + 1]
            if not self._line(conn, line):
                self._drop(conn)
                return

    def _line(self, conn: _Connection, line: bytes) -> bool:
        """Hand one line on; False when the connection is to be cut off."""
        if len(line) > _MAX_LINE:
            self.bad_lines += 1
            return True
        try:
            message = channel.decode(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            self.bad_lines += 1
            return True
        first, conn.greeted = not conn.greeted, True
        route = conn.route
        if message.get("kind") == channel.HELLO:
            if not first or route is None or message.get("task") != route.task_id \
                    or message.get("attempt") != route.attempt:
                self.refused += 1
                return False
            return True
        if route is None:
            self.refused += 1
            return False
        try:
            route.on_message(message)
        except Exception:  # one run's bug must not end the thread that serves the slot
            log.exception("task %s: a report could not be taken", route.task_id)
        return True

    def _drop(self, conn: _Connection) -> None:
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        if conn.route is not None:
            with self._lock:
                conn.route.open.discard(conn.sock)
            self._settle(conn.route)

    def _settle(self, route: _Route) -> None:
        """End ``route`` once its run has ended and none of its connections is open; not
        while its accept sweep is still due (``_on_wake``): a connection still in the
        backlog would be missed."""
        with self._lock:
            done = route.closing and not route.open and route not in self._drain
        if done:
            route.ended.set()

    def _cut(self, sock: socket.socket) -> None:
        """Make a connection read as ended (the loop then drops it)."""
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass
