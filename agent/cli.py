"""``hpo-agent``: serve execution queues on this host."""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from hpo import defaults, settings
from hpo.agent.runner import RunnerConfig
from hpo.agent.slots import make_slots
from hpo.agent.worker import Agent, AgentConfig
from hpo.cli import common
from hpo.cli.common import Parser, add_store_option, one_line
from hpo.errors import HpoError


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="hpo-agent",
        description="Run queued hpo tasks on this host: each task's script runs as a "
        "subprocess in one slot (a GPU group or a CPU share), with its reports streamed "
        "to the store.",
        epilog="Examples: hpo-agent --queue default --gpus 0,1 (one slot with both GPUs); "
        "hpo-agent --gpus 0-3 --gpus-per-task 1 (four slots); hpo-agent --cpu-only "
        "--concurrency 2. SIGTERM or Ctrl-C: warm shutdown; a second one stops at once.",
    )
    p.add_argument("--queue", action="append", metavar="NAME", type=common.name("queue"),
                   help="execution queue to serve; repeat for several, served first one "
                   "first on Redis (default: default)")
    p.add_argument("--gpus", metavar="LIST", type=_gpu_list,
                   help="GPU indices, e.g. 0,1 or 0-3, or all (those nvidia-smi lists); "
                   "with CUDA_VISIBLE_DEVICES set, indices into the GPUs it names")
    p.add_argument("--gpus-per-task", type=common.slots, metavar="N",
                   help="GPUs per slot (default: all of --gpus in one slot)")
    p.add_argument("--cpu-only", action="store_true",
                   help="hide GPUs from tasks (CUDA_VISIBLE_DEVICES empty)")
    p.add_argument("--concurrency", type=common.slots, metavar="N",
                   help="CPU slots (default 1)")
    p.add_argument("--name", type=common.name("agent name"),
                   help="agent name (default: HOST-PID)")
    common.add_broker_option(p)
    add_store_option(p, top=True)
    p.add_argument("--pass-credentials", action="store_true",
                   help="the scripts this agent runs get the store and broker URLs with "
                   "their passwords, e.g. a script that runs its own optimization "
                   "(default: a URL with a password is kept from them)")
    p.add_argument("--python", metavar="PATH", type=_interpreter,
                   help="the interpreter that runs every script: a virtual environment or "
                   "image with the training code's dependencies (default: the one "
                   "recorded with the task when this host has it, else this agent's own)")
    p.add_argument("--preload", action="append", metavar="MODULE[,MODULE]",
                   type=_module_list, default=[],
                   help="modules each slot's warm process imports once, besides hpo: each "
                   "task is then a fork of it, so its script skips those imports (e.g. "
                   "sklearn.ensemble,scipy.optimize); a module that starts threads or "
                   "CUDA at import cannot be preloaded (its slot spawns, saying why)")
    p.add_argument("--spawn", action="store_true",
                   default=os.environ.get(defaults.ENV_AGENT_SPAWN, "") == "1",
                   help="start every script as a new Python process, not as a fork of its "
                   "slot's warm process (default: warm, preloading hpo; "
                   f"${defaults.ENV_AGENT_SPAWN}=1 too)")
    p.add_argument("--events", action="store_true",
                   help="send Celery's task events (received, started, succeeded) for "
                   "Flower's Tasks page; off, Flower's Workers page still lists the agent, "
                   "and each task costs the agent three broker messages less")
    p.add_argument("--exit-with", type=int, metavar="PID", default=None,
                   help="stop (as on SIGTERM) once the process PID, this agent's parent, "
                        "has ended: hpo-controller --local-agents sets it, so that its "
                        "agents never outlive it")
    p.add_argument("--grace", type=common.seconds, default=defaults.GRACE_S, metavar="SECONDS",
                   help="time between SIGTERM and SIGKILL when a task is stopped "
                   f"({defaults.GRACE_S:g})")
    p.add_argument("--shutdown-timeout", type=common.seconds, default=defaults.SHUTDOWN_TIMEOUT_S,
                   metavar="SECONDS", help="on SIGTERM, how long running tasks may finish "
                   f"before they are stopped and re-queued ({defaults.SHUTDOWN_TIMEOUT_S:g})")
    p.add_argument("--heartbeat", type=common.period, default=defaults.HEARTBEAT_S,
                   metavar="SECONDS",
                   help=f"heartbeat period ({defaults.HEARTBEAT_S:g})")
    p.add_argument("--lost-after", type=common.positive_seconds, default=None,
                   metavar="SECONDS", help="a task whose agent is silent this long is "
                   f"re-queued by the reaper (${defaults.ENV_LOST_AFTER_S}, else "
                   f"{defaults.LOST_AFTER_S:g})")
    p.add_argument("--retries", type=common.non_negative_int, default=defaults.LOST_TASK_RETRIES,
                   help="re-queues of a lost task before it fails "
                   f"({defaults.LOST_TASK_RETRIES})")
    p.add_argument("--max-log-mb", type=common.number(0, defaults.MAX_LOG_MB_LIMIT),
                   default=defaults.MAX_LOG_MB,
                   help="output stored per task; the rest is counted, not kept "
                   f"({defaults.MAX_LOG_MB:g})")
    p.add_argument("--checkpoint-root", metavar="DIR",
                   help="where tasks save checkpoints (default: $HPO_CHECKPOINT_ROOT, else "
                   "$HPO_HOME/checkpoints; shared storage on a cluster)")
    p.add_argument("--monitor-period", type=common.period, default=defaults.MONITOR_PERIOD_S,
                   metavar="SECONDS",
                   help=f"resource sampling period ({defaults.MONITOR_PERIOD_S:g})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.lost_after = common.lost_after_s(args.lost_after)
        settings.republish_after_s()  # a bad $HPO_REPUBLISH_AFTER_S: one line, now
        broker = common.broker_from(args)
        store = common.store_url(args)
    except HpoError as exc:
        parser.error(str(exc))
    if args.lost_after <= args.heartbeat:
        parser.error(f"--lost-after {args.lost_after:g} must be more than --heartbeat "
                     f"{args.heartbeat:g}, else live agents are taken for lost: raise it")
    if args.exit_with is not None and args.exit_with != os.getppid():
        # The agent watches its parent only (os.getppid): another pid would read as
        # ended at the first heartbeat, stopping the agent at once.
        parser.error(f"--exit-with {args.exit_with} is not this agent's parent process "
                     f"({os.getppid()}): give the pid of the process that starts it")
    if args.spawn and args.preload:
        parser.error("--preload needs warm slots, and --spawn (or "
                     f"${defaults.ENV_AGENT_SPAWN}=1) turns them off: drop one")
    common.warn_visible_passwords(parser.prog, args)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("celery").setLevel(logging.WARNING)
    logging.getLogger("celery.worker.consumer.consumer").addFilter(_BrokerHint())
    try:
        slots = make_slots(args.gpus, args.gpus_per_task, args.cpu_only, args.concurrency)
        name = args.name or f"{socket.gethostname()}-{os.getpid()}"
        config = AgentConfig(
            name=name, queues=args.queue or [defaults.DEFAULT_QUEUE], slots=slots,
            runner=RunnerConfig(worker=name, grace_s=args.grace, python=args.python,
                                max_log_bytes=int(args.max_log_mb * 2**20),
                                monitor_period_s=args.monitor_period,
                                checkpoint_root=Path(args.checkpoint_root).expanduser()
                                if args.checkpoint_root else None,
                                pass_credentials=args.pass_credentials, broker_url=broker),
            store_url=store, broker_url=broker,
            shutdown_timeout_s=args.shutdown_timeout, heartbeat_s=args.heartbeat,
            lost_after_s=args.lost_after, retries=args.retries,
            preload=None if args.spawn else [m for ms in args.preload for m in ms],
            exit_with=args.exit_with, events=args.events,
        )
        return Agent(config).run()
    except HpoError as exc:
        print(f"hpo-agent: error: {one_line(str(exc))}", file=sys.stderr)
        return 2


class _BrokerHint(logging.Filter):
    """Celery's own "Cannot connect to ...; trying again" lines, with what hpo calls the
    setting: the user knows HPO_BROKER_URL, not Celery's broker_url. The agent retries
    for as long as the broker is away (a restart, an outage) and runs its tasks on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "Cannot connect to" in str(record.msg):
            said = " ".join(record.getMessage().split())  # Celery's spans three lines
            record.msg = (f"{said} [hpo-agent: the broker is "
                          f"${defaults.ENV_BROKER_URL} / --broker; the agent keeps trying]")
            record.args = ()
        return True


def _interpreter(text: str) -> str:
    """``--python``: an executable, by path or on PATH, checked before any task."""
    found = shutil.which(text)
    if not found:
        raise argparse.ArgumentTypeError(f"{text!r} is not an executable file or a command "
                                         "on PATH: give the path of a Python interpreter")
    return found


def _module_list(text: str) -> list[str]:
    """``--preload``: dotted module names, comma-separated."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not all(part.isidentifier() for part in n.split("."))]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"{(bad or [text])[0]!r} is not a module name: give dotted names, comma-"
            "separated, e.g. sklearn.ensemble,scipy.optimize")
    return names


def _gpu_list(text: str) -> str:
    """``--gpus``: checked for size here (``0-999999999`` would list a billion GPUs);
    ``make_slots`` checks the rest."""
    if text.strip() == "all":
        return text
    numbers = [int(n) for n in re.findall(r"\d{1,6}", text)]
    if len(text) > 4 * defaults.MAX_SLOTS or re.search(r"\d{7}", text) or any(
            n > defaults.MAX_GPU_INDEX for n in numbers):
        raise argparse.ArgumentTypeError(
            f"GPU indices go from 0 to {defaults.MAX_GPU_INDEX}: give e.g. 0,1 or 0-3")
    return text


if __name__ == "__main__":
    sys.exit(main())
