"""``hpo workers``: the agents, their queues, slots and running tasks; ``--reap`` puts
the tasks of lost agents back in their queues."""

from __future__ import annotations

import argparse
import time
from typing import Any

from hpo import defaults
from hpo.cli import common, output
from hpo.cli.common import add_output_options, add_store_option, store_from


def register(commands: Any) -> None:
    p = commands.add_parser("workers", help="list agents; --reap recovers lost tasks",
                            description="List the agents with their queues, slots, running "
                            "tasks and last heartbeat.")
    add_store_option(p)
    add_output_options(p)
    p.add_argument("--reap", action="store_true",
                   help="re-queue (or fail) running tasks whose agent stopped heartbeating, "
                   "and publish again queued tasks whose message the broker lost")
    p.add_argument("--lost-after", type=common.seconds, default=None,
                   metavar="SECONDS",
                   help="an agent silent this long is lost (default: $HPO_LOST_AFTER_S, else "
                   f"{defaults.LOST_AFTER_S:g}); 0 takes every agent for lost, so reap "
                   "with it only when no agent is alive")
    p.add_argument("--retries", type=common.non_negative_int,
                   default=defaults.LOST_TASK_RETRIES, metavar="N",
                   help=f"re-queues of a lost task before it fails ({defaults.LOST_TASK_RETRIES})")
    common.add_broker_option(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_workers)


def cmd_workers(args: argparse.Namespace) -> int:
    lost_after = common.lost_after_s(args.lost_after)
    broker = common.broker_from(args) if args.reap else None
    store = store_from(args)
    if args.reap:
        from hpo.queue.app import make_app
        from hpo.queue.reaper import reap, republish_lost

        app = make_app(broker)
        for task, status in reap(store, app, lost_after_s=lost_after,
                                 retries=args.retries):
            print(f"{task.id} (agent {task.worker} lost): {status.value}")
        for task in republish_lost(store, app):
            print(f"{task.id} (message lost from queue {task.queue}): published again")
    workers = store.list_workers()
    if args.json:
        output.print_json(workers)
        return 0
    now = time.time()
    output.table(
        f"{len(workers)} agent(s)",
        ["name", "host", "pid", "queues", "slots", "running", "last heartbeat"],
        ([w.name, w.host, w.pid, ", ".join(w.queues), ", ".join(w.slots),
          ", ".join(w.running) or None,
          f"{now - w.last_heartbeat:.0f}s ago" + (" (lost)" if now - w.last_heartbeat >
                                                  lost_after else "")]
         for w in workers),
    )
    return 0
