"""The summary table of a report: the top-k jobs as flat rows (one column per tuned
parameter), written as CSV and JSON and shown in index.html."""

from __future__ import annotations

from typing import Any

from hpo.optimization.summary import JobRow, OptimizationSummary, finite, short_key

FIXED_BEFORE = ["rank", "task_id", "objective", "iteration"]
FIXED_AFTER = ["status", "duration_s", "agent"]


def columns(summary: OptimizationSummary) -> list[str]:
    """The table's columns: fixed ones around one column per tuned parameter, and one
    per objective after the first (``title/series``) when there are several."""
    return [*FIXED_BEFORE, *extra_objectives(summary),
            *(short_key(k) for k in summary.parameters), *FIXED_AFTER]


def extra_objectives(summary: OptimizationSummary) -> list[str]:
    """``title/series`` of every objective after the first (the ranked one)."""
    return [f"{o['title']}/{o['series']}" for o in summary.objectives[1:]]


def rows(summary: OptimizationSummary) -> list[dict[str, Any]]:
    """The top jobs, best first, as {column: value}."""
    return [_row(summary, rank, job) for rank, job in enumerate(summary.top, 1)]


def _row(summary: OptimizationSummary, rank: int, job: JobRow) -> dict[str, Any]:
    row: dict[str, Any] = {"rank": rank, "task_id": job.task_id, "objective": job.objective,
                           "iteration": job.iteration}
    for name, value in zip(extra_objectives(summary), job.objectives[1:], strict=False):
        row[name] = finite(value)
    for key in summary.parameters:
        row[short_key(key)] = finite(job.parameters.get(key))
    row.update(status=job.state, duration_s=_round(job.duration_s), agent=job.worker)
    return row


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
