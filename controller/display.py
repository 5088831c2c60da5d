"""How ``hpo-controller start`` / ``resume`` shows a running optimization: plain lines,
JSON lines (``--json``) or a live panel in a terminal."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, fields
from typing import Any

from hpo import durations
from hpo.cli import output
from hpo.controller import formatting as fmt
from hpo.defaults import PLAIN_LINE_PERIOD_S, PLAIN_LINE_QUIET_S
from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.optimization.summary import JobRow, OptimizationSummary, finite


class Display:
    """Plain lines: one every few seconds when something changed, one per finished job."""

    def __init__(self, optimizer_id: str) -> None:
        self.id = optimizer_id
        self.t0 = time.monotonic()
        self.seen: set[str] = set()
        self.last_line = ""
        self.last_at = 0.0

    def started(self, optimizer_id: str) -> None:
        fmt.out(optimizer_id)

    def note(self, text: str) -> None:
        fmt.out(f"{self._clock()} {text}")

    def refresh(self, summary: OptimizationSummary | None, final: bool = False,
                ended: list[JobRow] | None = None) -> None:
        """Show ``summary``; ``ended``: the rows that ended since the last one, oldest
        first, when the caller knows them (``LiveSummary.ended``), else found among
        its jobs."""
        if summary is None:
            return
        ended = self._new_ends(summary, ended)
        for row in ended:
            fmt.out(f"{self._clock()} {fmt.job_line(summary, row)}")
        line = fmt.progress_line(summary)
        now = time.monotonic()
        changed = line != self.last_line
        if (ended or (final and changed) or (changed and now - self.last_at >= PLAIN_LINE_PERIOD_S)
                or now - self.last_at >= PLAIN_LINE_QUIET_S):
            fmt.out(f"{self._clock()} {line}")
            self.last_line, self.last_at = line, now

    def _new_ends(self, summary: OptimizationSummary, ended: list[JobRow] | None
                  ) -> list[JobRow]:
        """The rows ended and not shown yet, oldest first."""
        rows: Iterable[JobRow] = reversed(summary.jobs) if ended is None else ended
        ended = [r for r in rows
                 if Status(r.status) in FINAL_STATUSES and r.task_id not in self.seen]
        self.seen.update(r.task_id for r in ended)
        return ended

    def close(self) -> None:
        pass

    def finished(self, summary: OptimizationSummary) -> None:
        fmt.jobs_table(summary, summary.top, f"best {len(summary.top)} job(s)")
        fmt.out(fmt.end_line(summary))

    def _clock(self) -> str:
        return f"[{durations.clock(time.monotonic() - self.t0)}]"


class JsonDisplay(Display):
    """JSON lines: {"event": "started" | "note" | "job" | "progress" | "finished", ...}."""

    def started(self, optimizer_id: str) -> None:
        fmt.json_line({"event": "started", "id": optimizer_id})

    def note(self, text: str) -> None:
        fmt.json_line({"event": "note", "text": text})

    def refresh(self, summary: OptimizationSummary | None, final: bool = False,
                ended: list[JobRow] | None = None) -> None:
        if summary is None:
            return
        ended = self._new_ends(summary, ended)
        for row in ended:
            fmt.json_line({"event": "job", **finite(vars(row))})
        now = time.monotonic()
        line = fmt.progress_line(summary)
        if ended or final or (line != self.last_line and now - self.last_at >= PLAIN_LINE_PERIOD_S):
            fmt.json_line({"event": "progress", **progress_fields(summary)})
            self.last_line, self.last_at = line, now

    def finished(self, summary: OptimizationSummary) -> None:
        fmt.json_line({"event": "finished", "summary": summary.to_dict()})


class LiveDisplay(Display):
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

    def refresh(self, summary: OptimizationSummary | None, final: bool = False,
                ended: list[JobRow] | None = None) -> None:
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
             f"{durations.clock(time.monotonic() - self.t0)}"),
            ("jobs", fmt.counts(summary)),
            (f"best {o['title']}/{o['series']} ({o['sign']})", best),
            ("budget", fmt.budget(summary)),
            *(("", text) for text in self.notes[-1:]),
        ]
        for label, value in rows:  # Text: never read as rich markup
            grid.add_row(Text(label), Text(value))
        top = fmt.jobs_rich_table(summary, summary.top[:5], "best so far")
        return Group(grid, top) if summary.top else grid

    def close(self) -> None:
        if self.live_started:
            self.live.stop()
            self.live_started = False


def progress_fields(summary: OptimizationSummary) -> dict[str, Any]:
    """``summary.to_dict()`` without its jobs and top rows, built without them: a
    progress event costs the same at job 10 and job 10,000."""
    data = {f.name: getattr(summary, f.name) for f in fields(summary)
            if f.name not in ("jobs", "top")}
    data["budget"] = asdict(summary.budget)
    return finite(data)


def make_display(optimizer_id: str, *, json: bool, plain: bool) -> Display:
    """JSON lines when asked, the live panel in a terminal, else plain lines."""
    if json:
        return JsonDisplay(optimizer_id)
    if sys.stdout.isatty() and not plain:
        return LiveDisplay(optimizer_id)
    return Display(optimizer_id)
