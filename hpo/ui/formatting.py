"""How numbers, times and ids read on the pages (Jinja filters; static/live.js formats
the live parts the same way)."""

from __future__ import annotations

import math
from typing import Any

from jinja2 import Environment

from hpo import durations
from hpo.lifecycle import Status

DASH = "\u2013"  # no value (yet)


def number(value: Any) -> str:
    """Floats to 4 significant digits; None (no value yet) as a dash."""
    if value is None:
        return DASH
    if isinstance(value, float):
        if not math.isfinite(value):
            return DASH
        return f"{value:.4g}"
    return str(value)


def duration(seconds: float | None) -> str:
    return DASH if seconds is None else durations.compact(seconds)


def age(seconds: float | None) -> str:
    return DASH if seconds is None else f"{duration(seconds)} ago"


def short(task_id: str | None) -> str:
    """The first 8 characters: unique enough to read, the link holds the whole id."""
    return DASH if not task_id else task_id[:8]


def limit(used: float, total: float | int | None, unit: str = "") -> str:
    text = f"{number(used)}{unit}"
    return text if total is None else f"{text} / {number(total)}{unit}"


def final(status: str) -> bool:
    """``{% if s.status is final %}``: the task has ended (no stop button then)."""
    return Status(status).is_final


def install(env: Environment) -> None:
    env.filters.update(number=number, duration=duration, age=age, short=short, limit=limit)
    env.tests.update(final=final)
