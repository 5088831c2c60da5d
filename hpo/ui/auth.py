"""The login of ``hpo ui``: where its token comes from, browser sessions, CSRF tokens and
the limit on failed logins. No Starlette here (hpo.ui.login serves it over HTTP), so the
rules are tested without a server.

One shared token, not user accounts: a team's dashboard whose only write is a stop
button. A browser posts it once to /login and gets a session cookie; a script sends
``Authorization: Bearer <token>``. Sessions are stateless: the cookie is an expiry and
a random id, signed with a key derived from the token (HMAC-SHA256), so they survive a
restart and hold across replicas behind one Service, and changing the token ends every
session at once. A session's CSRF token is derived from its id with the same key, so
nothing is stored per session either; only a logout (until its session would have
expired) and recent failures are remembered, in this process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpo import limits
from hpo.defaults import (
    ENV_UI_TOKEN,
    ENV_UI_TOKEN_FILE,
    UI_LOGIN_FAIL_DELAY_S,
    UI_LOGIN_FAILURES,
    UI_LOGIN_WINDOW_S,
    UI_SESSION_S,
)
from hpo.errors import ConfigError

MIN_TOKEN_LEN = 16  # a password someone picked by hand is shorter than a made token
MAX_TOKEN_FILE_BYTES = 4096  # a token file holds one token: longer is the wrong file
MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
TRACKED_CLIENTS = 4096  # failed-login counters kept at most (oldest dropped first)
_KEY_LABEL = b"hpo ui session key v1"  # the signing key is HMAC(token, label)


def resolve_token(file: str | Path | None = None) -> tuple[str, str] | None:
    """``(token, where it came from)``, or None when none is set (an open server, on
    loopback only). The first of: ``--token-file`` (``file``), ``$HPO_UI_TOKEN``,
    ``$HPO_UI_TOKEN_FILE``; the two variables together are a mistake, as
    ``hpo.settings.UrlSetting.resolve`` rules for URLs. No message shows the token."""
    if file is not None:
        return _read_token_file("--token-file", file)
    value, env_file = os.environ.get(ENV_UI_TOKEN), os.environ.get(ENV_UI_TOKEN_FILE)
    if value and env_file:
        raise ConfigError(f"${ENV_UI_TOKEN} and ${ENV_UI_TOKEN_FILE} are both set: unset "
                          "one of them")
    if value:
        return check_token(value.strip(), f"${ENV_UI_TOKEN}"), f"${ENV_UI_TOKEN}"
    if env_file:
        return _read_token_file(f"${ENV_UI_TOKEN_FILE}", env_file)
    return None


def check_token(token: str, where: str) -> str:
    """``token`` if it is one: printable ASCII without spaces (it travels in an HTTP
    header), at least MIN_TOKEN_LEN long."""
    if not token:
        raise ConfigError(f"{where} is empty: make a token with {MAKE_ONE}")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ConfigError(f"{where} holds a space or a character outside printable ASCII: "
                          f"make a token with {MAKE_ONE}")
    if len(token) < MIN_TOKEN_LEN:
        raise ConfigError(f"{where} is shorter than {MIN_TOKEN_LEN} characters, easy to "
                          f"guess: make a token with {MAKE_ONE}")
    return token


def _read_token_file(where: str, file: str | Path) -> tuple[str, str]:
    path = limits.check_path(where, file)
    source = f"{where}={path}"
    try:
        with path.open("rb") as f:
            data = f.read(MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read it ({exc.strerror}): give a readable "
                          "file that holds the token") from None
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"{source} is over {MAX_TOKEN_FILE_BYTES} bytes: a token file "
                          "holds one token; check the path")
    try:
        text = data.decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{source} is not text: write the token into it") from None
    return check_token(text, source), source


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class Session:
    """A logged-in browser: its random id and when it ends (seconds since the epoch)."""

    id: str
    expires: int


class FailedLogins:
    """Failed logins per client address in a sliding window. A client with ``limit``
    failures within ``window_s`` is refused (even with the right token: else the limit
    would not slow guessing) until the oldest of them leaves the window."""

    def __init__(self, limit: int = UI_LOGIN_FAILURES, window_s: float = UI_LOGIN_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._failures.get(client, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def wait_s(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            if len(times) < self.limit:
                return 0.0
            return times[-self.limit] + self.window_s - now

    def failed(self, client: str) -> int:
        """Records a failure; returns how many ``client`` has within the window."""
        with self._lock:
            now = self._clock()
            times = self._recent(client, now)
            times.append(now)
            # Moved to the end: the dict's order is then least recently failed first.
            self._failures.pop(client, None)
            self._failures[client] = times
            if len(self._failures) > TRACKED_CLIENTS:
                # Many addresses failing: forget the one quiet longest.
                del self._failures[next(iter(self._failures))]
            return len(times)


class Auth:
    """The token and what is derived from it: session cookies and CSRF tokens."""

    def __init__(self, token: str, *, session_s: float = UI_SESSION_S,
                 failures: FailedLogins | None = None,
                 fail_delay_s: float = UI_LOGIN_FAIL_DELAY_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._token = token.encode()
        self._key = hmac.new(self._token, _KEY_LABEL, hashlib.sha256).digest()
        self.session_s = session_s
        self.failures = failures or FailedLogins()
        self.fail_delay_s = fail_delay_s  # each failure is answered this much later
        self._clock = clock
        self._ended: dict[str, int] = {}  # logged-out session id -> its expiry
        self._lock = threading.Lock()

    def token_matches(self, given: str) -> bool:
        """Constant time: the comparison does not tell how much of a guess was right."""
        return hmac.compare_digest(given.encode(errors="replace"), self._token)

    def _sign(self, message: str) -> str:
        return _b64(hmac.new(self._key, message.encode(), hashlib.sha256).digest())

    def new_session(self) -> tuple[Session, str]:
        """A new session and its cookie value: ``expires.id.signature``."""
        session = Session(secrets.token_urlsafe(16), int(self._clock() + self.session_s))
        payload = f"{session.expires}.{session.id}"
        return session, f"{payload}.{self._sign(payload)}"

    def session(self, cookie: str | None) -> Session | None:
        """The session of a cookie value, if it is ours (signed with this token's key),
        not expired and not logged out; else None."""
        if not cookie or len(cookie) > 200:
            return None
        parts = cookie.split(".")
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        expires, session_id, signature = parts
        if not hmac.compare_digest(signature, self._sign(f"{expires}.{session_id}")):
            return None
        if int(expires) <= self._clock():
            return None
        with self._lock:
            if session_id in self._ended:
                return None
        return Session(session_id, int(expires))

    def csrf(self, session: Session) -> str:
        """The session's CSRF token: pages carry it, state-changing requests send it
        back. A prefix no session payload has (those start with digits) keeps the two
        signatures apart."""
        return self._sign(f"csrf.{session.id}")

    def csrf_matches(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf(session))

    def end(self, session: Session) -> None:
        """Logs ``session`` out: its cookie is refused from now on, by this process."""
        now = self._clock()
        with self._lock:
            self._ended = {k: v for k, v in self._ended.items() if v > now}
            self._ended[session.id] = session.expires
