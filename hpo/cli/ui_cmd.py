"""``hpo ui``: serve the web view of the store (optimizations, tasks, agents, queues).

starlette, uvicorn and plotly are imported by the handler only: the rest of ``hpo``
never pays for them. The login rules are in hpo.ui.auth and hpo.ui.login; this module
decides whether one is required: with a token, always; without, only loopback serves."""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from typing import Any, NoReturn

from hpo.cli import common
from hpo.cli.common import add_store_option
from hpo.defaults import ENV_UI_ALLOWED_HOSTS, ENV_UI_TOKEN, ENV_UI_TOKEN_FILE
from hpo.errors import ConfigError

NEVER_ON_COMMAND_LINE = (f"the token is never taken on the command line (every user of the "
                         f"machine sees it in `ps`): set ${ENV_UI_TOKEN}, or put it in a "
                         f"file named by --token-file or ${ENV_UI_TOKEN_FILE}")


class _RefuseToken(argparse.Action):
    """``--token``: refused without echoing its value (argparse would print an unknown
    option's arguments, or take it as an abbreviation of --token-file)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> NoReturn:
        parser.error(NEVER_ON_COMMAND_LINE)


def register(commands: Any) -> None:
    p = commands.add_parser(
        "ui", help="serve the web view: optimizations, plots, tasks, agents",
        description="Serve a small web app on the store: the optimizations with their "
        "status and best value; one optimization's best jobs and plots, updating while it "
        "runs; a task's parameters, scalars, log and machine monitor; the agents and the "
        "queue lengths. Read-only, except the stop buttons of an optimization and a task. "
        "Everything (plotly.js included) is served by this process: nothing is fetched "
        "from a network. Ctrl-C stops it. "
        f"Beyond 127.0.0.1 a login is required: a token in ${ENV_UI_TOKEN} (or in a file: "
        f"--token-file, ${ENV_UI_TOKEN_FILE}); browsers log in at /login, scripts send "
        "'Authorization: Bearer TOKEN'. Make one with: "
        "python -c 'import secrets; print(secrets.token_urlsafe(32))'. "
        "GET /healthz answers 'ok' without a login, for health checks.",
        allow_abbrev=False)
    add_store_option(p)
    p.add_argument("--port", type=common.port, default=8080,
                   help="TCP port (default: 8080; 0 picks a free one, printed at start)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only, "
                   f"open without a token; 0.0.0.0 or :: serve every network the machine "
                   f"is on and refuse to start without ${ENV_UI_TOKEN} or --token-file)")
    p.add_argument("--token-file", metavar="PATH",
                   help="a file holding the login token (a Docker or Kubernetes secret); "
                   f"else ${ENV_UI_TOKEN}, else ${ENV_UI_TOKEN_FILE}. With a token a login "
                   f"is required on any address. T{NEVER_ON_COMMAND_LINE[1:]}")
    p.add_argument("--token", nargs="?", action=_RefuseToken, help=argparse.SUPPRESS)
    p.add_argument("--allowed-host", metavar="NAME", action="append", default=[],
                   help="also answer requests for this host name (repeatable; also "
                   f"${ENV_UI_ALLOWED_HOSTS}, comma-separated): the name users type when "
                   "it is not this machine's own, such as a proxy's or a DNS alias. "
                   "*.example.com takes its subdomains; * any name (only behind a proxy "
                   "that checks names itself). Loopback names are always answered, and "
                   "beyond loopback the machine's names and addresses")
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


def login_token(args: argparse.Namespace) -> str | None:
    """The token (hpo.ui.auth.resolve_token); None only where that is allowed, on
    loopback. A server others can reach without one is refused before it listens."""
    from hpo.ui.auth import MAKE_ONE, resolve_token
    from hpo.ui.hosts import is_loopback

    found = resolve_token(args.token_file)
    if found is None and not is_loopback(args.host):
        raise ConfigError(f"--host {args.host} lets other machines in, so a login is "
                          f"required: set ${ENV_UI_TOKEN} (or --token-file PATH, "
                          f"${ENV_UI_TOKEN_FILE}) to a token made with: {MAKE_ONE}")
    return found[0] if found else None


def _log_to_stderr() -> None:
    """Logins and failed logins, one line each on stderr (uvicorn's access log is off:
    the pages poll every 2 s)."""
    log = logging.getLogger("hpo.ui")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hpo ui: %(asctime)s %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def cmd_ui(args: argparse.Namespace) -> int:
    import uvicorn

    from hpo.store.engine import safe_url
    from hpo.ui.app import create_app
    from hpo.ui.auth import Auth
    from hpo.ui.hosts import answered_hosts

    store_url = common.store_url(args)
    token = login_token(args)
    allowed_hosts = answered_hosts(args.host, args.allowed_host)
    sock = listen(args.host, args.port)
    port = sock.getsockname()[1]
    app = create_app(store_url, allowed_hosts=allowed_hosts,
                     auth=Auth(token) if token else None)
    _log_to_stderr()
    shown = f"[{args.host}]" if ":" in args.host else args.host
    login = "login required" if token else "no login: this machine only"
    print(f"hpo ui: serving {safe_url(store_url)} at http://{shown}:{port}/ "
          f"({login}; Ctrl-C to stop)", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3,
                            access_log=False)
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        app.state.store.close()
    if server.started and server.should_exit:
        # Stopped by Ctrl-C: uvicorn raises it again once shut down, but asyncio's
        # runner may take it as a cancel of a task that has already returned, and then
        # the command ended 0; every hpo command ends 130 after Ctrl-C.
        raise KeyboardInterrupt
    return 0
