"""``hpo-controller``: run an optimization described in ``hpo.yaml``, and look at,
stop, list and resume optimizations. This module holds the parser and the commands;
``session`` runs an optimization in this process, ``display`` shows it, ``formatting``
writes its summary.

``start`` and ``resume`` print the optimizer task id first, then the progress: a live
panel in a terminal, else one plain line every few seconds and one per finished job
(``--json``: JSON lines); at the end a table of the best jobs. ``status``, ``list``,
``stop`` and ``report`` read and write the store only, so they work from any process.
Every error hpo raises on purpose is one line on stderr and exit code 2.

A start's first trial waits for this process's start-up: the modules load inside
``main`` and the commands, none at the top of this module, with the garbage collector
paused (``common.loading_modules``), and local agents are forked as soon as what they
share with the controller (the store's and the broker's modules) has loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpo.cli import common
from hpo.cli.common import Parser, add_output_options, add_store_option, run_handler, store_from
from hpo.lifecycle import Status, TaskType

if TYPE_CHECKING:
    from hpo.controller.optimizer import HyperParameterOptimizer
    from hpo.store import Store

PROG = "hpo-controller"

EXAMPLE_YAML = """\
# hpo.yaml
base_task: {script: train.py, project: examples, name: digits}
hyper_parameters:
  - {type: log_uniform, name: alpha, min_value: -6, max_value: -1}
  - {type: discrete, name: learning_rate, values: [optimal, constant]}
  - {type: uniform_integer, name: epochs, min_value: 5, max_value: 15, step_size: 5}
