"""``hpo-controller``: run an optimization described in ``hpo.yaml``, and look at,
stop, list and resume optimizations.

``start`` and ``resume`` print the optimizer task id first, then the progress: a live
panel in a terminal, else one plain line every few seconds and one per finished job
(``--json``: JSON lines); at the end a table of the best jobs. ``status``, ``list``,
``stop`` and ``report`` read and write the store only, so they work from any process.
Every error hpo raises on purpose is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from hpo.cli import output
from hpo.cli.common import add_store_option, one_line, run_handler, store_from
from hpo.errors import HpoError
from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.optimization.summary import (
    JobRow,
    OptimizationSummary,
    finite,
    list_optimizations,
    newest_optimizer,
    short_key,
    summarize,
)
from hpo.store import Store

T = TypeVar("T")

PROG = "hpo-controller"
POLL_S = 0.5  # how often the display looks at the controller
REREAD_S = 2.0  # the store is read at least this often while nothing changes
READ_SHARE = 4  # ... but waits 4x its last read's duration after it (at most 20 % busy)
PLAIN_PERIOD_S = 5.0  # a plain progress line at most this often (and on every job end)
PLAIN_QUIET_S = 60.0  # ... and at least this often when nothing changed

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
    parser = argparse.ArgumentParser(
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
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, handler: Callable[[argparse.Namespace], int], help: str,
                description: str | None = None) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help, description=description or help)
        add_store_option(p)
        p.set_defaults(handler=handler)
        return p

    def running_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--local-agents", type=_positive_int, metavar="N",
                       help="start N agents on this machine for this optimization (on a "
                       "queue of its own); without it, jobs go to execution_queue and "
                       "agents started elsewhere (hpo-agent --queue NAME) run them")
        p.add_argument("--broker", metavar="URL",
                       help="broker URL (default: $HPO_BROKER_URL, else the embedded one)")
        p.add_argument("--top", type=_positive_int, default=10, metavar="K",
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
    p.add_argument("id", nargs="?",
                   help="optimizer task id or a unique prefix (default: the newest)")
    p.add_argument("--top", type=_positive_int, default=10, metavar="K",
                   help="best jobs shown (10)")
    p.add_argument("--all", action="store_true", help="every job, not only the best")
    p.add_argument("--json", action="store_true")

    p = command("stop", cmd_stop, "stop an optimization and all its jobs",
                "Ask the controller running this optimization to stop it: every job is "
                "stopped and the optimization ends as stopped. Returns at once; `status` "
                "shows when it has ended.")
    p.add_argument("id", help="optimizer task id or a unique prefix")

    p = command("list", cmd_list, "optimizations, newest first")
    p.add_argument("--limit", type=_positive_int, default=50)
    p.add_argument("--json", action="store_true")

    p = command("report", cmd_report, "write the report of an optimization: summary "
                "table, plots, index.html",
                "Write into DIR: summary.csv and summary.json (the best jobs with every "
                "tuned parameter), one self-contained HTML file (opens offline) and one PNG "
                "per plot (parameters and objective in parallel coordinates, objective per "
                "job with the best so far, learning curves, budget and workers over time), "
                "and index.html linking them with the summary. PNGs need Chrome or "
                "Chromium; without one they are skipped with a warning (exit code 0).")
    p.add_argument("id", nargs="?",
                   help="optimizer task id or a unique prefix (default: the newest)")
    p.add_argument("--out", metavar="DIR",
                   help="folder to write into, created if missing; files of the same names "
                   "are replaced (default: ./hpo-report-ID8)")
    p.add_argument("--top", type=_positive_int, default=10, metavar="K",
                   help="best jobs in the summary (10)")
    p.add_argument("--no-png", action="store_true", help="skip the PNG images")
    p.add_argument("--json", action="store_true",
                   help="print what was written as JSON instead of the table")

    p = command("resume", cmd_resume, "continue an optimization that was stopped or "
                "whose controller died",
                "Re-attach to the optimization's running jobs and finish the same budget: "
                "no trial is repeated or lost.")
    p.add_argument("id", help="optimizer task id or a unique prefix")
    running_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(name)s: %(message)s")
        logging.getLogger("celery").setLevel(logging.WARNING)
    return run_handler(PROG, args)


# ----- commands -------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace) -> int:
    from hpo.controller.optimizer import HyperParameterOptimizer
    from hpo.controller.yaml_config import load_optimizer_arguments

    store = store_from(args)
    arguments = load_optimizer_arguments(Path(args.config), store)
    optimizer = HyperParameterOptimizer(**arguments, broker_url=args.broker)
    return _run(optimizer, store, args)


def cmd_resume(args: argparse.Namespace) -> int:
    from hpo.controller.optimizer import HyperParameterOptimizer

    store = store_from(args)
    optimizer = HyperParameterOptimizer.resume(args.id, store=store, broker_url=args.broker)
    return _run(optimizer, store, args)


def cmd_status(args: argparse.Namespace) -> int:
    store = store_from(args)
    optimizer_id = store.resolve_task_id(args.id) if args.id else newest_optimizer(store)
    summary = summarize(store, optimizer_id, top_k=args.top, all_jobs=args.all)
    if args.json:
        output.print_json(summary.to_dict())
        return 0
    output.table(f"optimization {summary.id}", ["field", "value"], _status_fields(summary))
    rows = summary.jobs if args.all else summary.top
    _jobs_table(summary, rows, "every job, newest first" if args.all else
                f"best {len(rows)} job(s)")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    store = store_from(args)
    optimizer_id = store.resolve_task_id(args.id)
    store.load_optimization(optimizer_id)  # an optimization, not any task
    task = store.get_task(optimizer_id)
    if task.status.is_final:
        print(f"{optimizer_id} already {task.status.value}")
        return 0
    store.request_stop(optimizer_id, "stopped by hpo-controller stop")
    print(f"{optimizer_id} stop requested: its controller stops every job")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    store = store_from(args)
    listing = list_optimizations(store, limit=args.limit)
    if args.json:
        output.print_json([finite(vars(o)) for o in listing])
        return 0
    output.table(
        f"{len(listing)} optimization(s)",
        ["id", "project", "name", "status", "created", "jobs", "objective", "best",
         "best task"],
        ([o.id, o.project, o.name, o.status, output.when(o.created_at),
          f"{o.launched}/{o.total_max_jobs}" if o.total_max_jobs else o.launched,
          o.objective, o.best_value, o.best_task] for o in listing),
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hpo.report.files import write_report

    store = store_from(args)
    optimizer_id = store.resolve_task_id(args.id) if args.id else newest_optimizer(store)
    out = Path(args.out or f"hpo-report-{optimizer_id[:8]}")
    with _report_progress(enabled=sys.stdout.isatty() and not args.json) as progress:
        result = write_report(store, optimizer_id, out, args.top, png=not args.no_png,
                              progress=progress)
    if result.png_skipped and not args.no_png:
        from hpo.report.files import PNG_FIX

        print(f"{PROG}: warning: PNG images skipped: {result.png_skipped}: {PNG_FIX}; "
              "everything else was written", file=sys.stderr)
    if args.json:
        output.print_json({"id": result.optimizer_id, "out": str(result.out_dir),
                           "index": str(result.index),
                           "files": [str(f) for f in result.files],
                           "png_skipped": result.png_skipped})
        return 0
    assert result.data is not None
    summary = result.data.summary
    _jobs_table(summary, summary.top, f"best {len(summary.top)} job(s)")
    _report_listing(result)
    return 0


def _report_listing(result: Any) -> None:
    """What was written, one line per group of files, the index last."""
    by_suffix: dict[str, list[str]] = {}
    for path in result.files:
        if path != result.index:
            by_suffix.setdefault(path.suffix, []).append(path.name)
    for suffix, names in by_suffix.items():
        _out(f"wrote {len(names)} {suffix[1:]} file(s) in {result.out_dir}: {', '.join(names)}")
    _out(f"index: {result.index.resolve()}")


@contextlib.contextmanager
def _report_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A rich progress bar of the report's steps in a terminal; nothing when piped (the
    listing at the end says what was written)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=output.console, transient=True) as bar:
        task = bar.add_task("report", total=None)

        def progress(label: str, done: int, total: int) -> None:
            bar.update(task, description=label, completed=done, total=total)

        yield progress


# ----- running an optimization with a display ------------------------------------------


class _Interrupts:
    """SIGINT/SIGTERM while an optimization runs: the first asks for a clean stop, the
    second quits at once."""

    def __init__(self) -> None:
        self.count = 0
        self.stop = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.stop.set()
        if self.count > 1:
            raise KeyboardInterrupt


def _run(optimizer: Any, store: Store, args: argparse.Namespace) -> int:
    display = _make_display(args, optimizer.id)
    display.started(optimizer.id)
    with _Interrupts() as interrupts:
        try:
            if args.local_agents:
                display.note(f"starting {args.local_agents} local agent(s)")
                try:
                    optimizer.start_locally(agents=args.local_agents)
                except BaseException as exc:
                    _fail(store, optimizer.id, f"local agents did not start: {exc}")
                    raise
                display.note(f"jobs run on {args.local_agents} local agent(s), queue "
                             f"{optimizer.config.execution_queue}")
            else:
                optimizer.start()
                display.note(f"jobs go to queue {optimizer.config.execution_queue!r}: "
                             f"agents serve it (hpo-agent --queue "
                             f"{optimizer.config.execution_queue})")
            stop_sent = False
            changes = _Changes(optimizer)
            summary: OptimizationSummary | None = None
            while True:
                done = optimizer.wait(POLL_S)
                if interrupts.stop.is_set() and not stop_sent:
                    stop_sent = True
                    display.note("stopping: every job is stopped (Ctrl-C again to quit at "
                                 "once)")
                    optimizer.stop(timeout=0)
                # Reading the store costs in proportion to the jobs so far: read it when
                # the controller's own counts change, and now and then for the clocks.
                if changes.seen() or done or summary is None:
                    summary = changes.timed(lambda: _summary(store, optimizer.id, args.top))
                display.refresh(summary, final=done)
                if done:
                    break
        except KeyboardInterrupt:
            display.close()
            agents = getattr(optimizer, "_agents", None)
            if agents is not None:
                agents.stop(timeout=5)
            print(f"{PROG}: interrupted: the optimization was left running; "
                  f"`{PROG} resume {optimizer.id}` continues it", file=sys.stderr)
            return 130
        finally:
            display.close()
    summary = summarize(store, optimizer.id, top_k=args.top)
    display.finished(summary)
    if interrupts.count:
        return 130
    return 1 if summary.status == Status.failed.value else 0


class _Changes:
    """Whether the running optimization moved since the last look (jobs launched,
    started or ended, from the controller's memory), or REREAD_S passed; and never
    sooner than READ_SHARE times the last read's duration after it, so that on a large
    optimization whose jobs end every moment the display's reads (in proportion to the
    jobs) take at most 1/(READ_SHARE+1) of the time from the controller sharing the
    process."""

    def __init__(self, optimizer: Any) -> None:
        self.controller = optimizer.controller
        self.last: tuple[int, ...] = ()
        self.read_at = 0.0
        self.read_s = 0.0

    def seen(self) -> bool:
        p = self.controller.progress()
        key = (p.launched, p.running, p.queued, p.finished)
        now = time.monotonic()
        if now - self.read_at < READ_SHARE * self.read_s:
            return False  # the change is seen at the next look after the pause
        if key != self.last or now - self.read_at >= REREAD_S:
            self.last, self.read_at = key, now
            return True
        return False

    def timed(self, read: Callable[[], T]) -> T:
        """``read()``, remembering how long it took."""
        start = time.monotonic()
        try:
            return read()
        finally:
            self.read_s = time.monotonic() - start


def _summary(store: Store, optimizer_id: str, top_k: int) -> OptimizationSummary | None:
    try:
        return summarize(store, optimizer_id, top_k=top_k, all_jobs=True)
    except HpoError as exc:  # the store is busy or away a moment: show the next one
        logging.getLogger("hpo.controller").warning("progress not read: %s", exc)
        return None


def _fail(store: Store, optimizer_id: str, message: str) -> None:
    try:
        if store.get_task(optimizer_id).status is Status.running:
            store.set_status(optimizer_id, Status.failed, message=one_line(message))
    except HpoError:
        pass


class _Display:
    """Plain lines: one every few seconds when something changed, one per finished job."""

    def __init__(self, optimizer_id: str) -> None:
        self.id = optimizer_id
        self.t0 = time.monotonic()
        self.seen: set[str] = set()
        self.last_line = ""
        self.last_at = 0.0

    def started(self, optimizer_id: str) -> None:
        _out(optimizer_id)

    def note(self, text: str) -> None:
        _out(f"{self._clock()} {text}")

    def refresh(self, summary: OptimizationSummary | None, final: bool = False) -> None:
        if summary is None:
            return
        ended = self._new_ends(summary)
        for row in ended:
            _out(f"{self._clock()} {_job_line(summary, row)}")
        line = _progress_line(summary)
        now = time.monotonic()
        changed = line != self.last_line
        if (ended or (final and changed) or (changed and now - self.last_at >= PLAIN_PERIOD_S)
                or now - self.last_at >= PLAIN_QUIET_S):
            _out(f"{self._clock()} {line}")
            self.last_line, self.last_at = line, now

    def _new_ends(self, summary: OptimizationSummary) -> list[JobRow]:
        ended = [r for r in reversed(summary.jobs)
                 if Status(r.status) in FINAL_STATUSES and r.task_id not in self.seen]
        self.seen.update(r.task_id for r in ended)
        return ended

    def close(self) -> None:
        pass

    def finished(self, summary: OptimizationSummary) -> None:
        _jobs_table(summary, summary.top, f"best {len(summary.top)} job(s)")
        _out(_end_line(summary))

    def _clock(self) -> str:
        return f"[{_hms(time.monotonic() - self.t0)}]"


class _JsonDisplay(_Display):
    """JSON lines: {"event": "started" | "note" | "job" | "progress" | "finished", ...}."""

    def started(self, optimizer_id: str) -> None:
        _json_line({"event": "started", "id": optimizer_id})

    def note(self, text: str) -> None:
        _json_line({"event": "note", "text": text})

    def refresh(self, summary: OptimizationSummary | None, final: bool = False) -> None:
        if summary is None:
            return
        ended = self._new_ends(summary)
        for row in ended:
            _json_line({"event": "job", **finite(vars(row))})
        now = time.monotonic()
        line = _progress_line(summary)
        if ended or final or (line != self.last_line and now - self.last_at >= PLAIN_PERIOD_S):
            data = summary.to_dict()
            data.pop("jobs"), data.pop("top")
            _json_line({"event": "progress", **data})
            self.last_line, self.last_at = line, now

    def finished(self, summary: OptimizationSummary) -> None:
        _json_line({"event": "finished", "summary": summary.to_dict()})


class _LiveDisplay(_Display):
    """A rich Live panel in a terminal, redrawn twice a second."""

    def __init__(self, optimizer_id: str) -> None:
        from rich.live import Live

        super().__init__(optimizer_id)
        self.notes: list[str] = []
        self.live = Live(console=output.console, refresh_per_second=4, transient=True)
        self.live_started = False

    def note(self, text: str) -> None:
        self.notes = [*self.notes[-2:], text]
        if not self.live_started:
            output.console.print(f"{self._clock()} {text}")

    def refresh(self, summary: OptimizationSummary | None, final: bool = False) -> None:
        if summary is None:
            return
        if not self.live_started:
            self.live.start()
            self.live_started = True
        self.live.update(self._render(summary))

    def _render(self, summary: OptimizationSummary) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        o = summary.objectives[0]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        best = ("-" if summary.best_value is None else
                f"{output.cell(summary.best_value)}  (task {summary.best_task})")
        rows = [
            ("optimization", f"{summary.id}  {summary.name}  ({summary.status})  "
             f"{_hms(time.monotonic() - self.t0)}"),
            ("jobs", _counts(summary)),
            (f"best {o['title']}/{o['series']} ({o['sign']})", best),
            ("budget", _budget(summary)),
            *(("", text) for text in self.notes[-1:]),
        ]
        for label, value in rows:  # Text: never read as rich markup
            grid.add_row(Text(label), Text(value))
        top = _jobs_rich_table(summary, summary.top[:5], "best so far")
        return Group(grid, top) if summary.top else grid

    def close(self) -> None:
        if self.live_started:
            self.live.stop()
            self.live_started = False


def _make_display(args: argparse.Namespace, optimizer_id: str) -> _Display:
    if args.json:
        return _JsonDisplay(optimizer_id)
    if sys.stdout.isatty() and not args.plain:
        return _LiveDisplay(optimizer_id)
    return _Display(optimizer_id)


# ----- formatting ------------------------------------------------------------------------


def _counts(s: OptimizationSummary) -> str:
    total = f"/{s.budget.total_max_jobs}" if s.budget.total_max_jobs else ""
    return (f"{s.launched}{total} launched, {s.done} done, {s.running} running, "
            f"{s.queued} queued, {s.failed} failed")


def _budget(s: OptimizationSummary, jobs: bool = True) -> str:
    b = s.budget

    def part(name: str, used: float, limit: float | None) -> str:
        return f"{name} {used:.1f}" + (f"/{limit:g} min" if limit else " min")

    parts = [part("compute", b.compute_min, b.compute_time_limit),
             part("wall", b.wall_min, b.optimization_time_limit)]
    if jobs:
        parts.insert(0, f"jobs {b.jobs_launched}" + (f"/{b.total_max_jobs}"
                                                    if b.total_max_jobs else ""))
    return ", ".join(parts)


def _progress_line(s: OptimizationSummary) -> str:
    best = ("best -" if s.best_value is None else
            f"best {output.cell(s.best_value)} (task {s.best_task})")
    return f"jobs {_counts(s)} | {best} | {_budget(s, jobs=False)}"


def _job_line(s: OptimizationSummary, row: JobRow) -> str:
    o = s.objectives[0]
    if row.objective is None:
        result = "no objective" + (f" ({one_line(row.message)})" if row.message else "")
    else:
        result = (f"{o['title']}/{o['series']} {output.cell(row.objective)} at iteration "
                  f"{row.iteration if row.iteration is not None else '-'}")
    params = " ".join(f"{short_key(k)}={output.cell(v)}" for k, v in row.parameters.items())
    return f"job {row.task_id} {row.status}: {result} | {params}"


def _end_line(s: OptimizationSummary) -> str:
    best = ("no job gave a result" if s.best_value is None else
            f"best {output.cell(s.best_value)} by task {s.best_task}")
    return (f"optimization {s.id} {s.status}: {s.message or '-'} ({s.launched} job(s), "
            f"{best})")


def _status_fields(s: OptimizationSummary) -> list[tuple[str, Any]]:
    objectives = ", ".join(f"{o['title']}/{o['series']} ({o['sign']})" for o in s.objectives)
    best = (None if s.best_value is None else
            f"{output.cell(s.best_value)} (task {s.best_task})")
    return [
        ("name", f"{s.project} / {s.name}"), ("status", s.status), ("message", s.message),
        ("strategy", s.strategy), ("objective", objectives),
        ("tuned", ", ".join(s.parameters)), ("jobs", _counts(s)),
        ("by status", ", ".join(f"{k} {v}" for k, v in s.counts.items() if v) or None),
        ("best", best), ("budget", _budget(s)),
    ]


def _jobs_columns(s: OptimizationSummary) -> list[str]:
    """The ranked objective, the others (several objectives), the tuned parameters."""
    names = [f"{o['title']}/{o['series']}" for o in s.objectives]
    return ["#", "id", names[0], "iteration", *names[1:],
            *(short_key(k) for k in s.parameters), "status", "duration", "agent"]


def _jobs_cells(s: OptimizationSummary, rows: list[JobRow]) -> list[list[Any]]:
    return [[i, r.task_id, r.objective, r.iteration, *r.objectives[1:len(s.objectives)],
             *(r.parameters.get(k) for k in s.parameters), r.status,
             output.duration(r.started_at, r.ended_at) if r.started_at else None, r.worker]
            for i, r in enumerate(rows, 1)]


def _jobs_table(s: OptimizationSummary, rows: list[JobRow], title: str) -> None:
    output.table(title, _jobs_columns(s), _jobs_cells(s, rows), compact=True)


def _jobs_rich_table(s: OptimizationSummary, rows: list[JobRow], title: str) -> Any:
    """The live panel's table (always in a terminal)."""
    return output.build_table(title, _jobs_columns(s), _jobs_cells(s, rows), compact=True)


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _json_line(data: dict[str, Any]) -> None:
    _out(json.dumps(finite(data), default=str))



def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


if __name__ == "__main__":
    sys.exit(main())
