"""The local report channel between a task's script and the agent that runs it.

Standard library only: the script's side must import in milliseconds. The agent listens
on a Unix socket (``unix:/path``) or on loopback TCP (``tcp:127.0.0.1:PORT``) and puts the
address in ``HPO_REPORT_ADDR``; the script sends one JSON object per line:

    {"kind": "scalar", "title": ..., "series": ..., "iteration": 3, "value": 0.9, "time": ...}
    {"kind": "params", "values": {"General/lr": 0.1}}
    {"kind": "log", "text": "a line for the log, not printed"}
    {"kind": "report", "report": {...}}: hpo.store.Report's fields (a plot, a table, an
        image whose file the script wrote under the artifact root)
    {"kind": "artifact", "artifact": {...}}: hpo.store.ArtifactEntry's fields
    {"kind": "task", "fields": {"name": ..., "tags": [...], "add_tags": [...], "comment": ...}}

A connection's first line is a hello, ``{"kind": "hello", "task": ID, "attempt": N}``: the
agent serves a slot's tasks one after another on one socket, and cuts off a connection
that names another task or attempt (a straggler of an earlier run).

``HPO_TASK_ID`` names the task and ``HPO_TASK_SPEC`` is a JSON file with its id, project,
name and parameters, written by the agent before the script starts (the variables' names
are in ``hpo.defaults``).
"""

from __future__ import annotations

import json

from hpo.defaults import CHANNEL_CONNECT_TIMEOUT_S

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
    import socket
    from typing import Any


HELLO = "hello"


def hello(task_id: str, attempt: int) -> bytes:
    """The line that opens a connection (see the module's docstring)."""
    return encode({"kind": HELLO, "task": task_id, "attempt": attempt})


def encode(message: dict[str, Any]) -> bytes:
    # allow_nan: a NaN report must reach the store as a NaN (the job then counts as failed).
    return json.dumps(message, separators=(",", ":"), allow_nan=True).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict) or "kind" not in message:
        raise ValueError("a report must be a JSON object with a 'kind'")
    return message


def connect(address: str, timeout: float = CHANNEL_CONNECT_TIMEOUT_S) -> socket.socket:
    """A connected socket to ``unix:/path`` or ``tcp:HOST:PORT``."""
    import socket  # here, not at the top: most scripts never open the channel

    scheme, _, rest = address.partition(":")
    if scheme == "unix":
        import time

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock.connect(rest)
                break
            except BlockingIOError:
                # The agent's backlog is full for a moment (a Unix socket says so at
                # once, even with a timeout): wait for room, up to the timeout.
                if time.monotonic() >= deadline:
                    sock.close()
                    raise
                time.sleep(0.001)
    elif scheme == "tcp":
        host, _, port = rest.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    else:
        raise ValueError(f"unknown report channel address {address!r}")
    sock.settimeout(None)
    return sock
