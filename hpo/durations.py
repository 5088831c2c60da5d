"""How a duration reads, in the two forms hpo shows, one function each (standard library
only).

``clock``: ``H:MM:SS`` for terminals and tables (hours run past 24, so columns of long
optimizations still sort and align). ``compact``: ``12.3 s``, ``5m 03s``, ``2h 05m`` for
the web view, where a glance matters more than the seconds (``hpo/ui/static/live.js``
formats live values the same way).
"""

from __future__ import annotations


def clock(seconds: float) -> str:
    """``0:05:03``; ``26:00:00`` after a day; a negative span (clocks of two machines
    apart) reads as ``0:00:00``."""
    total = max(0, round(seconds))
    return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"


def compact(seconds: float) -> str:
    """``12.3 s`` under a minute, ``5m 03s`` under an hour, else ``2h 05m``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    return f"{minutes // 60}h {minutes % 60:02d}m"
