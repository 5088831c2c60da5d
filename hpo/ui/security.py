"""Response headers that make the browser enforce what the pages promise: nothing is
loaded from anywhere but this server, and no other site may frame the pages."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# plotly.js needs inline styles, blob: workers and, for its WebGL traces (parcoords),
# code compiled at run time ('unsafe-eval'); every source is still this server only.
# Forms (the login and the logout) may post to this server only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "connect-src 'self'; worker-src 'self' blob:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: under it a browser sends "Origin: null" with a form's POST (the
    # login), which hpo.ui.login cannot tell from a forged one. same-origin still tells
    # no other site which page linked to it.
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds HEADERS to every HTTP response (a plain ASGI middleware: no buffering)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
