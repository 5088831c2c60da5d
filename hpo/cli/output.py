"""Printing for the command-line tools: rich tables in a terminal, JSON for scripts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from hpo import durations

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# Piped output (a file, less, a mail, a CI log) is as wide as a terminal one could be: read
# by people as often as by programs, which take --json. --wide: every column, whole.
PIPED_WIDTH = 100
WIDE_WIDTH = 1000  # --wide: as wide as the table is (a table wider than this folds)
_wide = False


@functools.cache
def _console() -> Console:
    """The rich console of tables and of the live display (``console``), made at its
    first use: rich loads then, not with this module (hpo-controller's JSON progress
    never needs it, and it would delay a start's first trial)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=False,
                   width=WIDE_WIDTH if _wide else None if sys.stdout.isatty() else PIPED_WIDTH)


def __getattr__(name: str) -> Any:
    if name == "console":
        return _console()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def set_wide(wide: bool) -> None:
    """``--wide``: tables keep every column and whole cells, however wide they get."""
    global _wide
    _wide = wide
    if wide and _console.cache_info().currsize:
        _console().width = WIDE_WIDTH


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=_plain, indent=2, allow_nan=True) + "\n")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


ID_PREFIX = 8  # characters of an id in a compact terminal table: every command takes a prefix
MAX_CELL = 14  # a compact column is at most this wide (longer cells end in "…")
MIN_CELL = 6  # ... and at least this wide, however narrow the terminal
MAX_HEADER = 20  # a header may make its column this wide, when the terminal has room
# Compact tables of jobs leave these out first, in this order, when the terminal (or
# PIPED_WIDTH) is too narrow; other tables name their own order (``drop``).
DROPPABLE = ("agent", "duration", "iteration", "status")
ID_COLUMNS = ("id", "best task")  # cut to ID_PREFIX in a compact table, never narrowed
# Never narrowed: a cut rank, id or end ("stopped b…") says nothing.
KEPT_WHOLE = ("#", "status", *ID_COLUMNS)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
          compact: bool = False, drop: Sequence[str] = DROPPABLE) -> None:
    """A rich table. ``compact``: one line per row, for wide tables of jobs (ids cut to a
    prefix every command accepts, 4 significant digits, the least useful columns left
    out when the terminal, or piped output's PIPED_WIDTH, is too narrow) instead of
    cells folded into columns one character wide. ``--wide`` (``set_wide``): never cut.
    """
    show(build_table(title, columns, rows, compact=compact and not _wide, drop=drop))


def show(renderable: Any) -> None:
    """Print a rich renderable; piped, without the spaces rich pads each line with."""
    console = _console()
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as captured:
        console.print(renderable)
    text = "\n".join(line.rstrip() for line in captured.get().splitlines())
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def build_table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
                compact: bool = False, width: int | None = None,
                drop: Sequence[str] = DROPPABLE) -> Table:
    from rich import box
    from rich.table import Table

    if not compact:
        out = Table(title=title, title_justify="left", show_lines=False, pad_edge=False)
        for column in columns:  # ids are copied and pasted: never fold them
            out.add_column(column, overflow="fold", no_wrap=column == "id")
        for row in rows:
            out.add_row(*(cell(v) for v in row))
        return out
    rows = [list(row) for row in rows]
    total = width or _console().width
    texts = [_compact_cells(columns, row, cut_ids=False) for row in rows]
    if _table_width([_natural_width(i, columns, texts) for i in range(len(columns))]) > total:
        texts = [_compact_cells(columns, row, cut_ids=True) for row in rows]
    keep = _columns_that_fit(columns, texts, total, drop)
    hidden = [c for i, c in enumerate(columns) if i not in keep]
    # Whole cells where there is room, the widest narrowed first where there is not.
    widths = _shrunk_widths([columns[i] for i in keep],
                            [_natural_width(i, columns, texts, cap=None) for i in keep], total)
    # No vertical rules: 3 columns of the screen more per column of the table.
    out = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                padding=(0, 1, 0, 0),
                caption=(f"not shown (too narrow; --wide shows all): {', '.join(hidden)}"
                         if hidden else None),
                caption_justify="left")
    for i, w in zip(keep, widths, strict=True):
        out.add_column(columns[i], no_wrap=True, overflow="ellipsis", width=w)
    for row_texts in texts:
        out.add_row(*(row_texts[i] for i in keep))
    return out


def _table_width(widths: Sequence[int]) -> int:
    """The screen width of a compact table: cells, a pad and a rule each, two edges."""
    return sum(widths) + 2 * len(widths) + 1


def _shrunk_widths(names: Sequence[str], widths: list[int], total: int) -> list[int]:
    """Narrow the widest columns (never "#" or "id": a cut id is no use) one character at
    a time, down to MIN_CELL, until the table fits in ``total``."""
    widths = list(widths)
    while _table_width(widths) > total:
        shrinkable = [i for i, name in enumerate(names)
                      if name not in KEPT_WHOLE and widths[i] > MIN_CELL]
        if not shrinkable:
            break
        widest = max(shrinkable, key=lambda i: widths[i])
        widths[widest] -= 1
    return widths


def _compact_cells(columns: Sequence[str], row: Sequence[Any], *, cut_ids: bool
                   ) -> list[str]:
    """A row's cells, 4 significant digits; ids whole, or cut to a prefix (``cut_ids``:
    when the table would not fit with them whole)."""
    texts = [cell(v, digits=4) for v in row]
    return [t[:ID_PREFIX] if cut_ids and c in ID_COLUMNS else t
            for c, t in zip(columns, texts, strict=True)]


def _natural_width(i: int, columns: Sequence[str], texts: list[list[str]],
                   cap: int | None = MAX_CELL) -> int:
    """What column ``i`` needs: its widest cell (at most ``cap``, an id whole) or its
    header (at most MAX_HEADER), whichever is wider."""
    widest = max((len(t[i]) for t in texts), default=0)
    cells = widest if cap is None or columns[i] in ID_COLUMNS else min(cap, widest)
    return max(cells, min(MAX_HEADER, len(columns[i])))


def _columns_that_fit(columns: Sequence[str], texts: list[list[str]], width: int,
                      drop: Sequence[str]) -> list[int]:
    """The columns kept: those of ``drop`` left out, in its order, until the rest fit."""
    keep = list(range(len(columns)))
    for name in drop:
        needed = _table_width([_natural_width(i, columns, texts) for i in keep])
        if needed <= width or name not in columns:
            continue
        keep.remove(list(columns).index(name))
    return keep


def cell(value: Any, digits: int = 6) -> str:
    if value is None:
        return "-"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def duration(start: float | None, end: float | None) -> str:
    """``H:MM:SS`` from ``start`` to ``end`` (to now while it runs)."""
    if start is None:
        return "-"
    return durations.clock((end if end is not None else time.time()) - start)
