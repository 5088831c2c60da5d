"""Later changes to what a script connected (``task.connect(d)``,
``connect_configuration(d)``) are recorded, as ClearML records them: a thread compares
each connected dict with what was last recorded every ``SDK_FLUSH_PERIOD_S`` and records
the difference in one write. The script's loop pays nothing per change (no proxy, no
write per assignment), and a change to the dict it passed or to the one returned (the
same object) is seen alike. Keys deleted from a dict stay recorded, as in ClearML.

Standard library only (it runs under an agent, where a write is a channel message).
"""

from __future__ import annotations

import threading

from hpo.defaults import SDK_FLUSH_PERIOD_S

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    Snapshot = Callable[[], dict[str, Any]]


class ConnectedWatch:
    """Watches connected objects; ``record`` writes ``{key: value}`` changes."""

    def __init__(self, record: Callable[[dict[str, Any]], None]) -> None:
        self._record = record
        self._watched: list[tuple[Snapshot, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, snapshot: Snapshot, recorded: dict[str, Any]) -> None:
        """Watch what ``snapshot()`` returns, ``recorded`` being what was written now."""
        with self._lock:
            self._watched.append((snapshot, dict(recorded)))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="hpo-connected",
                                                daemon=True)
                self._thread.start()

    def sync(self) -> None:
        """Record what changed since the last look, in one write."""
        with self._lock:
            diffs: list[tuple[dict[str, Any], dict[str, Any]]] = []
            for snapshot, last in self._watched:
                try:
                    now = snapshot()
                except RuntimeError:  # mutated while read ("changed size"): next time
                    continue
                diff = {k: v for k, v in now.items() if k not in last or last[k] != v
                        or type(last[k]) is not type(v)}
                if diff:
                    diffs.append((last, diff))
            if diffs:
                self._record({k: v for _, diff in diffs for k, v in diff.items()})
                for last, diff in diffs:  # only once written: a failed write is retried
                    last.update(diff)

    def stop(self) -> None:
        """A last look, then no more."""
        self._stop.set()
        self.sync()

    def _loop(self) -> None:
        while not self._stop.wait(SDK_FLUSH_PERIOD_S):
            try:
                self.sync()
            except Exception:  # a store that is away: the next period tries again
                pass
