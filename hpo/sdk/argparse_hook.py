"""Capture argparse: arguments parsed after ``Task.init`` land in the task's ``Args/``
section, and under an agent the overridden values replace what was parsed (as ClearML)."""

from __future__ import annotations

import argparse

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    _Listener = Callable[[argparse.ArgumentParser, argparse.Namespace], None]

_listener: _Listener | None = None
_original = argparse.ArgumentParser.parse_known_args
# Nesting depth of parse_known_args: sub-parsers parse from inside their parent's parse.
_depth = 0


def install(listener: _Listener) -> None:
    """Call ``listener(parser, namespace)`` after each top-level parse. Idempotent."""
    global _listener
    _listener = listener
    if argparse.ArgumentParser.parse_known_args is not _patched:
        argparse.ArgumentParser.parse_known_args = _patched  # type: ignore[method-assign,assignment]


def uninstall() -> None:
    global _listener
    _listener = None
    argparse.ArgumentParser.parse_known_args = _original  # type: ignore[method-assign]


def _patched(
    self: argparse.ArgumentParser,
    args: Sequence[str] | None = None,
    namespace: argparse.Namespace | None = None,
) -> tuple[argparse.Namespace, list[str]]:
    global _depth
    outermost = _depth == 0
    _depth += 1
    try:
        result: tuple[argparse.Namespace, list[str]] = _original(self, args, namespace)
    finally:
        _depth -= 1
    if outermost and _listener is not None:
        _listener(self, result[0])
    return result


def argument_values(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> dict[str, Any]:
    """The parsed value of every real argument (help and version left out)."""
    skip = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)
    return {
        a.dest: getattr(ns, a.dest)
        for a in parser._actions
        if not isinstance(a, skip) and a.dest != argparse.SUPPRESS and hasattr(ns, a.dest)
    }
