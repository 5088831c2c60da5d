"""Configuration objects and user properties, kept among a task's parameters so that a
clone carries them, ``hpo task clone --param`` edits them and an agent's spec delivers
them, like any parameter:

* ``Configuration/<name>``: what ``connect_configuration`` recorded, a dict (as JSON)
  or a file's text. ``Task.get_parameters`` leaves this section out, as ClearML keeps
  configuration objects apart from hyperparameters.
* ``properties/<name>``: a user property (``set_user_properties``), ClearML's section
  name for them.

Standard library only (it runs under an agent).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hpo import defaults
from hpo import typed_params as P
from hpo.errors import ConfigError

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

CONFIGURATION_SECTION = "Configuration"
PROPERTIES_SECTION = "properties"
DEFAULT_NAME = "General"  # ClearML's default configuration name


def key(name: str | None) -> str:
    from hpo.limits import check_name

    full = f"{CONFIGURATION_SECTION}/{name or DEFAULT_NAME}"
    check_name("parameter", full, "configuration name")
    return full


def is_path(configuration: Any) -> bool:
    return isinstance(configuration, str | Path)


def recorded(configuration: Any, name: str) -> Any:
    """What the store keeps for ``configuration``: a dict as JSON values, a file's text."""
    if is_path(configuration):
        path = Path(configuration).expanduser()
        if not path.is_file():
            raise ConfigError(f"connect_configuration({name!r}): no file {path}: pass a "
                              "dict or the path of a configuration file")
        value: Any = path.read_text(encoding="utf-8")
    elif isinstance(configuration, dict):
        value = P.to_json_value(configuration)
    else:
        raise ConfigError(f"connect_configuration({name!r}) takes a dict or a file path, "
                          f"not {type(configuration).__name__}")
    size = len(value) if isinstance(value, str) else len(json.dumps(value))
    if size > defaults.MAX_CONFIGURATION_BYTES:
        raise ConfigError(
            f"configuration {name!r} is {size} bytes: a task keeps at most "
            f"{defaults.MAX_CONFIGURATION_BYTES} (every clone carries it); upload a large "
            "file with task.upload_artifact() instead")
    return value


def as_dict(stored: Any, name: str) -> dict[str, Any] | None:
    """A stored configuration as a dict: a dict as it is, text parsed as JSON (an edit
    made as text); None when it is neither."""
    if isinstance(stored, dict):
        return stored
    if isinstance(stored, str):
        try:
            parsed = json.loads(stored)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None
    return None


def as_text(stored: Any) -> str | None:
    if stored is None:
        return None
    return stored if isinstance(stored, str) else json.dumps(stored, indent=2)


def override_dict(configuration: dict[str, Any], stored: Any, name: str) -> None:
    """Replace the script's dict contents by the stored (possibly edited) configuration,
    in place, as ClearML does under an agent."""
    parsed = as_dict(stored, name)
    if parsed is None:
        raise ConfigError(f"configuration {name!r} of this task is not a dict (nor JSON "
                          "text of one): set it to a JSON object in the clone")
    configuration.clear()
    configuration.update(parsed)


def override_file(configuration: str | Path, stored: Any, name: str) -> str | Path:
    """A new local file holding the stored (possibly edited) configuration, with the
    original's suffix: a ``Path`` for a ``Path``, a string for a string (ClearML's rule)."""
    import tempfile

    suffix = Path(configuration).suffix
    fd, path = tempfile.mkstemp(prefix=f"hpo-config-{_safe(name)}-", suffix=suffix)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(as_text(stored) or "")
    return Path(path) if isinstance(configuration, Path) else path


def properties_from(iterables: Iterable[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``set_user_properties``' arguments as ``{name: value}``: dicts of name to value
    or to ``{"value": ...}``, dicts with "name" and "value", (name, value[, description])
    tuples, and keyword arguments (descriptions and types are not kept)."""
    found: dict[str, Any] = {}

    def one(name: Any, value: Any) -> None:
        found[str(name)] = value["value"] if isinstance(value, dict) else value

    for item in iterables:
        if isinstance(item, dict) and "name" in item and "value" in item:
            one(item["name"], item["value"])
        elif isinstance(item, dict):
            for name, value in item.items():
                one(name, value)
        else:
            for entry in item:
                if isinstance(entry, dict):
                    one(entry["name"], entry["value"])
                else:
                    one(entry[0], entry[1])
    for name, value in kwargs.items():
        one(name, value)
    return {f"{PROPERTIES_SECTION}/{name}": P.to_json_value(value)
            for name, value in found.items()}


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]
