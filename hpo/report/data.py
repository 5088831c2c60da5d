"""What a report shows, read from the store in a few queries: the summary rows, how each
tuned parameter is drawn (numbers, a log scale or categories), the objective's learning
curve of every job, and the optimization's timeline (budget used and workers busy).

The same ``ReportData`` feeds ``hpo-controller report`` (files) and ``hpo ui`` (the live
page), so both always show the same numbers.

CONTRACT (fixed; helpers implement the bodies, not the shapes):
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hpo.controller.summary import JobRow, OptimizationSummary
from hpo.store import Store

AxisKind = Literal["linear", "log", "categorical"]


@dataclass
class ParamAxis:
    """How one tuned parameter is drawn."""

    name: str  # qualified name, "General/lr"
    kind: AxisKind  # log: LogUniformParameterRange; categorical: discrete non-numeric values,
    # or a ParameterSet member
    categories: list[str] = field(default_factory=list)  # categorical: the labels in config
    # order (str() of each value)
    log_base: float = 10.0


@dataclass
class Curve:
    """The primary objective of one job against its iteration."""

    task_id: str
    status: str
    iterations: list[int]
    values: list[float]  # NaN kept out
    stopped_early: bool  # the job ended (stopped/failed) before the longest curve's length


@dataclass
class Timeline:
    """The optimization over time, as step series sampled at every job event (a job
    launched, started or ended), in seconds since the optimizer started. The last sample
    is "now" (or the optimizer's end)."""

    seconds: list[float]
    jobs_launched: list[int]
    compute_min: list[float]  # job run time summed so far, minutes
    wall_min: list[float]  # = seconds / 60
    running: list[int]  # jobs running at that moment (workers busy)
    workers: list[int]  # distinct agents that have run a job of it so far
    total_max_jobs: int | None
    compute_time_limit: float | None  # minutes
    optimization_time_limit: float | None  # minutes


@dataclass
class ReportData:
    summary: OptimizationSummary  # summarize(store, id, top_k, all_jobs=True)
    objective_label: str  # "validation/accuracy (max)"
    minimize: bool
    axes: list[ParamAxis]  # every tuned parameter, config order
    launched: list[JobRow]  # every job in launch order (oldest first)
    curves: list[Curve]  # launch order; jobs without any report left out
    timeline: Timeline


def load_report(store: Store, optimizer_id: str, top_k: int = 10) -> ReportData:
    """Everything a report of one optimization shows, read from the store."""
    raise NotImplementedError
