"""A script run by hand keeps its output like one an agent runs: what it writes to
``sys.stdout`` and ``sys.stderr`` is still printed, and each line is also kept for the
task's log (``StoreBackend`` writes them with its periodic flush), up to the agent's
limit (``defaults.MAX_LOG_MB``; the rest is counted, not kept).

Python-level capture: writes through ``sys.stdout``/``sys.stderr`` (print, tracebacks,
tqdm, and logging: a ``StreamHandler`` made before ``Task.init`` holds the original
stream, so it is pointed at the capture too, and back at the end). Output a C extension
or a child process writes to file descriptor 1 or 2 directly is printed but not kept
(an agent, reading the pipe, keeps it).
"""

from __future__ import annotations

import sys
import threading
import time

from hpo import defaults

TYPE_CHECKING = False  # typing costs milliseconds; this module runs in every task
if TYPE_CHECKING:
    from typing import Any, TextIO


class OutputCapture:
    """Lines written to the standard streams since the last ``take()``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lines: list[tuple[float, str, str]] = []
        self._partial: dict[str, str] = {}
        self._kept = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._tees: list[_Tee] = []

    def install(self) -> None:
        """Wrap ``sys.stdout`` and ``sys.stderr``, and logging's handlers on them."""
        self._tees = [_Tee(sys.stdout, "stdout", self), _Tee(sys.stderr, "stderr", self)]
        sys.stdout, sys.stderr = self._tees
        self._swap_handlers({id(t.wrapped): t for t in self._tees})

    def uninstall(self) -> None:
        """Put the original streams back, where no one has replaced ours since."""
        self._swap_handlers({id(t): t.wrapped for t in self._tees})
        for tee in self._tees:
            if tee.stream_name == "stdout" and sys.stdout is tee:
                sys.stdout = tee.wrapped
            if tee.stream_name == "stderr" and sys.stderr is tee:
                sys.stderr = tee.wrapped
        self._tees = []
        with self._lock:
            for stream, rest in self._partial.items():
                if rest:
                    self._keep(stream, rest)
            self._partial.clear()

    @staticmethod
    def _swap_handlers(streams: dict[int, Any]) -> None:
        """Point logging's stream handlers from one stream to another (``id`` of the
        old to the new). Only when the script has imported logging: it costs nothing
        to a script that has not."""
        logging = sys.modules.get("logging")
        if logging is None:
            return
        loggers = [logging.getLogger(), *(
            lg for lg in list(logging.Logger.manager.loggerDict.values())
            if isinstance(lg, logging.Logger))]
        for lg in loggers:
            for handler in list(lg.handlers):
                new = streams.get(id(getattr(handler, "stream", None)))
                if new is not None and isinstance(handler, logging.StreamHandler):
                    handler.stream = new

    def add(self, stream: str, text: str) -> None:
        """Text written to ``stream``: whole lines are kept, a partial one waits."""
        with self._lock:
            pending = self._partial.get(stream, "") + text
            *lines, rest = pending.split("\n")
            if len(rest) > defaults.MAX_LOG_LINE_CHARS:
                # A progress bar redrawn with "\r" for an hour has no newline: kept as a
                # (cut) line now, so the waiting part never grows without bound.
                lines.append(rest)
                rest = ""
            self._partial[stream] = rest
            for line in lines:
                self._keep(stream, line)

    def line(self, stream: str, text: str) -> None:
        """One line for the log that was not printed (report_text, print_console=False)."""
        with self._lock:
            for line in text.split("\n"):
                self._keep(stream, line)

    def _keep(self, stream: str, line: str) -> None:
        if len(line) > defaults.MAX_LOG_LINE_CHARS:
            line = line[:defaults.MAX_LOG_LINE_CHARS] + " [line cut]"
        if self._kept >= self.max_bytes:
            self.dropped += len(line) + 1
            return
        self._kept += len(line) + 1
        self._lines.append((time.time(), stream, line))

    def take(self) -> list[tuple[float, str, str]]:
        with self._lock:
            lines, self._lines = self._lines, []
        return lines

    def dropped_note(self) -> list[tuple[float, str, str]]:
        """The agent's note on output beyond the limit, once, at the end."""
        if not self.dropped:
            return []
        note = (f"[output beyond {self.max_bytes} bytes not stored: {self.dropped} more "
                "bytes]")
        self.dropped = 0
        return [(time.time(), "agent", note)]


class _Tee:
    """A standard stream that also hands what is written to an ``OutputCapture``;
    everything else (``fileno``, ``isatty``, ``encoding``) is the wrapped stream's."""

    def __init__(self, wrapped: TextIO, stream_name: str, capture: OutputCapture) -> None:
        self.wrapped = wrapped
        self.stream_name = stream_name
        self._capture = capture

    def write(self, text: str) -> int:
        written = self.wrapped.write(text)
        if isinstance(text, str) and text:
            self._capture.add(self.stream_name, text)
        return written

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.wrapped.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)
