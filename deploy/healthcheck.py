#!/usr/bin/env python3
"""The agent image's health check (the Dockerfile's HEALTHCHECK): exit 0 while an
``hpo-agent`` runs in this container and the store holds a heartbeat of it younger than
the lost-after period, else print why on one line and exit 1.

A process that merely runs says little: an agent whose store is gone, or whose heartbeat
stopped, runs on. The heartbeat is what the reaper judges agents by, so this check uses
the same rule (``$HPO_LOST_AFTER_S``, else 30 s): "unhealthy" means what "lost" means.

The agent's row is found by this host's name and the agent's process id, as the agent
writes them. Containers that share the host's network (``network_mode: host``) also share
its host name; two of them whose agents have the same process id cannot be told apart,
and the check passes while either beats.
"""

from __future__ import annotations

import os
import socket
import sys

import psutil

from hpo.cli import common
from hpo.errors import HpoError
from hpo.store import open_store


def agent_pids() -> set[int]:
    """The processes in this container started as ``hpo-agent`` (a console script:
    ``python .../hpo-agent ...``)."""
    pids = set()
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if any(os.path.basename(arg) == "hpo-agent" for arg in argv[:2]):
            pids.add(proc.pid)
    return pids


def main() -> int:
    pids = agent_pids()
    if not pids:
        print("no hpo-agent process in this container")
        return 1
    try:
        lost_after = common.lost_after_s(None)
        store = open_store()
        host = socket.gethostname()
        now = store.now()
        ages = [now - w.last_heartbeat for w in store.list_workers()
                if w.host == host and w.pid in pids]
    except HpoError as exc:
        print(f"store: {exc}")
        return 1
    if not ages:
        print(f"hpo-agent (pid {', '.join(map(str, sorted(pids)))}) is not registered "
              "in the store yet")
        return 1
    if min(ages) > lost_after:
        print(f"last heartbeat {min(ages):.0f}s ago (lost after {lost_after:g}s)")
        return 1
    print(f"heartbeat {min(ages):.0f}s ago")
    return 0


if __name__ == "__main__":
    sys.exit(main())
