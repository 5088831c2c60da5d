"""The login of ``hpo ui`` over HTTP (the rules are in hpo.ui.auth), the same-origin check
of every state-changing request, and the health check.

With a token (``Auth``), every request but /healthz, /login, /logout and the static
files needs either ``Authorization: Bearer <token>`` (scripts) or the session cookie set
by /login (browsers). A page without either redirects to /login; the API answers 401.
A POST by cookie must also carry the session's CSRF token (the ``X-CSRF-Token`` header;
the logout form, its ``csrf`` field): the cookie is SameSite=Strict already, and a custom
header cannot be sent cross-site without a CORS preflight this server never grants, so
each of the three alone would stop a forged request. Bearer requests need no CSRF
token: a browser never adds that header by itself.

Without a token (loopback only, hpo.cli.ui_cmd sees to that) nothing here asks for a
login; the same-origin check still applies.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hpo.ui.auth import Auth, Session
from hpo.ui.hosts import as_host_header, matches
from hpo.ui.pages import error_response, render

SESSION_COOKIE = "hpo_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf"
HEALTH_PATH = "/healthz"
LOGIN_PATH = "/login"
LOGOUT_PATH = "/logout"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_FORM_BYTES = 4096  # a token and a path: anything longer is not our form
_SESSION_KEY = "hpo.session"  # where Guard leaves the request's session in the scope

log = logging.getLogger("hpo.ui")


class Healthz:
    """``GET /healthz``: 200 ``ok`` for a container's health check, answered before the
    Host check and the login (a probe sends the pod's address as Host, and no token).
    It reads nothing: a store that is down is an error page, not a dead server."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == HEALTH_PATH \
                and scope["method"] in ("GET", "HEAD"):
            response = PlainTextResponse("ok\n", headers={"Cache-Control": "no-store"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def client_of(request: Request) -> str:
    """The client's address (the proxy's forwarded one when uvicorn trusts the proxy:
    $FORWARDED_ALLOW_IPS, by default loopback)."""
    return request.client.host if request.client else "unknown"


def _same_origin(request: Request, names: list[str]) -> bool:
    """A browser names the page that sent a request in ``Origin``; it must be this
    server: as the browser reached it (the Host header), or by a name it answers to
    (``names``: a TLS proxy in front may send its own Host). No Origin: not a browser's
    cross-site request (browsers send one with every cross-origin POST)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urlsplit(origin.lower())
    if parts.netloc and parts.netloc == request.headers.get("host", "").lower():
        return True
    return parts.hostname is not None and matches(as_host_header(parts.hostname), names)


class Guard:
    """Refuses cross-site requests that would change state, and, with ``auth``, requests
    without a login (see the module's docstring)."""

    def __init__(self, app: ASGIApp, auth: Auth | None = None,
                 allowed_hosts: list[str] | None = None) -> None:
        self.app = app
        self.auth = auth
        self.origin_names = allowed_hosts or []  # "*" among them matches no Origin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response = await self._refusal(scope, request)
        if response is not None:
            await response(scope, receive, send)
            return
        if self.auth is None or _public(request):
            await self.app(scope, receive, send)
            return

        async def send_private(message: Message) -> None:
            # What a login shows is no proxy's to cache for the next client.
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"private, no-cache"))
            await send(message)

        await self.app(scope, receive, send_private)

    async def _refusal(self, scope: Scope, request: Request) -> Response | None:
        unsafe = request.method not in SAFE_METHODS
        if unsafe and not _same_origin(request, self.origin_names):
            return error_response(request, 403, "Request refused",
                                  "a page of another site cannot change anything here")
        auth = self.auth
        if auth is None or _public(request):
            return None
        header = request.headers.get("authorization")
        if header is not None:
            return await _check_bearer(auth, request, header)
        session = auth.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            return _login_required(request)
        if unsafe and not auth.csrf_matches(session, request.headers.get(CSRF_HEADER)):
            return error_response(request, 403, "Request refused",
                                  f"no valid {CSRF_HEADER} header: reload the page")
        scope[_SESSION_KEY] = session
        return None


def _public(request: Request) -> bool:
    """What needs no login: the login and logout themselves, and reading the static
    files (the project's own code and style, no data). /healthz never gets here."""
    path = request.url.path
    return path in (LOGIN_PATH, LOGOUT_PATH) or (
        path.startswith("/static/") and request.method in SAFE_METHODS)


def _login_required(request: Request) -> Response:
    if request.method in ("GET", "HEAD") and not request.url.path.startswith("/api/"):
        wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"{LOGIN_PATH}?next={quote(wanted)}", status_code=303)
    return error_response(request, 401, "Login required",
                          "send Authorization: Bearer <token>, or log in at /login",
                          headers={"WWW-Authenticate": 'Bearer realm="hpo ui"'})


def _too_many(request: Request, wait_s: float) -> Response:
    seconds = max(1, math.ceil(wait_s))
    return error_response(request, 429, "Too many failed logins",
                          f"from {client_of(request)}: try again in {seconds} s",
                          headers={"Retry-After": str(seconds)})


async def _failed(auth: Auth, request: Request, how: str) -> None:
    """Counts and logs a failed login (never what was sent), then waits a little."""
    count = auth.failures.failed(client_of(request))
    log.warning("failed login from %s (%s; %d in the last %g s)", client_of(request), how,
                count, auth.failures.window_s)
    await asyncio.sleep(auth.fail_delay_s)


async def _check_bearer(auth: Auth, request: Request, header: str) -> Response | None:
    wait = auth.failures.wait_s(client_of(request))
    if wait > 0:
        return _too_many(request, wait)
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and auth.token_matches(given.strip()):
        return None
    await _failed(auth, request, "wrong bearer token")
    return error_response(request, 401, "Login required",
                          "wrong token: send Authorization: Bearer <token>",
                          headers={"WWW-Authenticate": 'Bearer realm="hpo ui", '
                                   'error="invalid_token"'})


def safe_next(text: str | None) -> str:
    """Where to go after the login: a path on this server only (never another site:
    ``//evil.example`` and ``/\\evil.example`` are read by browsers as one)."""
    if not text or not text.startswith("/") or text.startswith(("//", "/\\")) \
            or not text.isprintable() or len(text) > 2000 or text.startswith(LOGIN_PATH):
        return "/"
    return text


async def _read_form(request: Request) -> dict[str, str] | Response:
    """The urlencoded form of a POST (Starlette's own parser needs python-multipart,
    which hpo does not depend on, for a form of two fields)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        return error_response(request, 415, "Request refused",
                              "send the form as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return error_response(request, 413, "Request refused", "the form is too long")
    fields = parse_qs(body.decode(errors="replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def _set_cookie(response: Response, request: Request, value: str, max_age: int) -> None:
    # Secure when the browser reached us over https: directly, or through a proxy that
    # says so (X-Forwarded-Proto, from an address in $FORWARDED_ALLOW_IPS). Over plain
    # http a Secure cookie would never come back.
    response.set_cookie(SESSION_COOKIE, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def _auth_of(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


async def login(request: Request) -> Response:
    """GET: the form. POST: the token checked; right, a session cookie and on to
    ``next``; wrong, the form again (403) after a delay."""
    auth = _auth_of(request)
    if request.method != "POST":
        return _login_page(request, safe_next(request.query_params.get("next")))
    wait = auth.failures.wait_s(client_of(request))
    if wait > 0:
        return _too_many(request, wait)
    form = await _read_form(request)
    if isinstance(form, Response):
        return form
    next_path = safe_next(form.get("next"))
    if not auth.token_matches(form.get("token", "")):
        await _failed(auth, request, "wrong token")
        return _login_page(request, next_path, error="Wrong token.", status=403)
    _, cookie = auth.new_session()
    response = RedirectResponse(next_path, status_code=303)
    _set_cookie(response, request, cookie, int(auth.session_s))
    log.info("login from %s", client_of(request))
    return response


def _login_page(request: Request, next_path: str, *, error: str | None = None,
                status: int = 200) -> Response:
    return render(request, "login.html", {"next": next_path, "error": error},
                  status_code=status, headers={"Cache-Control": "no-store"})


async def logout(request: Request) -> Response:
    """POST with the session's CSRF token: the session ends (here and in the browser)."""
    auth = _auth_of(request)
    session = auth.session(request.cookies.get(SESSION_COOKIE))
    if session is not None:
        form = await _read_form(request)
        if isinstance(form, Response):
            return form
        if not auth.csrf_matches(session, form.get(CSRF_FIELD)):
            return error_response(request, 403, "Request refused",
                                  "no valid CSRF token: reload the page")
        auth.end(session)
        log.info("logout from %s", client_of(request))
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    _set_cookie(response, request, "", 0)
    return response


def page_context(request: Request) -> dict[str, Any]:
    """What every template gets: the session's CSRF token (for the stop buttons and
    the logout form), empty when there is no session."""
    session: Session | None = request.scope.get(_SESSION_KEY)
    auth: Auth | None = getattr(request.app.state, "auth", None)
    return {"csrf": auth.csrf(session) if auth and session else ""}
