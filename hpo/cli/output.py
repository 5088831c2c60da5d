"""Printing for the command-line tools: rich tables in a terminal, JSON for scripts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped output is not folded to 80 columns: it goes to files and other programs.
console = Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 250)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_plain, indent=2, allow_nan=True) + "\n")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    out = Table(title=title, title_justify="left", show_lines=False, pad_edge=False)
    for column in columns:
        # Ids are copied and pasted: never fold them.
        out.add_column(column, overflow="fold", no_wrap=column == "id")
    for row in rows:
        out.add_row(*(cell(v) for v in row))
    console.print(out)


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None) -> str:
    if start is None:
        return "-"
    seconds = (end if end is not None else dt.datetime.now().timestamp()) - start
    return str(dt.timedelta(seconds=round(seconds)))
