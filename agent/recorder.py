"""Writes one run's reports and output to the store in batches."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from typing import Any

from hpo.defaults import AGENT_FLUSH_PERIOD_S, RECORDER_CLOSE_TIMEOUT_S
from hpo.errors import LostOwnership
from hpo.store import ScalarReport, Store

# Longer output lines are cut; they are almost always progress bars or binary noise.
MAX_LINE_CHARS = 10_000


class Recorder:
    """Buffers scalars, parameters and log lines of one attempt; a thread flushes them.
    Output beyond ``max_log_bytes`` is counted, not stored, so a script that prints
    gigabytes costs the store (and the agent's memory) nothing more.

    Every write names the attempt, and the store refuses it once another attempt owns
    the task (a re-queue after this agent froze or was cut off): then ``lost`` says why,
    everything buffered is dropped, nothing more is kept, and ``on_lost`` is called once
    (the runner stops the script)."""

    def __init__(self, store: Store, task_id: str, attempt: int, *,
                 max_log_bytes: int, tail_lines: int = 40,
                 on_lost: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.task_id = task_id
        self.attempt = attempt
        self.lost: str | None = None
        self._on_lost = on_lost
        self.max_log_bytes = max_log_bytes
        self.tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
        self.scalar_count = 0
        self._scalars: list[ScalarReport] = []
        self._logs: list[tuple[float, str, str]] = []
        self._params: dict[str, Any] = {}
        self._log_bytes = 0
        self._dropped_bytes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"hpo-rec-{task_id[:8]}",
                                        daemon=True)
        self._thread.start()

    def on_message(self, message: dict[str, Any]) -> None:
        """A report from the script's SDK (see ``hpo.sdk.channel``)."""
        kind = message.get("kind")
        if kind == "scalar":
            try:
                report = ScalarReport(str(message["title"]), str(message["series"]),
                                      int(message["iteration"]), float(message["value"]),
                                      float(message.get("time") or time.time()))
            except (KeyError, TypeError, ValueError):
                return
            with self._lock:
                if self.lost is None:
                    self._scalars.append(report)
        elif kind == "params" and isinstance(message.get("values"), dict):
            with self._lock:
                if self.lost is None:
                    self._params.update(message["values"])

    def add_scalars(self, reports: list[ScalarReport]) -> None:
        with self._lock:
            if self.lost is None:
                self._scalars.extend(reports)

    def on_output(self, stream: str, line: str) -> None:
        line = line.rstrip("\n")
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " [line cut]"
        self.tail.append(line)
        with self._lock:
            if self.lost is not None:
                return
            if self._log_bytes >= self.max_log_bytes:
                self._dropped_bytes += len(line) + 1
                return
            self._log_bytes += len(line) + 1
            self._logs.append((time.time(), stream, line))

    def flush(self) -> None:
        with self._lock:
            scalars, self._scalars = self._scalars, []
            logs, self._logs = self._logs, []
            params, self._params = self._params, {}
        if not (scalars or logs or params):
            return
        # One transaction, one owner check: the batch is stored whole or not at all. It
        # is put back if the write fails, to be retried at the next flush; a refused one
        # (another attempt owns the task) is dropped with the rest.
        try:
            self.store.append_batch(self.task_id, attempt=self.attempt, scalars=scalars,
                                    logs=logs, parameters=params)
            self.scalar_count += len(scalars)
            scalars, logs, params = [], [], {}
        except LostOwnership as exc:
            self._lose(str(exc))
        finally:
            if self.lost is None and (scalars or logs or params):
                with self._lock:
                    self._scalars[:0] = scalars
                    self._logs[:0] = logs
                    self._params = {**params, **self._params}

    def close(self) -> None:
        """Stop the flusher and write everything left, with a note on cut output."""
        self._stop.set()
        self._thread.join(timeout=RECORDER_CLOSE_TIMEOUT_S)
        if self._dropped_bytes and self.lost is None:
            self._logs.append((time.time(), "agent",
                               f"[output beyond {self.max_log_bytes} bytes not stored: "
                               f"{self._dropped_bytes} more bytes]"))
        self.flush()

    def _lose(self, why: str) -> None:
        with self._lock:
            if self.lost is not None:
                return
            self.lost = why
            self._scalars, self._logs, self._params = [], [], {}
        if self._on_lost is not None:
            self._on_lost(why)

    def last_lines(self, count: int = 10) -> str:
        return "\n".join(list(self.tail)[-count:])

    def _loop(self) -> None:
        while not self._stop.wait(AGENT_FLUSH_PERIOD_S):
            try:
                self.flush()
            except Exception:  # the store may be briefly away; keep the batch for later
                time.sleep(AGENT_FLUSH_PERIOD_S)

