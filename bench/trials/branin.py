"""The benchmark's trial work, shared by every trial script: the Branin function of
(x1, x2) reported ``reports`` times, with ``seconds`` of sleep spread over the reports
(0 for a trivial trial, 1 for the utilization case).

Branin (Dixon and Szegö's test function), on x1 in [-5, 10], x2 in [0, 15]; its minimum
is 0.397887 at three points, e.g. (pi, 2.275)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

# Where a trial script appends "time parent-pid" for its first line (the cold start
# measurement) and for the end of its work (with the first lines: the steady span, and
# each worker's hand-offs, a worker's trials being those of one parent).
FIRST_LINE_ENV = "BENCH_FIRST_LINE_FILE"
LAST_LINE_ENV = "BENCH_LAST_LINE_FILE"


def branin(x1: float, x2: float) -> float:
    b, c, t = 5.1 / (4 * math.pi ** 2), 5 / math.pi, 1 / (8 * math.pi)
    return (x2 - b * x1 ** 2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def work(x1: float, x2: float, reports: int, seconds: float,
         report: Callable[[float, int], None]) -> float:
    """The trial's own work: ``reports`` values, one every ``seconds / reports``."""
    value = branin(x1, x2)
    for i in range(reports):
        if seconds:
            time.sleep(seconds / reports)
        # A value that moves towards the final one, like a training curve.
        value = branin(x1, x2) + 1.0 / (1 + i)
        report(value, i)
    _note(LAST_LINE_ENV, time.time())
    return value


def note_first_line(t0: float) -> None:
    """Appends ``t0`` and this process's parent to the file the bench named, if any."""
    _note(FIRST_LINE_ENV, t0)


def _note(variable: str, t: float) -> None:
    path = os.environ.get(variable)
    if path:
        with open(path, "a") as out:
            # The parent: a worker's trials are told apart from the other's (hand-offs).
            out.write(f"{t!r} {os.getppid()}\n")
