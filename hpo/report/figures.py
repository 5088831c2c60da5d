"""The report's plots as plotly figures, built from ``ReportData`` only.

Every builder takes a ReportData and returns a
``plotly.graph_objects.Figure`` (an empty-state figure with an annotation when there is
nothing to draw yet, never an exception). Figures are self-contained (no file paths):
the report writes them as HTML and PNG, the web page draws them from ``fig.to_json()``.
Only ``plotly.graph_objects`` (plotly.express would need pandas).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.optimization.summary import short_key
from hpo.report.tables import extra_objectives

if TYPE_CHECKING:
    from hpo.optimization.summary import JobRow
    from hpo.report.data import Curve, ParamAxis, ReportData

# file stem -> title; the order is the order of the report's index and the web page.
FIGURES: dict[str, str] = {
    "parallel_coordinates": "Parameters and objective",
    "objective": "Objective per job, with the best so far",
    "learning_curves": "Learning curves",
    "budget": "Budget used over time",
    "workers": "Workers busy over time",
}


def build_figures(data: ReportData) -> dict[str, go.Figure]:
    """Every figure of FIGURES, by stem."""
    return {stem: build_figure(stem, data) for stem in FIGURES}


def build_figure(stem: str, data: ReportData) -> go.Figure:
    """One figure of FIGURES; a figure that cannot be drawn says why instead of raising
    (a report or a live page must show the other plots whatever one of them meets)."""
    try:
        fig = _BUILDERS[stem](data)
    except Exception as exc:  # a bug or odd data in one plot must not lose the others
        fig = empty_figure(f"this plot could not be drawn: {type(exc).__name__}: {exc}")
    fig.update_layout(title={"text": FIGURES[stem], "x": 0.02}, template="plotly_white")
    return fig


def empty_figure(text: str) -> go.Figure:
    """A blank figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper",
                       showarrow=False, font={"size": 16, "color": "#666"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


# ----- parallel coordinates -----------------------------------------------------------------


def parallel_coordinates(data: ReportData) -> go.Figure:
    rows = [r for r in data.launched if _finished(r) and r.objective is not None]
    if not rows:
        return empty_figure("no finished job with an objective yet")
    objectives = [float(r.objective) for r in rows if r.objective is not None]
    dimensions = [_dimension(axis, [r.parameters.get(axis.name) for r in rows])
                  for axis in data.axes]
    dimensions.append({"label": data.objective_label, "values": objectives})
    for i, name in enumerate(extra_objectives(data.summary), 1):  # the others, unranked
        dimensions.append({"label": name, "values": [_objective(r, i) for r in rows]})
    return go.Figure(go.Parcoords(
        dimensions=dimensions,
        # The best jobs bright: viridis is yellow at the top, so reverse it to minimize.
        line={"color": objectives, "colorscale": "Viridis", "reversescale": data.minimize,
              "showscale": True, "colorbar": {"title": {"text": "objective"}}},
        labelangle=-20,
    ))


def _objective(row: JobRow, index: int) -> float:
    value = row.objectives[index] if index < len(row.objectives) else None
    return math.nan if value is None else float(value)


def _dimension(axis: ParamAxis, values: list[Any]) -> dict[str, Any]:
    label = short_key(axis.name)
    if axis.kind == "categorical":
        return _categorical_dimension(label, axis.categories, values)
    if axis.kind == "log":
        return _log_dimension(label, values)
    return {"label": label, "values": [_number(v) for v in values]}


def _categorical_dimension(label: str, categories: list[str], values: list[Any]
                           ) -> dict[str, Any]:
    labels = list(categories)
    texts = ["-" if v is None else str(v) for v in values]
    labels += [t for t in dict.fromkeys(texts) if t not in labels]  # not in the config
    index = {text: i for i, text in enumerate(labels)}
    return {"label": label, "values": [index[t] for t in texts],
            "tickvals": list(range(len(labels))), "ticktext": labels,
            "range": [-0.25, max(len(labels) - 1, 0) + 0.25]}


def _log_dimension(label: str, values: list[Any]) -> dict[str, Any]:
    """Drawn on log10 of the value (parcoords has no log axis); ticks at the decades,
    labelled with the real values."""
    logs = [math.log10(x) if (x := _number(v)) > 0 else math.nan for v in values]
    finite = [x for x in logs if math.isfinite(x)]
    if not finite:
        return {"label": f"{label} (log)", "values": logs}
    low, high = math.floor(min(finite)), math.ceil(max(finite))
    ticks = list(range(low, high + 1))
    return {"label": f"{label} (log)", "values": logs, "range": [low, max(high, low + 1)],
            "tickvals": ticks, "ticktext": [f"{10.0 ** k:g}" for k in ticks]}


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


# ----- objective per job ----------------------------------------------------------------


def objective_per_job(data: ReportData) -> go.Figure:
    jobs = list(enumerate(data.launched, 1))
    scored = [(n, r) for n, r in jobs if r.objective is not None]
    if not scored:
        return empty_figure("no job has reported the objective yet")
    fig = go.Figure()
    done = [(n, r) for n, r in scored if _finished(r)]
    running = [(n, r) for n, r in scored if not _finished(r)]
    fig.add_trace(_job_markers(done, "finished job", {"size": 9, "color": "#1f77b4"}))
    if running:
        fig.add_trace(_job_markers(running, "running (latest value)",
                                   {"size": 9, "color": "#1f77b4", "symbol": "circle-open"}))
    fig.add_trace(_best_so_far(done, data.minimize))
    failed = [(n, r) for n, r in jobs if _finished(r) and r.objective is None]
    if failed:
        # No value to place them by: drawn on the lowest value seen, as red crosses.
        bottom = min(float(r.objective) for _, r in scored if r.objective is not None)
        fig.add_trace(go.Scatter(
            x=[n for n, _ in failed], y=[bottom] * len(failed), mode="markers",
            name="failed / no objective (drawn at the bottom)",
            marker={"symbol": "x", "size": 10, "color": "#d62728"},
            text=[_hover(r) for _, r in failed], hoverinfo="text"))
    # Whole job numbers: a tick per job while they fit.
    fig.update_xaxes(title_text="job, in launch order",
                     dtick=1 if len(jobs) <= 30 else None)
    fig.update_yaxes(title_text=data.objective_label)
    return fig


def _job_markers(jobs: list[tuple[int, JobRow]], name: str, marker: dict[str, Any]
                 ) -> go.Scatter:
    return go.Scatter(x=[n for n, _ in jobs], y=[r.objective for _, r in jobs],
                      mode="markers", name=name, marker=marker,
                      text=[_hover(r) for _, r in jobs], hoverinfo="text+y")


def _best_so_far(jobs: list[tuple[int, JobRow]], minimize: bool) -> go.Scatter:
    better: Callable[[float, float], bool] = (lambda a, b: a < b) if minimize else (
        lambda a, b: a > b)
    xs, ys = [], []
    best: float | None = None
    for n, row in jobs:
        value = float(row.objective) if row.objective is not None else math.nan
        if best is None or better(value, best):
            best = value
        xs.append(n)
        ys.append(best)
    return go.Scatter(x=xs, y=ys, mode="lines", name="best so far",
                      line={"shape": "hv", "color": "#ff7f0e", "width": 2})


def _hover(row: JobRow) -> str:
    params = "<br>".join(f"{short_key(k)} = {v}" for k, v in row.parameters.items())
    return f"task {row.task_id[:8]} ({row.status})<br>{params}"


# ----- learning curves --------------------------------------------------------------------


def learning_curves(data: ReportData) -> go.Figure:
    """One line per job, drawn as one trace per style (job, ended early, best): the
    curves of a style are joined with gaps, so the figure stays three traces (plus
    markers for one-point curves) however many jobs there are. A trace per job made
    plotly validate thousands of traces: 0.8 s at 3,000 jobs (bench/report.py)."""
    if not data.curves:
        return empty_figure("no job has reported the objective yet")
    best = data.summary.best_task
    groups: dict[str, list[Curve]] = {}
    styles: dict[str, dict[str, Any]] = {}
    for curve in data.curves:
        group, style = _curve_style(curve.task_id == best, curve.stopped_early)
        groups.setdefault(group, []).append(curve)
        styles[group] = style
    fig = go.Figure()
    # Grey curves at the back, the best job last, so it is drawn on top of the others.
    for group in sorted(groups, key=CURVE_LAYERS.index):
        x, y, text = _joined(groups[group])
        fig.add_trace(go.Scatter(x=x, y=y, text=text, mode="lines", name=group,
                                 legendgroup=group, hoverinfo="text+x+y", **styles[group]))
        single = [c for c in groups[group] if len(c.values) == 1]
        if single:  # a one-point line is invisible: show it as a marker
            color = styles[group]["line"]["color"]
            fig.add_trace(go.Scatter(
                x=[c.iterations[0] for c in single], y=[c.values[0] for c in single],
                text=[_curve_label(c) for c in single], mode="markers", name=group,
                legendgroup=group, showlegend=False, hoverinfo="text+x+y",
                marker={"color": color, "size": 6}))
    fig.update_xaxes(title_text="iteration")
    fig.update_yaxes(title_text=data.objective_label)
    return fig


def _joined(curves: list[Curve]) -> tuple[list[Any], list[Any], list[str | None]]:
    """The points of several curves in one series, a None between two curves."""
    x: list[Any] = []
    y: list[Any] = []
    text: list[str | None] = []
    for curve in curves:
        label = _curve_label(curve)
        x.extend(curve.iterations)
        y.extend(curve.values)
        text.extend([label] * len(curve.values))
        x.append(None)
        y.append(None)
        text.append(None)
    return x, y, text


def _curve_label(curve: Curve) -> str:
    return f"task {curve.task_id[:8]} ({curve.status})"


CURVE_LAYERS = ["ended early", "job", "best job"]  # back to front


def _curve_style(best: bool, stopped_early: bool) -> tuple[str, dict[str, Any]]:
    if best:
        return "best job", {"line": {"color": "#d62728", "width": 4}}
    if stopped_early:
        return "ended early", {"line": {"color": "#999999", "width": 1, "dash": "dot"},
                               "opacity": 0.6}
    return "job", {"line": {"color": "#1f77b4", "width": 1.5}, "opacity": 0.8}


# ----- budget and workers over time -------------------------------------------------------


def budget(data: ReportData) -> go.Figure:
    t = data.timeline
    if not data.launched:
        return empty_figure("no job launched yet")
    minutes = [s / 60 for s in t.seconds]
    series: Sequence[tuple[str, Sequence[float], float | None]] = (
        ("jobs launched", t.jobs_launched, t.total_max_jobs),
        ("compute minutes", t.compute_min, t.compute_time_limit),
        ("wall minutes", t.wall_min, t.optimization_time_limit),
    )
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=[name for name, _, _ in series])
    for row, (name, values, limit) in enumerate(series, 1):
        # Jobs launched jump at each launch; compute and wall time grow steadily between
        # two events (at the rate of the jobs running, and 1), so straight lines are exact.
        shape = "hv" if row == 1 else "linear"
        fig.add_trace(go.Scatter(x=minutes, y=list(values), mode="lines", name=name,
                                 line={"shape": shape}), row=row, col=1)
        if limit:
            fig.add_hline(y=limit, line={"dash": "dash", "color": "#d62728"}, row=row, col=1,
                          annotation_text=f"limit {limit:g}",
                          annotation_position="top left")
        fig.update_yaxes(title_text=name, rangemode="tozero", row=row, col=1)
    fig.update_xaxes(title_text="minutes since the optimization started", row=3, col=1)
    fig.update_layout(showlegend=False)
    return fig


