"""The task page's ClearML-style sections: configuration objects, user properties,
plots (drawn by plotly.js from the stored figures), tables, images, media and artifacts
(``report_files`` serves the files)."""

from __future__ import annotations

import mimetypes
from typing import Any

from hpo import typed_params as P
from hpo.errors import ConfigError
from hpo.sdk import configuration as cfg
from hpo.sdk.reports import payload_of
from hpo.store import ReportRecord, Store

PLOT_KINDS = ("plotly", "histogram", "scatter2d", "confusion_matrix")
# Shown inline in an <img>; anything else (HTML, SVG, audio, video) is a download.
INLINE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp",
                           "image/bmp"})
# The newest reports of a task that the page shows per kind: a page stays light for a
# script that reports a plot every step (the store keeps them all).
MAX_PER_KIND = 100


def is_kept_apart(key: str) -> bool:
    """A parameter the page shows in its own section, not among the parameters."""
    return key.startswith((f"{cfg.CONFIGURATION_SECTION}/", f"{cfg.PROPERTIES_SECTION}/"))


def task_sections(store: Store, task_id: str, parameters: dict[str, Any]) -> dict[str, Any]:
    reports = store.task_reports(task_id)
    by_kind: dict[str, list[ReportRecord]] = {}
    for r in reports:
        by_kind.setdefault(r.kind, []).append(r)
    return {
        "configurations": sorted(P.section_of(parameters, cfg.CONFIGURATION_SECTION).items()),
        "properties": sorted(P.section_of(parameters, cfg.PROPERTIES_SECTION).items()),
        "plots": _plots(reports),
        "tables": [_table(r) for r in by_kind.get("table", [])[-MAX_PER_KIND:]],
        "images": [_file(r) for r in by_kind.get("image", [])[-MAX_PER_KIND:]],
        "media": [_file(r) for r in by_kind.get("media", [])[-MAX_PER_KIND:]],
        "artifacts": store.task_artifacts(task_id),
    }


def _plots(reports: list[ReportRecord]) -> dict[str, Any]:
    """One figure per plot title, as ClearML draws them: the newest iteration of each
    series of that title, their traces together."""
    latest: dict[tuple[str, str], ReportRecord] = {}
    for r in reports:
        if r.kind in PLOT_KINDS:
            latest[(r.title, r.series)] = r  # oldest first: the last one wins
    figures: dict[str, Any] = {}
    for (title, _series), r in list(latest.items())[-MAX_PER_KIND:]:
        try:
            figure = payload_of(r.kind, r.payload, r.file)
        except (OSError, ValueError, ConfigError):
            continue
        if not isinstance(figure, dict):
            continue
        key = f"{title} (iteration {r.iteration})" if r.kind == "plotly" else title
        if key in figures and r.kind != "plotly":
            figures[key]["data"] += figure.get("data", [])
        else:
            layout = {**figure.get("layout", {}), "title": {"text": key, "x": 0.02}}
            figures[key] = {"data": list(figure.get("data", [])), "layout": layout}
    return figures


def _table(r: ReportRecord) -> dict[str, Any]:
    try:
        payload = payload_of(r.kind, r.payload, r.file)
    except (OSError, ValueError, ConfigError) as exc:
        payload = {"columns": ["unreadable"], "rows": [[str(exc)]]}
    return {"title": r.title, "series": r.series, "iteration": r.iteration,
            "columns": payload.get("columns", []), "rows": payload.get("rows", [])}


def _file(r: ReportRecord) -> dict[str, Any]:
    kind = mimetypes.guess_type(r.file or "")[0]
    return {"id": r.id, "title": r.title, "series": r.series, "iteration": r.iteration,
            "url": (r.payload or {}).get("url") if isinstance(r.payload, dict) else None,
            "has_file": r.file is not None, "inline": kind in INLINE_IMAGES,
            "name": (r.file or "").rsplit("/", 1)[-1]}
