"""Messages between an agent and its warm process: a 4-byte length, then JSON, on a
private Unix stream socket; file descriptors travel with a message's first bytes
(SCM_RIGHTS), which the receiver takes with the length."""

from __future__ import annotations

import json
import socket
import struct

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every warm slot
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

_HEADER = struct.Struct("!I")
_MAX_FDS = 8


class Closed(Exception):
    """The other end closed the socket (its process ended)."""


def send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    body = json.dumps(message).encode()
    data = _HEADER.pack(len(body)) + body
    sent = socket.send_fds(sock, [data], list(fds)) if fds else sock.send(data)
    if sent < len(data):
        sock.sendall(data[sent:])


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The next message and the descriptors that came with it; raises Closed at EOF."""
    header, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, _MAX_FDS)
    if not header:
        raise Closed()
    header += _exactly(sock, _HEADER.size - len(header))
    (length,) = _HEADER.unpack(header)
    return json.loads(_exactly(sock, length)), fds


def _exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise Closed()
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
