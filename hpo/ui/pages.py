"""The HTML pages. They render what the store holds when they are opened; the live
parts (tables, plots, log) are filled and refreshed by static/*.js from the API."""

from __future__ import annotations

from typing import Any

import plotly
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hpo.limits import check_task_id
from hpo.optimization.summary import summarize
from hpo.report.figures import FIGURES
from hpo.store import Store
from hpo.ui import reports, views

DEFAULT_TOP_K = 10


def store_of(request: Request) -> Store:
    store: Store = request.app.state.store.get()
    return store


def task_id_of(request: Request) -> str:
    """The task id in the URL, resolved; a malformed one (not 4 to 32 hex digits) is a
    404 before any query, so a 100 KB id costs nothing."""
    text = check_task_id(request.path_params["id"])
    return store_of(request).resolve_task_id(text)


def render(request: Request, template: str, context: dict[str, Any], *,
           status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    # The plotly version in the script URL lets browsers cache plotly.js for good.
    response: Response = request.app.state.templates.TemplateResponse(
        request, template, {"plotly_version": plotly.__version__, **context},
        status_code=status_code, headers=headers)
    return response


def error_response(request: Request, status: int, title: str, message: str, *,
                   headers: dict[str, str] | None = None) -> Response:
    """An error as JSON for the API, as a page for a person."""
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": title, "message": message}, status_code=status,
                            headers=headers)
    return render(request, "error.html", {"title": title, "message": message},
                  status_code=status, headers=headers)


def top_k(request: Request) -> int:
    try:
        return max(1, min(100, int(request.query_params.get("top", DEFAULT_TOP_K))))
    except ValueError:
        return DEFAULT_TOP_K


def index(request: Request) -> Response:
    store = store_of(request)
    page = views.front_page(store, request.app.state.listings.rows(store))
    return render(request, "index.html", {"page": page})


def optimization(request: Request) -> Response:
    optimizer_id = task_id_of(request)
    store = store_of(request)
    store.load_optimization(optimizer_id)  # TaskNotFound (404) for a task that is not one
    k = top_k(request)
    summary = summarize(store, optimizer_id, top_k=k)
    return render(request, "optimization.html",
                  {"s": summary, "top_k": k, "figures": FIGURES})


def task(request: Request) -> Response:
    task_id = task_id_of(request)
    store = store_of(request)
    record = store.get_task(task_id)
    return render(request, "task.html", {
        "t": views.task_fields(record),
        "parameters": sorted((k, v) for k, v in record.parameters.items()
                             if not reports.is_kept_apart(k)),
        "tuned": views.tuned_parameters(store, record),
        "tags": record.tags,
        "comment": record.comment,
        **reports.task_sections(store, task_id, record.parameters),
    })
