"""What a report shows, read from the store in a few queries: the summary rows, how each
tuned parameter is drawn (numbers, a log scale or categories), the objective's learning
curve of every job, and the optimization's timeline (budget used and workers busy).

The same ``ReportData`` feeds ``hpo-controller report`` (files) and ``hpo ui`` (the live
page), so both always show the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from hpo import typed_params as P
from hpo.lifecycle import Status
from hpo.optimization.config import OptimizerConfig
from hpo.optimization.summary import JobRow, OptimizationSummary, load_config, summarize
from hpo.records import Scalar, TaskRecord
from hpo.space.ranges import (
    DiscreteParameterRange,
    LogUniformParameterRange,
    Parameter,
    ParameterSet,
)
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
    max_concurrent: int | None = None  # max_number_of_concurrent_tasks


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
    optimizer_id = store.resolve_task_id(optimizer_id)
    # The children are read once (newest first, as summarize() lists its jobs), for the
    # summary, the launch order and the timeline.
    newest_first = store.find_tasks(parent=optimizer_id)
    summary = summarize(store, optimizer_id, top_k, all_jobs=True, children=newest_first)
    children = sorted(newest_first, key=lambda c: (c.created_at, c.id))
    config = load_config(store, summary.id)
    task = store.get_task(summary.id)
    rows = {r.task_id: r for r in summary.jobs}
    launched = [rows[c.id] for c in children]
    primary = config.objectives[0]
    return ReportData(
        summary=summary,
        objective_label=f"{primary.title}/{primary.series} ({primary.sign})",
        minimize=primary.minimize,
        axes=param_axes(config),
        launched=launched,
        curves=load_curves(store, summary.id, config, launched),
        timeline=build_timeline(task, children, config),
    )


# ----- parameter axes ---------------------------------------------------------------------


def param_axes(config: OptimizerConfig) -> list[ParamAxis]:
    """One axis per tuned parameter, in config order (a name set twice: the first)."""
    axes: dict[str, ParamAxis] = {}
    for param in config.hyper_parameters:
        for axis in _axes_of(param):
            axes.setdefault(axis.name, axis)
    return list(axes.values())


def _axes_of(param: Parameter) -> list[ParamAxis]:
    if isinstance(param, LogUniformParameterRange):
        return [ParamAxis(param.key, "log", log_base=float(param.base))]
    if isinstance(param, DiscreteParameterRange):
        return [_axis_of_values(param.key, param.values())]
    if isinstance(param, ParameterSet):
        combos: list[dict[str, Any]] = param.values()
        return [_axis_of_values(P.qualify(name), [c[name] for c in combos if name in c])
                for name in param.names]
    return [ParamAxis(param.key, "linear")]


def _axis_of_values(key: str, values: Iterable[Any]) -> ParamAxis:
    """Numbers keep a numeric axis (batch sizes 64, 128, 256 read better to scale);
    anything else (strings, booleans, lists, null) is drawn as categories."""
    values = list(values)
    if values and all(_is_number(v) for v in values):
        return ParamAxis(key, "linear")
    return ParamAxis(key, "categorical", categories=list(dict.fromkeys(str(v) for v in values)))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ----- learning curves --------------------------------------------------------------------


def load_curves(store: Store, optimizer_id: str, config: OptimizerConfig,
                launched: list[JobRow]) -> list[Curve]:
    """The primary objective of every job against its iteration, read in one query."""
    primary = config.objectives[0]
    points: dict[str, dict[int, float]] = {}
    for s in store.children_series(optimizer_id, primary.title, primary.series):
        _add_point(points, s)
    curves = [_curve(row, points[row.task_id]) for row in launched if points.get(row.task_id)]
    longest = max((c.iterations[-1] for c in curves), default=0)
    for curve in curves:
        curve.stopped_early = (curve.status in (Status.stopped.value, Status.failed.value)
                               and curve.iterations[-1] < longest)
    return curves


def _add_point(points: dict[str, dict[int, float]], s: Scalar) -> None:
    if math.isnan(s.value):
        return
    # Oldest first: a value reported twice for one iteration keeps the latest.
    points.setdefault(s.task_id, {})[s.iteration] = s.value


def _curve(row: JobRow, points: dict[int, float]) -> Curve:
    iterations = sorted(points)
    return Curve(task_id=row.task_id, status=row.status, iterations=iterations,
                 values=[points[i] for i in iterations], stopped_early=False)


# ----- timeline ---------------------------------------------------------------------------


def build_timeline(task: TaskRecord, children: list[TaskRecord], config: OptimizerConfig,
                   now: float | None = None) -> Timeline:
    """Step series sampled at every job event, by one sweep over the sorted events."""
    t0 = task.started_at if task.started_at is not None else task.created_at
    end = task.ended_at if task.ended_at is not None else (now or time.time())
    events = sorted(_events(children), key=lambda e: (e[0], e[1]))
    end = max([end, *(e[0] for e in events)])
    times = sorted({t0, *(max(t0, e[0]) for e in events), end})
    line = Timeline(seconds=[], jobs_launched=[], compute_min=[], wall_min=[], running=[],
                    workers=[], total_max_jobs=config.total_max_jobs,
                    compute_time_limit=config.compute_time_limit,
                    optimization_time_limit=config.optimization_time_limit,
                    max_concurrent=config.max_number_of_concurrent_tasks)
    launched = running = 0
    closed_s = start_sum = 0.0  # run time of ended jobs; sum of running jobs' starts
    workers: set[str] = set()
    i = 0
    for t in times:
        while i < len(events) and events[i][0] <= t:
            at, kind, child = events[i]
            i += 1
            if kind == _LAUNCH:
                launched += 1
            elif kind == _START:
                running += 1
                start_sum += at
                if child.worker:
                    workers.add(child.worker)
            else:
                assert child.started_at is not None  # only started jobs have an end event
                running -= 1
                start_sum -= child.started_at
                closed_s += max(0.0, at - child.started_at)
        line.seconds.append(t - t0)
        line.jobs_launched.append(launched)
        line.compute_min.append(max(0.0, closed_s + running * t - start_sum) / 60)
        line.wall_min.append((t - t0) / 60)
        line.running.append(running)
        line.workers.append(len(workers))
    return line


# Event kinds, in the order they apply at one instant: an end before a start, so a
# worker that hands over at once is never counted as two jobs running.
_END, _LAUNCH, _START = 0, 1, 2


def _events(children: list[TaskRecord]) -> list[tuple[float, int, TaskRecord]]:
    events: list[tuple[float, int, TaskRecord]] = []
    for child in children:
        events.append((child.created_at, _LAUNCH, child))
        if child.started_at is not None:
            events.append((child.started_at, _START, child))
            if child.ended_at is not None:
                events.append((max(child.ended_at, child.started_at), _END, child))
    return events
