"""Hosts as Linux network namespaces on a test bridge, and a cut that drops their packets
silently, as a broken link between real hosts does.

The root namespace owns the bridge and its first address (``server_ip``): the servers
run there. Each host is a namespace with one veth pair onto the bridge and the next
address. Names (namespaces, links) and the /24 subnet are new for every instance, so
two runs on one machine never meet.

The cut (``cut(host)``) replaces, on both sides of the link, the neighbour (ARP) entry of
the other side by a permanent one with a MAC address that no interface has. Frames still
leave (no carrier change, no route change, no error for the sender), the bridge floods
them, and every receiver discards them as addressed to another host; a permanent entry
is never replaced by an ARP reply. So a connection sees what it sees when a real link
dies: no reset, no "host unreachable", no refusal, only silence until its own timeout.
The other options drop less faithfully: a veth taken down makes the host's sends fail at
once on some paths and tells the kernel the carrier is gone; a port taken off the bridge
still reaches the root namespace's addresses through the veth (the weak host model); and
this kernel has no netem, this machine no iptables. ``restore(host)`` deletes the fixed
entries: the next packet asks ARP again, and connections that outlived the cut resume
(their retransmitted segments arrive), which is what a host back from a partition does.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from types import TracebackType

# A locally administered unicast MAC that no interface here has.
BOGUS_MAC = "02:00:00:00:00:01"
HOST_IF = "eth0"  # the veth end inside a host's namespace


def run_ip(*args: str, namespace: str | None = None, check: bool = True) -> str:
    """``ip ARGS`` (inside ``namespace`` when given): its stdout; raises with ip's
    message when it fails and ``check`` is set."""
    argv = ["ip", *(["-n", namespace] if namespace else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "they need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"hpo-probe-{uuid.uuid4().hex[:8]}"
    try:
        run_ip("netns", "add", probe)
    except (RuntimeError, OSError) as exc:
        return f"`ip netns add` fails: {exc}"
    run_ip("netns", "del", probe, check=False)
    return None


@dataclass(frozen=True)
class Host:
    """One host: its namespace, its address on the bridge, its veth's name outside."""

    name: str
    namespace: str
    ip: str
    outer_link: str

    def argv(self, *command: str) -> list[str]:
        """``command`` run inside this host (``ip netns exec`` execs it: the process's
        pid is the command's own)."""
        return ["ip", "netns", "exec", self.namespace, *command]


class TestNetwork:
    """A bridge in the root namespace at ``server_ip`` and one namespace per name in
    ``hosts``. A context manager: leaving it kills every process left in the hosts and
    deletes the hosts and the bridge, also after a failure half-way through setup."""

    __test__ = False  # a helper, not a pytest test class

    def __init__(self, hosts: list[str]) -> None:
        tag = uuid.uuid4().hex[:6]
        self.subnet = free_subnet()
        addresses = list(self.subnet.hosts())
        self.server_ip = str(addresses[0])
        self.bridge = f"hpbr{tag}"
        self.hosts: dict[str, Host] = {}
        self._cut: set[str] = set()
        try:
            run_ip("link", "add", "name", self.bridge, "type", "bridge",
                   "forward_delay", "0", "stp_state", "0")
            run_ip("addr", "add", f"{self.server_ip}/{self.subnet.prefixlen}",
                   "dev", self.bridge)
            run_ip("link", "set", self.bridge, "up")
            for i, name in enumerate(hosts, start=1):
                self._add_host(name, f"hpo-{tag}-{name}", str(addresses[i]),
                               f"hpv{tag}{i}")
        except BaseException:
            self.close()
            raise

    def _add_host(self, name: str, namespace: str, ip: str, outer: str) -> None:
        run_ip("netns", "add", namespace)
        self.hosts[name] = Host(name, namespace, ip, outer)
        run_ip("link", "add", outer, "type", "veth", "peer", "name", HOST_IF,
               "netns", namespace)
        run_ip("link", "set", outer, "master", self.bridge)
        run_ip("link", "set", outer, "up")
        run_ip("addr", "add", f"{ip}/{self.subnet.prefixlen}", "dev", HOST_IF,
               namespace=namespace)
        run_ip("link", "set", HOST_IF, "up", namespace=namespace)
        run_ip("link", "set", "lo", "up", namespace=namespace)

    def __enter__(self) -> TestNetwork:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # ----- the cut ---------------------------------------------------------------------

    def _entries(self, name: str) -> list[tuple[str, str, str | None]]:
        """(address, device, namespace) of every neighbour entry that joins host
        ``name`` to the rest: its own entries for every peer, and every peer's for it."""
        host = self.hosts[name]
        others = [h for h in self.hosts.values() if h.name != name]
        entries: list[tuple[str, str, str | None]] = [
            (peer, HOST_IF, host.namespace)
            for peer in [self.server_ip, *(h.ip for h in others)]]
        entries.append((host.ip, self.bridge, None))
        entries += [(host.ip, HOST_IF, h.namespace) for h in others]
        return entries

    def cut(self, name: str) -> None:
        """From now on every packet between host ``name`` and any other (the servers
        included) is dropped without a trace, both ways."""
        for address, device, namespace in self._entries(name):
            run_ip("neigh", "replace", address, "lladdr", BOGUS_MAC, "nud", "permanent",
                   "dev", device, namespace=namespace)
        self._cut.add(name)

    def restore(self, name: str) -> None:
        """Host ``name`` is reachable again: its fixed entries are gone, ARP resolves
        anew."""
        for address, device, namespace in self._entries(name):
            run_ip("neigh", "del", address, "dev", device, namespace=namespace,
                   check=False)
        self._cut.discard(name)

    # ----- the end -----------------------------------------------------------------------

    def pids(self, name: str) -> list[int]:
        """The processes running in host ``name`` now."""
        out = run_ip("netns", "pids", self.hosts[name].namespace, check=False)
        return [int(p) for p in out.split()]

    def close(self) -> None:
        """SIGKILL what still runs in the hosts (only processes this test started live
        there), delete the namespaces (which deletes their veth pairs) and the bridge."""
        for host in list(self.hosts.values()):
            for pid in self.pids(host.name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            run_ip("netns", "del", host.namespace, check=False)
            run_ip("link", "del", host.outer_link, check=False)  # if the netns was gone
        self.hosts.clear()
        run_ip("link", "del", self.bridge, check=False)


def free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no address or route of this machine overlaps."""
    taken = [ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
             for link in json.loads(run_ip("-j", "-4", "addr") or "[]")
             for info in link.get("addr_info", [])]
    for route in json.loads(run_ip("-j", "-4", "route") or "[]"):
        dst = route.get("dst", "default")
        if dst != "default":
            taken.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32",
                                              strict=False))
    for _ in range(100):
        candidate = ipaddress.IPv4Network(
            f"10.{random.randint(200, 207)}.{random.randint(0, 255)}.0/24")
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise RuntimeError("no free /24 in 10.200.0.0/13")
