"""Fault benchmark: what each fault of issue 11 costs a real optimization.

For each fault it runs one optimization the way an operator would (a base task in a fresh
PostgreSQL database, ``hpo-controller start hpo.yaml``, ``--agents`` real ``hpo-agent``
processes, Redis or RabbitMQ), every process reaching the servers through a TCP proxy
that the bench cuts; the fault is injected once ``--faults-after`` jobs have results.
Then it reads from the store: results (jobs completed with an objective), jobs lost, jobs
run twice, duplicated scalars, outcomes holding a fenced-off attempt's writes, and the
time to recover. The harness is the fault tests' own (tests/faults/harness.py), at the
issue's scale and hpo's default timeouts instead of the tests' short ones.

Run it: ``python bench/faults.py`` (all faults, about 6 minutes on 2 cores),
``python bench/faults.py --only agent-kill --repeat 3``, ``--help`` for the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the harness lives in tests/ (bench/ is on sys.path)

from scratch_db import postgres_database  # noqa: E402

from tests.faults.harness import FAULTS, Figures, Scale, run_fault  # noqa: E402
from tests.faults.proxy import CutMode  # noqa: E402
from tests.faults.services import RedisServer  # noqa: E402

COLUMNS = [  # (header, width, how to show one run)
    ("fault", 14, lambda f: f.fault),
    ("results", 7, lambda f: f"{f.results}/{f.jobs}"),
    ("lost", 4, lambda f: f.lost),
    ("run twice", 9, lambda f: f.run_twice),
    ("dup scalars", 11, lambda f: f.duplicated_scalars),
    ("fenced-off", 10, lambda f: f.fenced_off_outcomes),
    ("hung", 4, lambda f: "yes" if f.hung else "no"),
    ("exit", 4, lambda f: "-" if f.controller_exit is None else f.controller_exit),
    ("fault s", 7, lambda f: _seconds(f.fault_s)),
    ("recover s", 9, lambda f: _seconds(f.recover_s)),
    ("next result s", 13, lambda f: _seconds(f.next_result_s)),
    ("to end s", 8, lambda f: _seconds(f.tail_s)),
    ("wall s", 6, lambda f: _seconds(f.wall_s)),
]


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}"


def print_table(runs: list[Figures]) -> None:
    print("\n" + "  ".join(f"{h:>{w}}" for h, w, _ in COLUMNS))
    for figures in runs:
        print("  ".join(f"{show(figures)!s:>{w}}" for _, w, show in COLUMNS))
    print("\nrecover s: fault end -> every task in flight at its start final; next result "
          "s: -> the first job completed after it; to end s: -> the controller's exit")
    for figures in runs:
        for problem in figures.problems():
            print(f"FAIL {figures.fault}: {problem}")


# ----- services ------------------------------------------------------------------------


def broker_for(kind: str, args: argparse.Namespace) -> str | None:
    """The broker URL a fault runs on (None: it starts a Redis of its own); raises
    RuntimeError when that service does not answer."""
    if kind == "private-redis":
        if not RedisServer.available():
            raise RuntimeError("no redis-server binary")
        return None
    url = args.rabbitmq_url if kind == "rabbitmq" else args.redis_url
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        raise RuntimeError(f"{kind} at {url} does not answer: {exc}") from None
    return url


def scale_of(args: argparse.Namespace) -> Scale:
    return Scale(jobs=args.jobs, agents=args.agents, steps=args.steps, step_s=args.step_s,
                 lost_after_s=args.lost_after, republish_after_s=args.republish_after,
                 faults_after=args.faults_after, fault_s=args.outage,
                 cut_mode=CutMode(args.cut_mode), deadline_s=args.deadline)


def run_one(name: str, args: argparse.Namespace) -> Figures:
    broker = broker_for(FAULTS[name].broker, args)
    with contextlib.ExitStack() as stack:
        store_url = stack.enter_context(postgres_database(args.pg_admin_url, "hpo_faults"))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(
            prefix=f"hpo-faults-{name}-")))
        figures, logs = run_fault(name, workdir, store_url, broker, scale_of(args))
        if figures.problems() and args.logs:
            Path(args.logs).mkdir(parents=True, exist_ok=True)
            path = Path(args.logs) / f"{name}-{int(time.time())}.log"
            path.write_text(logs)
            figures.notes.append(f"logs: {path}")
    return figures


# ----- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run a real optimization (PostgreSQL, Redis or RabbitMQ, real agents "
        "and controller) through each fault of issue 11 and measure what it lost, ran "
        "twice or stored twice, and how long it took to recover.",
        epilog="Faults: " + "; ".join(f"{f.name}: {f.describe}" for f in FAULTS.values())
        + ". Example: python bench/faults.py --only store-cut --repeat 3")
    p.add_argument("--only", choices=list(FAULTS), action="append",
                   help="run this fault only (repeatable; default: all)")
    p.add_argument("--repeat", type=int, default=1, help="runs of each fault (1)")
    p.add_argument("--jobs", type=int, default=12, help="total_max_jobs (12)")
    p.add_argument("--agents", type=int, default=2, help="agents, one slot each (2)")
    p.add_argument("--steps", type=int, default=10, help="reports per job (10)")
    p.add_argument("--step-s", type=float, default=0.3,
                   help="seconds between a job's reports (0.3: a job runs about 3 s)")
    p.add_argument("--faults-after", type=int, default=2,
                   help="inject the fault once this many jobs have results (2)")
    p.add_argument("--outage", type=float, default=20.0,
                   help="seconds a store or broker cut lasts, and the least a SIGSTOP "
                   "lasts (20)")
    p.add_argument("--cut-mode", choices=[m.value for m in CutMode], default="refuse",
                   help="what a cut link does to new connections: refuse (reset at once) "
                   "or blackhole (accept, never answer) (refuse)")
    p.add_argument("--lost-after", type=float, default=None,
                   help="HPO_LOST_AFTER_S for every process (default: hpo's, 30)")
    p.add_argument("--republish-after", type=float, default=None,
                   help="HPO_REPUBLISH_AFTER_S for every process (default: hpo's, 60)")
    p.add_argument("--deadline", type=float, default=300.0,
                   help="a run whose controller has not ended this long after its start "
                   "is hung (300)")
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL",
                                                         "redis://127.0.0.1:6379/0"))
    p.add_argument("--rabbitmq-url", default=os.environ.get(
        "BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//"))
    p.add_argument("--pg-admin-url", default=os.environ.get(
        "BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL URL allowed to create and drop databases")
    p.add_argument("--json", metavar="PATH", help="also write every run's figures here")
    p.add_argument("--logs", metavar="DIR",
                   help="keep the processes' output of runs that fail the check here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The agents and servers are subprocesses: a SIGTERM must unwind through the
    # clean-up (SystemExit does) or they would outlive the bench.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if min(args.repeat, args.jobs, args.agents, args.steps) < 1 or args.outage < 0:
        print("--repeat, --jobs, --agents and --steps must be at least 1, --outage >= 0",
              file=sys.stderr)
        return 2
    names = args.only or list(FAULTS)
    runs: list[Figures] = []
    failed = False
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=False).stdout.strip()
    print(f"faults at commit {commit or '?'}: {args.jobs} jobs, {args.agents} agents, "
          f"outage {args.outage:g} s ({args.cut_mode}), lost after "
          f"{args.lost_after or 'default'} s, republish after "
          f"{args.republish_after or 'default'} s", flush=True)
    for round_ in range(1, args.repeat + 1):
        for name in names:
            started = time.monotonic()
            print(f"[{name} #{round_}] {FAULTS[name].describe}", flush=True)
            try:
                figures = run_one(name, args)
            except Exception as exc:  # report, then go on with the next fault
                traceback.print_exc()
                print(f"[{name} #{round_}] failed: {type(exc).__name__}: {exc}",
                      file=sys.stderr, flush=True)
                failed = True
                continue
            runs.append(figures)
            failed = failed or bool(figures.problems())
            print(f"[{name} #{round_}] {figures.results}/{figures.jobs} results, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
    print_table(runs)
    if args.json:
        record: dict[str, Any] = {"commit": commit, "args": vars(args),
                                  "runs": [f.to_dict() for f in runs]}
        Path(args.json).write_text(json.dumps(record, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
