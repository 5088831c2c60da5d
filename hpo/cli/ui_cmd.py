"""``hpo ui``: serve the web view of the store (optimizations, tasks, agents, queues).

starlette, uvicorn and plotly are imported by the handler only: the rest of ``hpo``
never pays for them."""

from __future__ import annotations

import argparse
import errno
import socket
from typing import Any

from hpo.cli import common
from hpo.cli.common import add_store_option
from hpo.errors import ConfigError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def register(commands: Any) -> None:
    p = commands.add_parser(
        "ui", help="serve the web view: optimizations, plots, tasks, agents",
        description="Serve a small web app on the store: the optimizations with their "
        "status and best value; one optimization's best jobs and plots, updating while it "
        "runs; a task's parameters, scalars, log and machine monitor; the agents and the "
        "queue lengths. Read-only, except the stop buttons of an optimization and a task. "
        "Everything (plotly.js included) is served by this process: nothing is fetched "
        "from a network. Ctrl-C stops it.")
    add_store_option(p)
    p.add_argument("--port", type=common.port, default=8080,
                   help="TCP port (default: 8080; 0 picks a free one, printed at start)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; "
                   "0.0.0.0 serves every network the machine is on, without any login)")
    p.set_defaults(handler=cmd_ui)


def listen(host: str, port: int) -> socket.socket:
    """The bound listening socket; a port in use is one line, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is in use: pick another with "
                              "--port (0 picks a free one)") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def cmd_ui(args: argparse.Namespace) -> int:
    import uvicorn

    from hpo.store.engine import safe_url
    from hpo.ui.app import LOOPBACK_HOSTS, create_app

    store_url = common.store_url(args)
    sock = listen(args.host, args.port)
    port = sock.getsockname()[1]
    # A loopback-only server answers only to loopback names (no DNS rebinding).
    app = create_app(store_url,
                     allowed_hosts=LOOPBACK_HOSTS if args.host in LOOPBACK else None)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"hpo ui: serving {safe_url(store_url)} at http://{shown}:{port}/ "
          "(Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3,
                            access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        app.state.store.close()
    return 0
