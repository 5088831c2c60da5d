"""The Starlette application of ``hpo ui``: routes, templates, static files and the
error pages. Every endpoint is a plain ``def``: the store is synchronous SQLAlchemy, and
Starlette runs such endpoints in its threadpool."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from hpo.errors import InvalidTransition, StoreError, TaskNotFound
from hpo.store import Store, open_store
from hpo.ui import api, caches, formatting, login, pages, report_files
from hpo.ui.auth import Auth
from hpo.ui.hosts import ANY_HOST
from hpo.ui.pages import error_response
from hpo.ui.security import SecurityHeaders

HERE = Path(__file__).resolve().parent


class StoreHolder:
    """Opens the store on first use, and again after a failure: a database that is down
    when the server starts (or restarts later) is an error page until it is back, not a
    server that cannot start."""

    def __init__(self, url: str | None) -> None:
        self._url = url
        self._store: Store | None = None
        self._lock = threading.Lock()

    def get(self) -> Store:
        with self._lock:
            if self._store is None:
                # The view only reads: a mistyped path is an error page, not a new store.
                self._store = open_store(self._url, create=False)
            return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def create_app(store_url: str | None = None, *, allowed_hosts: list[str] | None = None,
               auth: Auth | None = None) -> Starlette:
    """The web app on the store at ``store_url``. ``allowed_hosts`` (Host header names,
    hpo.ui.hosts) guards against DNS rebinding; None or ``*`` among them accepts any
    host. With ``auth``, every page and API call needs a login (hpo.ui.login)."""
    templates = Jinja2Templates(directory=HERE / "templates",  # autoescapes HTML
                                context_processors=[login.page_context])
    formatting.install(templates.env)
    # Outermost first: headers on every answer, the health check before the Host check
    # (a probe names the pod by its address), the Host check before any login.
    middleware = [Middleware(SecurityHeaders), Middleware(login.Healthz)]
    if allowed_hosts and ANY_HOST not in allowed_hosts:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    middleware.append(Middleware(login.Guard, auth=auth, allowed_hosts=allowed_hosts))
    routes: list[BaseRoute] = [
        Route("/", pages.index),
        Route("/optimizations/{id}", pages.optimization),
        Route("/tasks/{id}", pages.task),
        Route("/api/optimizations/{id}", api.optimization),
        Route("/api/optimizations/{id}/stop", api.stop_optimization, methods=["POST"]),
        Route("/api/tasks/{id}", api.task),
        Route("/api/tasks/{id}/stop", api.stop_task, methods=["POST"]),
        Route("/api/tasks/{id}/reports/{report}", report_files.report_file),
        Route("/api/tasks/{id}/artifacts/{name}", report_files.artifact_file),
        # Before the mount: plotly.js comes from the plotly package, not our folder.
        Route("/static/plotly.min.js", api.plotly_js),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    if auth is not None:
        routes += [Route(login.LOGIN_PATH, login.login, methods=["GET", "POST"]),
                   Route(login.LOGOUT_PATH, login.logout, methods=["POST"])]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            TaskNotFound: _not_found,
            InvalidTransition: _conflict,
            StoreError: _store_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )
    app.state.auth = auth
    app.state.store = StoreHolder(store_url)
    app.state.listings = caches.ListingCache()
    app.state.answers = caches.AnswerCache()
    app.state.templates = templates
    return app


def _not_found(request: Request, exc: Any) -> Response:
    return error_response(request, 404, "Not found", str(exc))


def _conflict(request: Request, exc: Any) -> Response:
    return error_response(request, 409, "Cannot do that now", str(exc))


def _store_error(request: Request, exc: Any) -> Response:
    return error_response(request, 503, "The store cannot be read",
                          f"{exc} (is the database up, and is --store the right URL?)")


def _http_error(request: Request, exc: Any) -> Response:
    title = "Not found" if exc.status_code == 404 else "Request refused"
    message = ("No page here: the optimizations are listed on the front page."
               if exc.status_code == 404 else str(exc.detail))
    return error_response(request, exc.status_code, title, message)


def _server_error(request: Request, exc: Any) -> Response:
    # The traceback goes to the server's log; the browser gets one line.
    return error_response(request, 500, "Internal error",
                          f"{type(exc).__name__}: {exc}")
