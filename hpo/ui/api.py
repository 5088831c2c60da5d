"""The JSON endpoints the pages poll, the two stop buttons, and plotly.js.

Change detection: each live endpoint computes a cheap version key of what it shows
(views.*_version) and sends it as the ETag; a poll that sends it back in If-None-Match
gets 304 with no body, before the report is loaded or a figure is drawn."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from importlib import resources
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from hpo.ui import views
from hpo.ui.caches import AnswerCache
from hpo.ui.pages import store_of, task_id_of, top_k

NO_CACHE = {"Cache-Control": "private, no-cache"}  # revalidated (ETag); no proxy keeps it


def conditional_json(request: Request, key: Hashable, version: str,
                     build: Callable[[], dict[str, Any]]) -> Response:
    """304 when the client already has ``version``; else the view's answer as JSON,
    shared through the answer cache (which may still serve the previous version of a
    view that is slow to build: then a client that has it gets 304 too)."""
    answers: AnswerCache = request.app.state.answers
    sent = request.headers.get("if-none-match")
    if sent == f'"{version}"':
        return Response(status_code=304, headers={"ETag": sent, **NO_CACHE})
    served, body = answers.get(key, version, lambda: bytes(JSONResponse(
        {"version": version, **build()}).body))
    headers = {"ETag": f'"{served}"', **NO_CACHE}
    if sent == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def optimization(request: Request) -> Response:
    optimizer_id = task_id_of(request)
    store = store_of(request)
    k = top_k(request)
    version = views.optimization_version(store, optimizer_id, k)
    return conditional_json(request, ("optimization", optimizer_id, k), version,
                            lambda: views.optimization_payload(store, optimizer_id, k))


def task(request: Request) -> Response:
    task_id = task_id_of(request)
    store = store_of(request)
    after = request.query_params.get("log_after")
    # A cursor is a log line id: anything else (or absurdly large) means "from the tail".
    log_after = int(after) if after and after.isdigit() and len(after) < 19 else None
    version = views.task_version(store, task_id, log_after or 0)
    return conditional_json(request, ("task", task_id, log_after), version,
                            lambda: views.task_payload(store, task_id, log_after))


def require_json(request: Request) -> None:
    """The stop buttons change state: only a JSON request is accepted. A cross-site page
    cannot send one without a CORS preflight, which this server never grants, so a
    form or a link elsewhere cannot stop anything."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise HTTPException(415, "send Content-Type: application/json")


def stop_optimization(request: Request) -> Response:
    """What `hpo-controller stop` does: a stop request on the optimizer task, which its
    controller turns into stopping every job."""
    require_json(request)
    optimizer_id = task_id_of(request)
    store = store_of(request)
    store.load_optimization(optimizer_id)  # an optimization, not any task
    current = store.get_task(optimizer_id)
    if current.status.is_final:
        return JSONResponse({"id": optimizer_id, "status": current.status.value,
                             "stop_requested": False,
                             "message": f"already {current.status.value}"})
    record = store.request_stop(optimizer_id, "stopped from hpo ui")
    return JSONResponse({"id": optimizer_id, "status": record.status.value,
                         "stop_requested": True,
                         "message": "stop requested: its controller stops every job"})


def stop_task(request: Request) -> Response:
    """What `hpo task abort` does: a queued task stops at once, a running one is flagged
    for its agent. A finished task answers 409."""
    from hpo.queue import dispatch

    require_json(request)
    task_id = task_id_of(request)
    store = store_of(request)
    record = dispatch.abort(store, task_id, "aborted from hpo ui")
    return JSONResponse({"id": record.id, "status": record.status.value,
                         "stop_requested": record.stop_requested,
                         "message": "stop requested" if record.stop_requested
                         else record.status.value})


def plotly_js(request: Request) -> Response:
    """The plotly.js bundled in the plotly package: the pages fetch nothing from a
    network. Its URL carries plotly's version, so it may be cached for good."""
    path = resources.files("plotly") / "package_data" / "plotly.min.js"
    return FileResponse(str(path), media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})
