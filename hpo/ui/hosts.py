"""Which addresses are loopback, and which Host header names ``hpo ui`` answers to.

The Host check stops DNS rebinding: a page on another site whose name is made to resolve
to this server would otherwise be same-origin with it. The names answered are those a
user types: the loopback names always (a health check, an SSH tunnel); beyond loopback
also the bind address (every address of the machine for 0.0.0.0 or ::), the machine's
host name and fully qualified name; and whatever ``--allowed-host`` or
``$HPO_UI_ALLOWED_HOSTS`` add (the name of a proxy in front, a DNS alias).
"""

from __future__ import annotations

import ipaddress
import os
import socket

import psutil

from hpo.defaults import ENV_UI_ALLOWED_HOSTS
from hpo.errors import ConfigError

LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "[::1]"]  # as Host headers name them
ANY_HOST = "*"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only: any
    127.x.y.z, ::1 or ``localhost``. A name that merely resolves to one is not trusted
    to (it may resolve elsewhere tomorrow)."""
    ip = _ip(host)
    return host.lower() == "localhost" if ip is None else ip.is_loopback


def is_wildcard(host: str) -> bool:
    """0.0.0.0 and :: (every address of the machine)."""
    ip = _ip(host)
    return ip is not None and ip.is_unspecified


def as_host_header(address: str) -> str:
    """How a Host header names ``address``: an IPv6 address in brackets, without its
    zone; lower case."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address):
        return f"[{ip}]"
    return str(ip) if ip is not None else address.lower()


def check_pattern(text: str, where: str) -> str:
    """A name to answer to: a host name or address (no port, no scheme),
    ``*.example.com`` for its subdomains, or ``*`` for any name."""
    name = text.strip().lower()
    if name == ANY_HOST:
        return name
    bad = (not name or any(c in name for c in "/@ \t") or "*" in name[1:]
           or (name.startswith("*") and not name.startswith("*.")))
    if not bad and _ip(name) is None and ":" in name:
        bad = True  # a port: Host names are matched without it
    if bad:
        raise ConfigError(f"{where} {text!r} is not a host name: give a name or address "
                          "without scheme or port (hpo.example.com, 10.0.0.5), "
                          "*.example.com for its subdomains, or * for any")
    return as_host_header(name)


def matches(host: str, patterns: list[str]) -> bool:
    """Whether ``host`` (lower case, as Host headers write it) is one of ``patterns``:
    equal to one, or under a ``*.example.com`` one. ``*`` (any) is left to the caller."""
    return any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)


def machine_names() -> set[str]:
    """This machine's host name and fully qualified name."""
    return {name.lower() for name in (socket.gethostname(), socket.getfqdn()) if name}


def machine_addresses() -> set[str]:
    """Every address of every interface, as Host headers write them."""
    found = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                found.add(as_host_header(address.address))
    return found


def answered_hosts(bind: str, extra: list[str] | None = None) -> list[str]:
    """The Host names a server bound to ``bind`` answers to (``*`` among them: any),
    with ``extra`` (``--allowed-host``) and ``$HPO_UI_ALLOWED_HOSTS`` added."""
    names = set(LOOPBACK_HOSTS)
    names.add(as_host_header(bind))
    if not is_loopback(bind):
        names |= machine_names()
        if is_wildcard(bind):
            names |= machine_addresses()
    for given in extra or []:
        names.add(check_pattern(given, "--allowed-host"))
    for given in os.environ.get(ENV_UI_ALLOWED_HOSTS, "").split(","):
        if given.strip():
            names.add(check_pattern(given, f"${ENV_UI_ALLOWED_HOSTS}"))
    return sorted(names)
