"""The report's plots as plotly figures, built from ``ReportData`` only.

CONTRACT (fixed; the bodies are being written): every builder takes a ReportData and
returns a ``plotly.graph_objects.Figure`` (an empty-state figure with an annotation when
there is nothing to draw yet, never an exception).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from hpo.report.data import ReportData

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
    raise NotImplementedError
