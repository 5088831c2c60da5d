"""Writes one run's reports and output to the store in batches."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hpo.defaults import (
    AGENT_FLUSH_PERIOD_S,
    MAX_LOG_LINE_CHARS,
    RECORDER_CLOSE_TIMEOUT_S,
    STORE_RETRY_S,
)
from hpo.errors import LostOwnership, StoreError, StoreRefusedValue
from hpo.store import (
    ArtifactEntry,
    Report,
    ScalarReport,
    Store,
    artifact_from_message,
    report_from_message,
    scalar_from_message,
    script_fields,
)

log = logging.getLogger("hpo.agent")

# Longer output lines are cut (the rule and its reason: hpo.defaults).
MAX_LINE_CHARS = MAX_LOG_LINE_CHARS


@dataclass
class Batch:
    """What one flush writes: ``seq`` numbers it within its attempt, so a resend of a
    batch the store already holds is skipped (``Store.append_batch``)."""

    seq: int
    scalars: list[ScalarReport] = field(default_factory=list)
    logs: list[tuple[float, str, str]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    reports: list[Report] = field(default_factory=list)
    artifacts: list[ArtifactEntry] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)  # name, tags, comment

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "scalars": [list(r) for r in self.scalars],
                "logs": [list(line) for line in self.logs], "parameters": self.parameters,
                "reports": [list(r) for r in self.reports],
                "artifacts": [list(a) for a in self.artifacts], "fields": self.fields}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Batch:
        # Reports, artifacts and fields are absent from a batch an older agent kept.
        return cls(int(data["seq"]), [ScalarReport(*r) for r in data["scalars"]],
                   [(float(t), str(s), str(x)) for t, s, x in data["logs"]],
                   dict(data["parameters"]), [Report(*r) for r in data.get("reports", [])],
                   [ArtifactEntry(*a) for a in data.get("artifacts", [])],
                   dict(data.get("fields") or {}))

    def arguments(self) -> dict[str, Any]:
        """``Store.append_batch``'s keyword arguments for this batch."""
        return {"scalars": self.scalars, "logs": self.logs, "parameters": self.parameters,
                "seq": self.seq, "reports": self.reports, "artifacts": self.artifacts,
                "fields": self.fields}

    def write(self, store: Store, task_id: str, attempt: int) -> None:
        """Store this batch (one transaction, fenced by ``attempt``, skipped if stored)."""
        store.append_batch(task_id, attempt=attempt, **self.arguments())


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
        self._reports: list[Report] = []
        self._artifacts: list[ArtifactEntry] = []
        self._fields: dict[str, Any] = {}
        self._log_bytes = 0
        self._dropped_bytes = 0
        self._next_seq = 1
        self._unsent: Batch | None = None  # taken by a flush whose write failed
        self._lock = threading.Lock()  # the buffers
        self._flush_lock = threading.Lock()  # one flush at a time: batches go in order
        self._stop = threading.Event()
        # The periodic flush, started by the first thing buffered (_buffering): a
        # thread's start waits for it to run, which a task's start then did too.
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    def on_message(self, message: dict[str, Any]) -> None:
        """A report from the script's SDK (see ``hpo.sdk.channel``)."""
        self._buffering()
        kind = message.get("kind")
        if kind == "scalar":
            try:
                report = scalar_from_message(message, time.time())
            except (KeyError, TypeError, ValueError):
                return
            with self._lock:
                if self.lost is None:
                    self._scalars.append(report)
        elif kind == "params" and isinstance(message.get("values"), dict):
            with self._lock:
                if self.lost is None:
                    self._params.update(message["values"])
        elif kind == "log" and isinstance(message.get("text"), str):
            for line in message["text"].split("\n"):
                self.on_output("report", line)
        elif kind in ("report", "artifact", "task"):
            self._on_record(kind, message)

    def _on_record(self, kind: str, message: dict[str, Any]) -> None:
        """A report, an artifact or task fields, checked (a bad one is skipped)."""
        try:
            if kind == "report":
                report = report_from_message(message["report"])
            elif kind == "artifact":
                artifact = artifact_from_message(message["artifact"])
            else:
                fields = script_fields(message["fields"])
        except (KeyError, TypeError, ValueError):
            return
        with self._lock:
            if self.lost is not None:
                return
            if kind == "report":
                self._reports.append(report)
            elif kind == "artifact":
                self._artifacts.append(artifact)
            else:
                added = fields.pop("add_tags", [])
                self._fields.update(fields)
                if added:
                    self._fields["add_tags"] = self._fields.get("add_tags", []) + added

    def add_scalars(self, reports: list[ScalarReport]) -> None:
        self._buffering()
        with self._lock:
            if self.lost is None:
                self._scalars.extend(reports)

    def on_output(self, stream: str, line: str) -> None:
        self._buffering()
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
        """Write the batch a failed flush left, then what arrived since, each in one
        transaction under one owner check. A StoreError leaves the batch to be sent
        again, with its number, by the next flush (the store skips a resend of one it
        stored: each report lands once); a refusal (another attempt owns the task)
        loses the attempt and drops everything; a batch holding a value the store
        refuses is dropped alone."""
        with self._flush_lock:
            for _ in range(2):
                batch = self._unsent or self._take()
                if batch is None or self.lost is not None:
                    return
                self._unsent = batch
                try:
                    batch.write(self.store, self.task_id, self.attempt)
                except LostOwnership as exc:
                    self._lose(str(exc))
                    return
                except StoreRefusedValue as exc:  # every resend would fail the same way
                    log.error("task %s: the store refused a batch of its reports (%s); "
                              "it is dropped", self.task_id, exc)
                    self._unsent = None
                    continue
                self._unsent = None
                self.scalar_count += len(batch.scalars)

    def _take(self) -> Batch | None:
        """Everything buffered as the next numbered batch; None when nothing is."""
        with self._lock:
            if not (self._scalars or self._logs or self._params or self._reports
                    or self._artifacts or self._fields):
                return None
            batch = Batch(self._next_seq, self._scalars, self._logs, self._params,
                          self._reports, self._artifacts, self._fields)
            self._scalars, self._logs, self._params = [], [], {}
            self._reports, self._artifacts, self._fields = [], [], {}
            self._next_seq += 1
        return batch

    def end(self) -> list[Batch]:
        """Stop the flusher and return everything not stored yet, with a note on cut
        output, as batches for the run's last write (``Store.finish_with_batches``
        writes them and the run's end in one transaction); none once lost."""
        self._stop_flusher()
        return self.unwritten()

    def close(self) -> None:
        """Stop the flusher and try once to write everything left, with a note on cut
        output. Never raises for a store that is away: what could not be written stays
        in ``unwritten()``, for the agent to keep until the store is back."""
        self._stop_flusher()
        try:
            self.flush()
        except StoreError as exc:
            log.warning("task %s: the store is away (%s); the last reports are kept until "
                        "it is back", self.task_id, exc)

    def _buffering(self) -> None:
        """Something is about to be buffered: the periodic flush runs from now on (not
        once stopped)."""
        if self._thread is not None:
            return
        with self._thread_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name=f"hpo-rec-{self.task_id[:8]}")
                self._thread.start()

    def _stop_flusher(self) -> None:
        with self._thread_lock:  # no flusher starts after this
            self._stop.set()
            thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout=RECORDER_CLOSE_TIMEOUT_S)
        with self._lock:
            if self._dropped_bytes and self.lost is None:
                self._logs.append((time.time(), "agent",
                                   f"[output beyond {self.max_log_bytes} bytes not stored: "
                                   f"{self._dropped_bytes} more bytes]"))
                self._dropped_bytes = 0  # noted once

    def unwritten(self) -> list[Batch]:
        """After ``close()``: the batches not stored yet, in order (none once lost)."""
        with self._flush_lock:
            if self.lost is not None:
                return []
            last = self._take()
            return [b for b in (self._unsent, last) if b is not None]

    def _lose(self, why: str) -> None:
        with self._lock:
            if self.lost is not None:
                return
            self.lost = why
            self._scalars, self._logs, self._params = [], [], {}
            self._reports, self._artifacts, self._fields = [], [], {}
        if self._on_lost is not None:
            self._on_lost(why)

    def last_lines(self, count: int = 10) -> str:
        return "\n".join(list(self.tail)[-count:])

    def _loop(self) -> None:
        while not self._stop.wait(AGENT_FLUSH_PERIOD_S):
            try:
                self.flush()
            except Exception:  # the store may be away a while; the batch waits for it
                self._stop.wait(STORE_RETRY_S)

