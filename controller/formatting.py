"""An optimization's summary as ``hpo-controller`` prints it: counts, budget, one line
per job, the end line, the status fields and the jobs tables."""

from __future__ import annotations

import json
import sys
from typing import Any

from hpo.cli import output
from hpo.cli.common import one_line
from hpo.optimization.ends import describe_ends
from hpo.optimization.summary import (
    JobRow,
    OptimizationSummary,
    finite,
    short_key,
    shown_status,
)


def launch_counts(s: OptimizationSummary) -> str:
    total = f"/{s.budget.total_max_jobs}" if s.budget.total_max_jobs else ""
    return f"{s.launched}{total} launched, {s.running} running, {s.queued} queued"


def counts(s: OptimizationSummary) -> str:
    """Jobs launched, running and queued, then how the finished ones ended, in the
    vocabulary of ``hpo.optimization.ends`` (the same words as the tables' status)."""
    return f"{launch_counts(s)}; ended: {describe_ends(s.ends)}"


def budget(s: OptimizationSummary, jobs: bool = True) -> str:
    b = s.budget

    def part(name: str, used: float, limit: float | None) -> str:
        return f"{name} {used:.1f}" + (f"/{limit:g} min" if limit else " min")

    parts = [part("compute", b.compute_min, b.compute_time_limit),
             part("wall", b.wall_min, b.optimization_time_limit)]
    if jobs:
        parts.insert(0, f"jobs {b.jobs_launched}" + (f"/{b.total_max_jobs}"
                                                    if b.total_max_jobs else ""))
    return ", ".join(parts)


def progress_line(s: OptimizationSummary) -> str:
    best = ("best -" if s.best_value is None else
            f"best {output.cell(s.best_value)} (task {s.best_task})")
    return f"jobs {counts(s)} | {best} | {budget(s, jobs=False)}"


def job_line(s: OptimizationSummary, row: JobRow) -> str:
    o = s.objectives[0]
    if row.objective is None:
        result = "no result" + (f" ({one_line(row.message)})" if row.message else "")
    else:
        result = (f"{o['title']}/{o['series']} {output.cell(row.objective)} at iteration "
                  f"{row.iteration if row.iteration is not None else '-'}")
    params = " ".join(f"{short_key(k)}={output.cell(v)}" for k, v in row.parameters.items())
    return f"job {row.task_id} {row.state}: {result} | {params}"


def end_line(s: OptimizationSummary) -> str:
    best = ("no job gave a result" if s.best_value is None else
            f"best {output.cell(s.best_value)} by task {s.best_task}")
    if not s.started:
        return (f"optimization {s.id} was created and never started: no job ran "
                "(HyperParameterOptimizer.start() was not called)")
    return (f"optimization {s.id} {s.status}: {s.message or '-'} ({s.launched} job(s), "
            f"{best})")


def status_fields(s: OptimizationSummary) -> list[tuple[str, Any]]:
    objectives = ", ".join(f"{o['title']}/{o['series']} ({o['sign']})" for o in s.objectives)
    best = (None if s.best_value is None else
            f"{output.cell(s.best_value)} (task {s.best_task})")
    return [
        ("name", f"{s.project} / {s.name}"), ("status", shown_status(s.status, s.started)),
        ("message", s.message if s.started else
         "created, never started: no job ran (HyperParameterOptimizer.start() was not "
         "called)"),
        ("strategy", s.strategy), ("objective", objectives),
        ("tuned", ", ".join(s.parameters)), ("jobs", launch_counts(s)),
        ("ended", describe_ends(s.ends)),
        ("best", best), ("budget", budget(s)),
    ]


def _budgeted(rows: list[JobRow]) -> bool:
    """Whether the jobs ran on budgets of their own (BOHB, ASHA): then the ranking is by
    budget first, and a table without that column would look unsorted."""
    return any(r.budget is not None for r in rows)


def _jobs_columns(s: OptimizationSummary, rows: list[JobRow]) -> list[str]:
    """The ranked objective, the budget (with budgets), the others (several
    objectives), the tuned parameters."""
    names = [f"{o['title']}/{o['series']}" for o in s.objectives]
    return ["#", "id", names[0], "iteration", *(["budget"] if _budgeted(rows) else []),
            *names[1:], *(short_key(k) for k in s.parameters), "status", "duration",
            "agent"]


def _jobs_cells(s: OptimizationSummary, rows: list[JobRow]) -> list[list[Any]]:
    budget = _budgeted(rows)
    return [[i, r.task_id, r.objective, r.iteration, *([r.budget] if budget else []),
             *r.objectives[1:len(s.objectives)],
             *(r.parameters.get(k) for k in s.parameters), r.state,
             output.duration(r.started_at, r.ended_at) if r.started_at else None, r.worker]
            for i, r in enumerate(rows, 1)]


def jobs_table(s: OptimizationSummary, rows: list[JobRow], title: str) -> None:
    output.table(title, _jobs_columns(s, rows), _jobs_cells(s, rows), compact=True)


def jobs_rich_table(s: OptimizationSummary, rows: list[JobRow], title: str) -> Any:
    """The live panel's table (always in a terminal)."""
    return output.build_table(title, _jobs_columns(s, rows), _jobs_cells(s, rows),
                              compact=True)


def out(text: str) -> None:
    """One line on stdout, at once (a pipe reads the progress as it comes)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def json_line(data: dict[str, Any]) -> None:
    out(json.dumps(finite(data), default=str))
