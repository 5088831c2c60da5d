"""A task's scalars as plotly figures: one line chart per title, one trace per series.
The agent's resource samples (titles starting with ``:monitor:``) are kept apart, so
the page shows them as the machine monitor."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING

from hpo.records import Scalar

if TYPE_CHECKING:
    import plotly.graph_objects as go

MONITOR_PREFIX = ":monitor:"


def scalar_figures(scalars: list[Scalar]) -> tuple[dict[str, go.Figure], dict[str, go.Figure]]:
    """(figures of the task's own titles, by title; monitor figures, one per resource)."""
    series: dict[str, dict[str, list[Scalar]]] = defaultdict(lambda: defaultdict(list))
    for s in scalars:
        series[s.title][s.series].append(s)
    own, monitor = {}, {}
    for title in sorted(series):
        if title.startswith(MONITOR_PREFIX):
            # One chart per resource: CPU %, MB and GPU % do not share an axis.
            for name, points in sorted(series[title].items()):
                label = f"{title.removeprefix(MONITOR_PREFIX)}: {name}"
                monitor[label] = line_chart(label, {name: points}, x_title="sample")
        else:
            own[title] = line_chart(title, series[title])
    return own, monitor


def line_chart(title: str, by_series: dict[str, list[Scalar]], x_title: str = "iteration"
               ) -> go.Figure:
    import plotly.graph_objects as go

    figure = go.Figure()
    for name in sorted(by_series):
        points = sorted(by_series[name], key=lambda s: (s.iteration, s.id))
        figure.add_trace(go.Scatter(
            x=[p.iteration for p in points],
            # NaN is not JSON: a gap in the line.
            y=[None if math.isnan(p.value) else p.value for p in points],
            mode="lines+markers" if len(points) < 50 else "lines", name=name))
    figure.update_layout(
        title=title, height=300, margin={"l": 50, "r": 20, "t": 40, "b": 40},
        xaxis_title=x_title, legend={"orientation": "h", "y": -0.25},
        template="plotly_white")
    return figure
