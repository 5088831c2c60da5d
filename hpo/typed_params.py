"""Typed task parameters addressed as ``Section/name`` (standard library only).

``General/`` holds what ``task.connect(dict)`` records, ``Args/`` what argparse parsed; a
bare name means ``General/``. Values are JSON values (int, float, bool, str, None, lists
and dicts of them) and keep their type through the store, a clone and a run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from hpo.errors import ConfigError

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
    from typing import Any

DEFAULT_SECTION = "General"
ARGS_SECTION = "Args"


def qualify(name: str) -> str:
    """``lr`` -> ``General/lr``; ``Args/lr`` stays."""
    name = name.strip()
    if not name or name.startswith("/") or name.endswith("/"):
        raise ConfigError(f"bad parameter name {name!r}: use Section/name, e.g. General/lr")
    return name if "/" in name else f"{DEFAULT_SECTION}/{name}"


def split(key: str) -> tuple[str, str]:
    section, _, name = qualify(key).partition("/")
    return section, name


def flatten(values: Mapping[str, Any], section: str) -> dict[str, Any]:
    """``{"opt": {"lr": 1}}`` in ``General`` -> ``{"General/opt/lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{section}/{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, full))
        else:
            out[full] = to_json_value(value)
    return out


def section_of(params: Mapping[str, Any], section: str) -> dict[str, Any]:
    """The parameters of one section, keyed by the name within it."""
    prefix = f"{section}/"
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def to_json_value(value: Any) -> Any:
    """A value the store can keep with its type; others become their string."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    # numpy scalars and the like carry .item(); everything else is kept as text.
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return to_json_value(item())
        except (TypeError, ValueError):
            pass
    return str(value)


_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True,
               "false": False, "no": False, "off": False, "0": False}


def parse_text(text: str) -> Any:
    """A value typed on a command line: ``3`` int, ``0.5`` float, ``true`` bool,
    ``null`` None, ``[1, 2]`` list, anything else a string."""
    stripped = text.strip()
    python_words = {"True": True, "False": False, "None": None}
    if stripped in python_words:
        return python_words[stripped]
    try:
        return json.loads(stripped)
    except ValueError:
        return text


def coerce(value: Any, like: Any) -> Any:
    """``value`` converted to the type of ``like`` (the value it replaces) when it
    arrived as text or as a number of another kind; unchanged when that fails."""
    if like is None or value is None or type(value) is type(like):
        return value
    try:
        if isinstance(like, bool):
            if isinstance(value, str):
                return _BOOL_WORDS[value.strip().lower()]
            return bool(value)
        if isinstance(like, int):
            if isinstance(value, float) and not value.is_integer():
                return value
            return int(value) if not isinstance(value, str) else int(value.strip())
        if isinstance(like, float):
            return float(value)
        if isinstance(like, str):
            return value if not isinstance(value, int | float) else str(value)
        if isinstance(like, list) and isinstance(value, str):
            parsed = parse_text(value)
            return parsed if isinstance(parsed, list) else value
    except (KeyError, ValueError, TypeError, OverflowError):
        return value
    return value


def parse_assignment(text: str, current: Mapping[str, Any] | None = None) -> tuple[str, Any]:
    """``Section/name=value`` -> (``Section/name``, typed value). When the parameter
    exists in ``current`` the text is converted to that parameter's type."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"malformed --param {text!r}: write Section/name=value, e.g. General/lr=0.01"
        )
    key = qualify(key)
    value = parse_text(raw)
    if current is not None and key in current:
        value = coerce(raw if isinstance(value, str) else value, current[key])
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--param {text!r}: the value must be a finite number")
    return key, value


def type_name(value: Any) -> str:
    if value is None:
        return "none"
    return type(value).__name__
