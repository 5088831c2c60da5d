"""The routes that serve a task's reported files and artifacts (behind the login like
every page).

A file a script reported is the script's content: it is sent as a download
(``Content-Disposition: attachment``) in a sandbox, unless it is a raster image shown in
an ``<img>``; an HTML or SVG file from a task never runs as this site's page."""

from __future__ import annotations

import mimetypes

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from hpo.errors import ConfigError
from hpo.sdk import files
from hpo.ui.pages import store_of, task_id_of
from hpo.ui.reports import INLINE_IMAGES


def report_file(request: Request) -> Response:
    """GET /api/tasks/{id}/reports/{report}: an image or media file a task reported."""
    task_id = task_id_of(request)
    try:
        report_id = int(request.path_params["report"])
    except ValueError:
        raise HTTPException(404) from None
    found = [r.file for r in store_of(request).task_reports(task_id)
             if r.id == report_id and r.kind in ("image", "media")]
    if not found or found[0] is None:
        raise HTTPException(404)
    return _send(found[0])


def artifact_file(request: Request) -> Response:
    """GET /api/tasks/{id}/artifacts/{name}: an artifact's file, as a download."""
    task_id = task_id_of(request)
    try:
        artifact = store_of(request).get_artifact(task_id, request.path_params["name"])
    except ConfigError:
        raise HTTPException(404) from None
    return _send(artifact.file, download=True)


def _send(rel: str, *, download: bool = False) -> Response:
    try:
        path = files.resolve(rel)
    except ConfigError:
        raise HTTPException(404) from None
    if not path.is_file():
        raise HTTPException(404)
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    inline = kind in INLINE_IMAGES and not download
    headers = {"Cache-Control": "private, max-age=3600",
               # The script's content: never this site's page, never its scripts.
               "Content-Security-Policy": "sandbox; default-src 'none'"}
    return FileResponse(path, media_type=kind if inline else "application/octet-stream",
                        filename=None if inline else path.name, headers=headers,
                        content_disposition_type="inline" if inline else "attachment")
