"""What input hpo accepts, checked in one place before anything is written: names
(project, task, queue, agent, metric) as long as the store's columns and printable,
task ids, numbers in a stated range, broker URLs of a supported scheme (and whether a
URL holds a password, which no message shows).

Every check raises one :class:`~hpo.errors.ConfigError` line that names the range and
the fix; the command-line tools (``hpo.cli.common``), the SDK, ``OptimizerConfig`` and
``hpo.yaml`` all call these. Standard library only (the SDK reads it under an agent);
the limits themselves are in :mod:`hpo.defaults`.
"""

from __future__ import annotations

import math
import re
import sys
import unicodedata
from pathlib import Path

from hpo import defaults
from hpo.errors import ConfigError, TaskNotFound

# What each kind of name may hold: (its column's length, an example for the fix).
NAMES = {
    "project": (defaults.MAX_PROJECT_LEN, "examples"),
    "task name": (defaults.MAX_TASK_NAME_LEN, "digits"),
    "queue": (defaults.MAX_QUEUE_LEN, "default"),
    "agent name": (defaults.MAX_AGENT_NAME_LEN, "gpu-box-1"),
    "metric": (defaults.MAX_METRIC_LEN, "validation"),
    "parameter": (defaults.MAX_PARAMETER_NAME_LEN, "Args/lr"),
}
# The broker URL schemes hpo's transports understand (kombu's names).
BROKER_SCHEMES = ("redis", "rediss", "amqp", "amqps", "pyamqp", "sentinel", "memory")
EMBEDDED_PREFIXES = ("sqla+", "sqlalchemy+")
# Control characters and line or paragraph separators forge log lines and break tables;
# every other character (a non-breaking space, a zero-width joiner in Persian or in an
# emoji) is some language's text and is kept.
_UNPRINTABLE = frozenset({"Cc", "Zl", "Zp"})
_ID = re.compile(f"[0-9a-f]{{{defaults.MIN_TASK_ID_PREFIX},{defaults.TASK_ID_LEN}}}")


