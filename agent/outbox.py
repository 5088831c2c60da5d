"""Outcomes the agent could not write: kept in memory and on local disk, written when the
store is back.

A store outage must cost a run nothing: the script's exit code, its last reports and
its output are the run. So when the final writes of an attempt fail (the recorder's
last batches, ``finish``; or a re-queue), they become a ``PendingOutcome``, saved as one
JSON file before anything else happens, and a thread retries them until the store takes
them or refuses them (another attempt owns the task: nothing of this one may land). An
agent started on the host after a crash writes the files it finds first.

Until then the task stays ``running`` under this agent, whose heartbeat lists it, so no
reaper takes it while the agent still vouches for it; an agent that never comes back
stops vouching, and the reaper re-queues the task as for any lost agent.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpo import defaults
from hpo.agent.recorder import Batch
from hpo.errors import LostOwnership, StoreRefusedValue, StoreUnavailable, TaskNotFound
from hpo.lifecycle import Status
from hpo.queue.app import BrokerUnavailable
from hpo.store import Store

log = logging.getLogger("hpo.agent")


@dataclass
class PendingOutcome:
    """The final writes of one attempt: its unwritten batches, then either ``finish``
    with ``status`` or, with ``status`` None, a re-queue (the run never started, or the
    agent was shutting down)."""

    task_id: str
    attempt: int
    status: Status | None
    message: str
    exit_code: int | None = None
    batches: list[Batch] = field(default_factory=list)
    since: float = field(default_factory=time.time)
    failures: int = 0  # tries that failed with the store reachable (not kept on disk)

    @property
    def key(self) -> str:
        return f"{self.task_id}.{self.attempt}"

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "attempt": self.attempt,
                "status": self.status.value if self.status else None,
                "message": self.message, "exit_code": self.exit_code, "since": self.since,
                "batches": [b.to_json() for b in self.batches]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingOutcome:
        return cls(str(data["task_id"]), int(data["attempt"]),
                   Status(data["status"]) if data["status"] else None, str(data["message"]),
                   data["exit_code"], [Batch.from_json(b) for b in data["batches"]],
                   float(data["since"]))


class _Verdict(enum.Enum):
    settled = "settled"  # written, or refused for good: forget it
    away = "away"  # the store or the broker cannot be reached: end the round
    failed = "failed"  # another error: keep it, go on with the others


# Writes a re-queue: (task id, attempt, message) -> the status the task moved to (queued;
# stopped when a stop was requested on it), None when the store refused.
Requeue = Callable[[str, int, str], Status | None]


class Outbox:
    """The pending outcomes of one agent, each a file ``<task>.<attempt>.json`` in
    ``folder``; ``deliver()`` writes what it can, oldest first."""

    def __init__(self, folder: Path, store: Store, requeue: Requeue) -> None:
        self.folder = folder
        self.store = store
        self._requeue = requeue
        self._pending: dict[str, PendingOutcome] = {}
        self._lock = threading.Lock()
        self._deliver_lock = threading.Lock()
        self._load()

    def put(self, outcome: PendingOutcome) -> None:
        """Keep ``outcome`` (on disk first: a crash right after must not lose it)."""
        try:
            self._save(outcome)
        except OSError as exc:  # a full disk: memory still holds it while we run
            log.error("task %s: cannot save its pending outcome in %s (%s); kept in "
                      "memory only", outcome.task_id, self.folder, exc)
        with self._lock:
            self._pending[outcome.key] = outcome
        log.warning("task %s: the store is away; its outcome (%s) is kept until it is "
                    "back", outcome.task_id,
                    outcome.status.value if outcome.status else "re-queue")

    def task_ids(self) -> set[str]:
        """Tasks whose outcome waits here: still this agent's, so its heartbeat lists
        them and its own sweeps leave them alone."""
        with self._lock:
            return {o.task_id for o in self._pending.values()}

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def deliver(self) -> int:
        """Write every pending outcome the store takes now; returns how many are left.
        An unreachable store or broker ends the round (it is still away); any other
        failure keeps that outcome for the next round and goes on with the others, so
        one that cannot be written never holds back the rest."""
        with self._deliver_lock:
            with self._lock:
                pending = sorted(self._pending.values(), key=lambda o: o.since)
            for outcome in pending:
                verdict = self._write(outcome)
                if verdict is _Verdict.settled:
                    self._forget(outcome)
                elif verdict is _Verdict.away:
                    break
            return len(self)

    def _write(self, outcome: PendingOutcome) -> _Verdict:
        """Write ``outcome``: settled once written or refused for good."""
        try:
            for batch in list(outcome.batches):
                try:
                    batch.write(self.store, outcome.task_id, outcome.attempt)
                except StoreRefusedValue as exc:  # it would fail on every try
                    log.error("task %s: the store refused a batch of its reports (%s); "
                              "it is dropped, the outcome is written without it",
                              outcome.task_id, exc)
                    outcome.batches.remove(batch)
            if outcome.status is None:
                done = self._requeue(outcome.task_id, outcome.attempt,
                                     outcome.message) is not None
            else:
                done = self.store.finish(outcome.task_id, outcome.attempt, outcome.status,
                                         exit_code=outcome.exit_code,
                                         message=outcome.message)
        except (LostOwnership, TaskNotFound) as exc:  # refused for good
            log.warning("%s; its kept outcome is dropped", exc)
            return _Verdict.settled
        except (StoreUnavailable, BrokerUnavailable) as exc:
            log.info("task %s: outcome still not written (%s)", outcome.task_id, exc)
            return _Verdict.away
        except Exception as exc:
            outcome.failures += 1
            if outcome.failures >= defaults.OUTBOX_MAX_FAILURES:
                return self._give_up(outcome, exc)
            log.warning("task %s: outcome not written (%s); tried again later",
                        outcome.task_id, exc)
            return _Verdict.failed
        if done or self._already_written(outcome):
            log.info("task %s: outcome %s written, %.1fs after the run ended",
                     outcome.task_id, outcome.status.value if outcome.status else
                     "re-queue", time.time() - outcome.since)
        else:
            log.warning("task %s: attempt %d no longer owns the task; its kept outcome is "
                        "dropped", outcome.task_id, outcome.attempt)
        return _Verdict.settled

    def _give_up(self, outcome: PendingOutcome, exc: Exception) -> _Verdict:
        """An outcome that fails for a reason other than an unreachable store, try after
        try: its reports are dropped and the attempt is ended failed, saying why, so its
        task does not stay running for ever under an agent that vouches for it."""
        log.error("task %s: its outcome failed %d times (%s): recorded as failed without "
                  "its last reports", outcome.task_id, outcome.failures, exc)
        try:
            self.store.finish(outcome.task_id, outcome.attempt, Status.failed,
                              message=f"the agent could not record this run's outcome: "
                                      f"{str(exc).splitlines()[0] if str(exc) else exc!r}")
        except Exception as again:
            log.warning("task %s: cannot record that either (%s)", outcome.task_id, again)
            return _Verdict.failed
        return _Verdict.settled

    def _already_written(self, outcome: PendingOutcome) -> bool:
        """A refused ``finish`` that is this very outcome, written by an earlier try
        whose reply was lost (the task ended with this attempt and this status)."""
        try:
            task = self.store.get_task(outcome.task_id)
        except Exception:
            return False
        if outcome.status is None:  # a re-queue: queued, or stopped when it was flagged
            return task.attempt == outcome.attempt and task.status in (Status.queued,
                                                                       Status.stopped)
        return task.attempt == outcome.attempt and task.status is outcome.status

    # ----- files --------------------------------------------------------------------

    def _path(self, outcome: PendingOutcome) -> Path:
        return self.folder / f"{outcome.key}.json"

    def _save(self, outcome: PendingOutcome) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(outcome)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(outcome.to_json()))
        os.replace(partial, path)  # whole or not at all, even on a crash mid-write

    def _forget(self, outcome: PendingOutcome) -> None:
        with self._lock:
            self._pending.pop(outcome.key, None)
        self._path(outcome).unlink(missing_ok=True)

    def _load(self) -> None:
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                outcome = PendingOutcome.from_json(json.loads(path.read_text()))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("unreadable pending outcome %s (%s): left there, not written",
                          path, exc)
                continue
            self._pending[outcome.key] = outcome
        if self._pending:
            log.info("%d outcome(s) kept by an earlier agent on this host to write: %s",
                     len(self._pending), ", ".join(sorted(self._pending)))


def outbox_folder() -> Path:
    """``$HPO_HOME/outbox``: local to the host and shared by its agents, so an agent
    started again under any name (the default one holds the PID) writes what its previous
    process kept. Two agents delivering one outcome is harmless: its batches are
    numbered and its finish is fenced, so it lands once."""
    return defaults.hpo_home() / "outbox"
