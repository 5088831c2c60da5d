"""A TCP proxy between hpo's processes and a server, which a test can cut and restore.

Every process of a fault test reaches PostgreSQL, Redis or RabbitMQ through one of
these, so a cut is what a broken network is to all of them at once: live connections
end, and new ones are refused or hang, until ``restore()``.

One asyncio loop in a daemon thread owns every socket; ``cut()``, ``restore()`` and
``close()`` are called from any thread and return only once the loop has done the work,
so "after cut() returns, no byte gets through" holds without a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 64 * 1024
# Connecting to the real server is local: a second is long; past it the client is
# dropped as if the server were down.
UPSTREAM_CONNECT_TIMEOUT_S = 2.0


class CutMode(enum.Enum):
    """What a cut link does to a connection opened while it is cut."""

    # Accepted, then reset at once: a server that is down, a firewall that rejects.
    REFUSE = "refuse"
    # Accepted and never answered: a partition, a dropped route. The nastier case: the
    # client learns nothing until its own timeout (libpq's connect_timeout, a socket
    # timeout). Such connections are reset when the link is restored.
    BLACKHOLE = "blackhole"


class CutProxy:
    """Listens on 127.0.0.1:``port`` and forwards each connection to ``target``.

    ``cut(mode)``: every live connection is reset at once, and new ones are refused or
    black-holed until ``restore()``. ``url_port``: the port to put in a client's URL.
    A context manager: leaving it closes the listener and every connection and stops the
    loop's thread."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._mode: CutMode | None = None  # None: forwarding
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.accepted = 0  # connections accepted, in all modes (read for assertions)
        self.forwarded = 0  # of which were forwarded to the server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name=f"cut-proxy->{target_port}", daemon=True)
        self._thread.start()
        try:
            self._server = self._call(asyncio.start_server(
                self._on_client, "127.0.0.1", 0, reuse_address=True))
        except BaseException:
            self._stop_loop()
            raise
        self.port: int = self._server.sockets[0].getsockname()[1]
        self._closed = False

    # ----- the public side: any thread --------------------------------------------------

    @property
    def is_cut(self) -> bool:
        return self._mode is not None

    @property
    def live(self) -> int:
        """Connections being forwarded now."""
        return len(self._pairs)

    def cut(self, mode: CutMode = CutMode.REFUSE) -> int:
        """Reset every live connection and refuse or black-hole new ones until
        ``restore()``. Returns how many live connections were reset."""
        return self._call(self._cut(mode))

    def restore(self) -> None:
        """Forward new connections again; black-holed ones are reset, so their clients
        reconnect now rather than at their own timeout."""
        self._call(self._restore())

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._call(self._shutdown())
        finally:
            self._stop_loop()

    def __enter__(self) -> CutProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # ----- the loop's side ------------------------------------------------------------------

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _cut(self, mode: CutMode) -> int:
        self._mode = mode
        pairs = list(self._pairs)
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)
        self._pairs.clear()
        return len(pairs)

    async def _restore(self) -> None:
        self._mode = None
        for writer in self._held:
            _reset(writer)
        self._held.clear()

    async def _shutdown(self) -> None:
        self._server.close()
        await self._cut(CutMode.REFUSE)
        await self._restore()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _on_client(self, reader: asyncio.StreamReader,
                         client: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._mode is CutMode.REFUSE:
            _reset(client)
            return
        if self._mode is CutMode.BLACKHOLE:
            self._held.add(client)  # never read, never answered: see restore()
            return
        try:
            up_reader, upstream = await asyncio.wait_for(
                asyncio.open_connection(*self.target), UPSTREAM_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError):
            _reset(client)
            return
        if self._mode is not None:  # cut while we were connecting
            _reset(client)
            _reset(upstream)
            return
        self.forwarded += 1
        pair = (client, upstream)
        self._pairs.add(pair)
        pumps = [self._spawn(_pump(reader, upstream)), self._spawn(_pump(up_reader, client))]
        try:
            # One direction ending (EOF, reset) ends the connection: none of the
            # protocols proxied here half-closes.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            self._pairs.discard(pair)
            _reset(client)
            _reset(upstream)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a broken link or a killed server does:
    the peer's next read or write fails at once, and no socket lingers in TIME_WAIT."""
    transport = writer.transport
    if transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
