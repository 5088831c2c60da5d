"""The controller's clock: every time it reads or waits goes through one, so a test or
a benchmark can run the real controller in simulated time (``hpo.testing.simulation``).
Standard library only."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall time (UNIX seconds, for what is saved or compared with the store),
    monotonic time (for intervals and deadlines) and a blocking wait."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: ``time.time``, ``time.monotonic``, ``time.sleep``."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