objective: {title: validation, series: accuracy, sign: max}
strategy: random
strategy_kwargs: {seed: 1}
max_number_of_concurrent_tasks: 2
total_max_jobs: 12"""


def build_parser() -> argparse.ArgumentParser:
    from hpo.controller.yaml_config import KNOWN_FIELDS

    fields = textwrap.fill(", ".join(KNOWN_FIELDS), 88, initial_indent="  ",
                           subsequent_indent="  ")
    parser = Parser(
        prog=PROG,
        description=textwrap.fill(
            "Optimize the hyper-parameters of a training task: clone it with new values, "
            "run the clones on agents, keep the best. An optimization is described in a "
            "yaml file (hpo.yaml) whose fields are the arguments of "
            "HyperParameterOptimizer.", 88),
        epilog=f"A minimal hpo.yaml (paths relative to its folder):\n\n{EXAMPLE_YAML}\n\n"
        f"Its fields:\n{fields}\n\nQuick start: {PROG} start examples/digits/hpo.yaml "
        "--local-agents 2\nData lives in HPO_STORE_URL (default: a SQLite file in "
        "HPO_HOME, ~/.hpo).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_store_option(parser, top=True)
    add_output_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str,
                description: str | None = None) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=description or help)
        add_store_option(p)
        add_output_options(p)
        p.set_defaults(handler=handler)
        return p

    def running_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--local-agents", type=common.slots, metavar="N",
                       help="start N agents on this machine for this optimization (on a "
                       "queue of its own); without it, jobs go to execution_queue and "
                       "agents started elsewhere (hpo-agent --queue NAME) run them")
        common.add_broker_option(p)
        p.add_argument("--top", type=common.positive_int, default=10, metavar="K",
                       help="jobs in the summary table at the end (10)")
        p.add_argument("--json", action="store_true",
                       help="JSON lines: started, one per finished job, progress, and the "
                       "summary at the end")
        p.add_argument("--plain", action="store_true",
                       help="plain progress lines even in a terminal")
        p.add_argument("-v", "--verbose", action="store_true",
                       help="log what the controller does (on stderr)")

    p = command("start", cmd_start, "run the optimization described in a yaml file",
                "Create an optimization from CONFIG and run it until its budget is spent, "
                "the search space is exhausted, or it is stopped (Ctrl-C, or "
                f"`{PROG} stop ID` from anywhere). Prints the optimizer task id first.")
    p.add_argument("config", nargs="?", default="hpo.yaml",
                   help="the yaml file (default: ./hpo.yaml)")
    running_options(p)

    p = command("status", cmd_status, "progress, budget and best jobs of an optimization")
    p.add_argument("id", nargs="?", type=common.optimization_id,
                   help="optimizer task id or a unique prefix (default: the newest)")
    p.add_argument("--top", type=common.positive_int, default=10, metavar="K",
                   help="best jobs shown (10)")
    p.add_argument("--all", action="store_true", help="every job, not only the best")
    p.add_argument("--json", action="store_true")

    p = command("stop", cmd_stop, "stop an optimization and all its jobs",
                "Ask the controller running this optimization to stop it: every job is "
                "stopped and the optimization ends as stopped. Returns at once; `status` "
                "shows when it has ended.")
    p.add_argument("id", type=common.optimization_id, help="optimizer task id or a unique prefix")

    p = command("list", cmd_list, "optimizations, newest first")
    p.add_argument("--limit", type=common.positive_int, default=50)
    p.add_argument("--json", action="store_true")

    p = command("report", cmd_report, "write the report of an optimization: summary "
                "table, plots, index.html",
                "Write into DIR: summary.csv and summary.json (the best jobs with every "
                "tuned parameter), one HTML file and one PNG per plot (parameters and "
                "objective in parallel coordinates, objective per job with the best so far, "
                "learning curves, budget and workers over time), plotly.min.js which the "
                "HTML files share (the folder opens offline; keep it together), and "
                "index.html linking them with the summary. PNGs need Chrome or Chromium; "
                "without one they are skipped with a warning (exit code 0). Prints where "
                "the files are and their total size.")
    p.add_argument("id", nargs="?", type=common.optimization_id,
                   help="optimizer task id or a unique prefix (default: the newest)")
    p.add_argument("--out", metavar="DIR",
                   help="folder to write into, created if missing; files of the same names "
                   "are replaced (default: $HPO_HOME/reports/ID8, i.e. ~/.hpo/reports/ID8)")
    p.add_argument("--self-contained", action="store_true",
                   help="embed plotly.js in each HTML file (about 4.8 MB each) so that one "
                   "file opens alone, e.g. sent by mail; by default they share one "
                   "plotly.min.js in DIR")
    p.add_argument("--top", type=common.positive_int, default=10, metavar="K",
                   help="best jobs in the summary (10)")
    p.add_argument("--no-png", action="store_true", help="skip the PNG images")
    p.add_argument("--json", action="store_true",
                   help="print what was written as JSON instead of the table")

    p = command("resume", cmd_resume, "continue an optimization that was stopped or "
                "whose controller died",
                "Re-attach to the optimization's running jobs and finish the same budget: "
                "no trial is repeated or lost.")
    p.add_argument("id", type=common.optimization_id, help="optimizer task id or a unique prefix")
    running_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with common.loading_modules():  # the parser names yaml_config's fields
        args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("celery").setLevel(logging.WARNING)
    return run_handler(PROG, args)


# ----- commands -------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    with common.loading_modules():
        broker = common.broker_from(args)
        _fork_local_agents(args, broker)  # first: the forks load the agent's modules
        from hpo.controller.optimizer import HyperParameterOptimizer  # meanwhile
        from hpo.controller.yaml_config import load_optimizer_arguments
        from hpo.queue.app import check_broker, make_app

    store = store_from(args, create=True)
    check_broker(make_app(broker))  # before the yaml registers its base task
    arguments = load_optimizer_arguments(Path(args.config), store)
    optimizer = HyperParameterOptimizer(**arguments, broker_url=broker)
    return _run(optimizer, store, args)


def cmd_resume(args: argparse.Namespace) -> int:
    with common.loading_modules():
        broker = common.broker_from(args)
        _fork_local_agents(args, broker)
        from hpo.controller.optimizer import HyperParameterOptimizer

    store = store_from(args)
    optimizer = HyperParameterOptimizer.resume(args.id, store=store, broker_url=broker)
    return _run(optimizer, store, args)


def _fork_local_agents(args: argparse.Namespace, broker: str) -> None:
    """With --local-agents: the agents are forked now, once the modules they share with
    the controller (the store's and the broker's) have loaded and before the store or
    the broker is opened (``agent_forks``); they start when the optimization has its
    queue."""
    if args.local_agents:
        from hpo.controller.local_agents import prepare_forks

        prepare_forks(args.local_agents, common.store_url(args), broker)


def _run(optimizer: HyperParameterOptimizer, store: Store, args: argparse.Namespace) -> int:
    with common.loading_modules():
        from hpo.controller.display import make_display
        from hpo.controller.session import run_session

    display = make_display(optimizer.id, json=args.json, plain=args.plain)
    return run_session(optimizer, store, display, local_agents=args.local_agents,
                       top=args.top, prog=PROG)


def _resolve(store: Store, text: str) -> str:
    """The optimization an id or a prefix names (only optimizer tasks count)."""
    return store.resolve_task_id(text, type=TaskType.optimizer)


def cmd_status(args: argparse.Namespace) -> int:
    from hpo.cli import output
    from hpo.controller.formatting import jobs_table, status_fields
    from hpo.optimization.summary import newest_optimizer, summarize

    store = store_from(args)
    optimizer_id = _resolve(store, args.id) if args.id else newest_optimizer(store)
    summary = summarize(store, optimizer_id, top_k=args.top, all_jobs=args.all)
    if args.json:
        output.print_json(summary.to_dict())
        return 0
    output.table(f"optimization {summary.id}", ["field", "value"], status_fields(summary))
    rows = summary.jobs if args.all else summary.top
    jobs_table(summary, rows, "every job, newest first" if args.all else
                f"best {len(rows)} job(s)")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    store = store_from(args)
    optimizer_id = _resolve(store, args.id)
    task = store.get_task(optimizer_id)
    if task.status.is_final:
        print(f"{optimizer_id} already {task.status.value}")
        return 0
    if task.status is Status.created:  # built, never started: nothing runs
        print(f"{optimizer_id} never started: nothing to stop")
        return 0
    store.request_stop(optimizer_id, "stopped by hpo-controller stop")
    print(f"{optimizer_id} stop requested: its controller stops every job")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from hpo.cli import output
    from hpo.optimization.summary import finite, list_optimizations, shown_status

    store = store_from(args)
    listing = list_optimizations(store, limit=args.limit)
    if args.json:
        output.print_json([finite(vars(o)) for o in listing])
        return 0
    output.table(
        f"{len(listing)} optimization(s)",
        ["id", "project", "name", "status", "created", "jobs", "objective", "best",
         "best task"],
        ([o.id, o.project, o.name, shown_status(o.status, o.started), output.when(o.created_at),
          f"{o.launched}/{o.total_max_jobs}" if o.total_max_jobs else o.launched,
          o.objective, o.best_value, o.best_task] for o in listing),
        compact=True, drop=("created", "project", "objective", "best task"),
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hpo.cli import output
    from hpo.controller.formatting import jobs_table
    from hpo.optimization.summary import newest_optimizer
    from hpo.report.files import default_folder, write_report

    store = store_from(args)
    optimizer_id = _resolve(store, args.id) if args.id else newest_optimizer(store)
    out = Path(args.out) if args.out else default_folder(optimizer_id)
    with _report_progress(enabled=sys.stdout.isatty() and not args.json) as progress:
        result = write_report(store, optimizer_id, out, args.top, png=not args.no_png,
                              self_contained=args.self_contained, progress=progress)
    if result.png_skipped and not args.no_png:
        from hpo.report.files import PNG_FIX

        print(f"{PROG}: warning: PNG images skipped: {result.png_skipped}: {PNG_FIX}; "
              "everything else was written", file=sys.stderr)
    if args.json:
        output.print_json({"id": result.optimizer_id, "out": str(result.out_dir),
                           "index": str(result.index),
                           "files": [str(f) for f in result.files],
                           "bytes": result.total_bytes, "png_skipped": result.png_skipped})
        return 0
    assert result.data is not None
    summary = result.data.summary
    jobs_table(summary, summary.top, f"best {len(summary.top)} job(s)")
    _report_listing(result)
    return 0


def _report_listing(result: Any) -> None:
    """What was written, one line per group of files, the index last."""
    from hpo.controller.formatting import out

    by_suffix: dict[str, list[str]] = {}
    for path in result.files:
        if path != result.index:
            by_suffix.setdefault(path.suffix, []).append(path.name)
    for suffix, names in by_suffix.items():
        out(f"wrote {len(names)} {suffix[1:]} file(s): {', '.join(names)}")
    out(f"{len(result.files)} files, {_megabytes(result.total_bytes)} in all, in "
        f"{result.out_dir.resolve()}")
    out(f"index: {result.index.resolve()}")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


@contextlib.contextmanager
def _report_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar of the report's steps in a terminal; nothing when piped (the
    listing at the end says what was written)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from hpo.cli import output

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=output.console, transient=True) as bar:
        task = bar.add_task("report", total=None)

        def progress(label: str, done: int, total: int) -> None:
            bar.update(task, description=label, completed=done, total=total)

        yield progress


if __name__ == "__main__":
    sys.exit(main())