def workers(data: ReportData) -> go.Figure:
    t = data.timeline
    if not data.launched:
        return empty_figure("no job launched yet")
    minutes = [s / 60 for s in t.seconds]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=minutes, y=t.running, mode="lines", name="jobs running",
                             line={"shape": "hv", "width": 2, "color": "#1f77b4"}))
    fig.add_trace(go.Scatter(x=minutes, y=t.workers, mode="lines", name="agents seen",
                             line={"shape": "hv", "dash": "dot", "color": "#2ca02c"}))
    if t.max_concurrent:
        fig.add_hline(y=t.max_concurrent, line={"dash": "dash", "color": "#aaaaaa"},
                      annotation_text=f"max concurrent {t.max_concurrent}",
                      annotation_position="top left")
    fig.update_xaxes(title_text="minutes since the optimization started")
    top = max([*t.running, *t.workers, t.max_concurrent or 0])
    fig.update_yaxes(title_text="jobs / agents", rangemode="tozero",
                     dtick=1 if top <= 10 else None)
    return fig


def _finished(row: JobRow) -> bool:
    return Status(row.status) in FINAL_STATUSES


_BUILDERS: dict[str, Callable[[ReportData], go.Figure]] = {
    "parallel_coordinates": parallel_coordinates,
    "objective": objective_per_job,
    "learning_curves": learning_curves,
    "budget": budget,
    "workers": workers,
}