def short(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters: a 10 MB name is not echoed back."""
    try:
        text = repr(value)
    except ValueError:  # an int past sys.get_int_max_str_digits has no repr
        return f"an integer of over {sys.get_int_max_str_digits()} digits"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_name(kind: str, value: object, what: str | None = None) -> str:
    """``value`` if it is a name of ``kind`` (a key of NAMES) the store can hold: a
    non-empty string of printable characters, at most the column's length. ``what``
    names the setting in the message (default: the kind)."""
    max_len, example = NAMES[kind]
    label = what or kind
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{label} must be a non-empty string, not {short(value)}: give "
                          f"e.g. {example}")
    if len(value) > max_len:
        raise ConfigError(f"{label} is {len(value)} characters long: the store holds "
                          f"{max_len} at most, use a shorter one")
    bad = next((c for c in value if unicodedata.category(c) in _UNPRINTABLE), None)
    if bad is not None:
        raise ConfigError(f"{label} {short(value)} holds the control character {bad!r}: "
                          "use printable characters only (no newline or tab)")
    return value


def check_task_id(text: object) -> str:
    """A task id or a prefix of one (4 to 32 hex digits), lower-cased; anything else
    is :class:`TaskNotFound` at once, with no query (an id in a URL, on a command line)."""
    if isinstance(text, str):
        cleaned = text.strip().lower()
        if _ID.fullmatch(cleaned):
            return cleaned
    raise TaskNotFound(f"no task with id {short(text)}: an id is {defaults.TASK_ID_LEN} hex "
                       f"digits (a unique prefix of {defaults.MIN_TASK_ID_PREFIX}+ will do); "
                       "`hpo task list` shows them")


def check_number(what: str, value: object, low: float, high: float, *,
                 integer: bool = False, above: bool = False, unit: str = "") -> int | float:
    """``value`` if it is a finite number (an int with ``integer``) from ``low`` to
    ``high`` (strictly above ``low`` with ``above``); else one ConfigError line that
    states the range."""
    if (isinstance(value, int | float) and not isinstance(value, bool)
            and (isinstance(value, int) or not integer)
            and (isinstance(value, int) or math.isfinite(value))  # isfinite(10**400) raises
            and (value > low if above else value >= low) and value <= high):
        return value
    raise _out_of_range(what, value, low, high, integer, above, unit)


def parse_number(what: str, text: str, low: float, high: float, *, integer: bool = False,
                 above: bool = False, unit: str = "") -> int | float:
    """``check_number`` of a number written as text (a command-line value)."""
    try:
        value: int | float = int(text) if integer else float(text)
    except ValueError:
        raise _out_of_range(what, text, low, high, integer, above, unit) from None
    return check_number(what, value, low, high, integer=integer, above=above, unit=unit)


def _out_of_range(what: str, value: object, low: float, high: float, integer: bool,
                  above: bool, unit: str) -> ConfigError:
    kind = "an integer" if integer else "a number"
    of = f" of {unit}" if unit else ""
    lowest = f"more than {low:g}" if above else f"{low:g}"
    return ConfigError(f"{what} must be {kind}{of} from {lowest} to {high:g}, not "
                       f"{short(value)}: give a value in that range".lstrip())


def check_broker_url(url: object) -> str:
    """``url`` if its scheme is one of the supported brokers; the message of a refused
    one shows it without its password."""
    if isinstance(url, str) and url.isprintable():
        scheme, sep, _ = url.partition("://")
        if sep and (scheme in BROKER_SCHEMES or scheme.startswith(EMBEDDED_PREFIXES)):
            return url
    schemes = ", ".join(f"{s}://" for s in BROKER_SCHEMES[:5])
    shown = short(hide_password(url) if isinstance(url, str) else url)
    raise ConfigError(f"broker URL {shown} is not supported: use {schemes} or "
                      "sqla+sqlite:///FILE (the embedded broker, the default)")


def url_password(url: str) -> str | None:
    """The password ``url`` carries, as written in it: in its user part
    (``scheme://user:PASSWORD@host``) or its query (``?password=``, which libpq and
    redis-py read too); None when it has none (a SQLite path, ``redis://host``)."""
    from urllib.parse import parse_qsl, urlsplit  # here: the SDK's import path stays short

    try:
        parts = urlsplit(url)
        if parts.password:
            return parts.password
        query = parse_qsl(parts.query)
    except ValueError:  # not a URL at all (a bad IPv6 host): no password to be found
        return None
    return next((value for key, value in query if key.lower() == "password" and value), None)


def hide_password(url: str) -> str:
    """``url`` for a message: its password, if any, replaced by ``***``. Standard library
    only, for the checks here; ``hpo.store.engine.safe_url`` does the same with
    SQLAlchemy for a store URL it has parsed anyway."""
    # By position, not by value: a password "p" or equal to the user name must not mask
    # other parts. A mistyped URL (postgresql//user:pw@host) is masked the same way.
    hidden = re.sub(r"(^|//)([^/@:?#]*):([^@/?#]*)@", r"\1\2:***@", url, count=1)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", hidden, flags=re.IGNORECASE)


def check_path(what: str, value: object) -> Path:
    """``value`` as a path (``~`` expanded) if the system could ever open it: a string
    without NUL, at most PATH_MAX long with no part over NAME_MAX, a ``~user`` that
    exists. Whether the file is there is the caller's question."""
    if not isinstance(value, str | Path) or not str(value).strip():
        raise ConfigError(f"{what} must be a path, not {short(value)}")
    text = str(value)
    if "\0" in text:
        raise ConfigError(f"{what} {short(text)} holds a NUL character: no file has one")
    too_long = next((p for p in text.split("/") if len(p.encode()) > defaults.MAX_FILE_NAME_LEN),
                    None)
    if len(text.encode()) > defaults.MAX_PATH_LEN or too_long is not None:
        raise ConfigError(f"{what} {short(text)} is longer than a path can be "
                          f"({defaults.MAX_PATH_LEN} bytes, {defaults.MAX_FILE_NAME_LEN} per "
                          "name): check it")
    try:
        return Path(text).expanduser()
    except RuntimeError:  # ~nobody: no such user
        raise ConfigError(f"{what} {short(text)}: no such user's home: give the path "
                          "in full") from None
