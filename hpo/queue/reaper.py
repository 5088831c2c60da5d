"""Finding tasks whose agent went silent and putting them back (or failing them), and
queued tasks whose message the broker lost, and publishing them again.

Runs with every controller, periodically inside every agent, and with
``hpo workers --reap``. Recovery never waits for the broker to redeliver anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from celery import Celery

from hpo import defaults, settings
from hpo.errors import StoreError
from hpo.lifecycle import Status
from hpo.queue.app import waiting_messages
from hpo.queue.dispatch import republish, requeue
from hpo.records import TaskRecord
from hpo.store import Store

log = logging.getLogger("hpo.queue")


class StoreContact:
    """A reaper's own view of the store, which says when it may judge agents lost.

    An outage hides every agent's heartbeats, not only the dead ones': the reaper that
    reads the store first when it comes back would find all of them stale and re-queue
    every running task. So after a failure of its own, a reaper judges no agent until
    the store has answered it for a whole lost-after period: long enough for every live
    agent to have beaten again. A reaper that never saw a failure judges at once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failing = False
        self._answering_since: float | None = None  # None: no failure seen yet

    def failed(self) -> None:
        self._failing = True

    def answered(self) -> None:
        if self._failing:
            self._failing = False
            self._answering_since = self._clock()

    def may_judge(self, lost_after_s: float) -> bool:
        if self._failing:
            return False
        since = self._answering_since
        return since is None or self._clock() - since >= lost_after_s


def reap(
    store: Store,
    app: Celery,
    *,
    lost_after_s: float | None = None,
    retries: int = defaults.LOST_TASK_RETRIES,
) -> list[tuple[TaskRecord, Status]]:
    """Re-queue lost tasks with retries left, fail the others. Returns what it did.
    ``lost_after_s``: None is ``$HPO_LOST_AFTER_S``, else ``defaults.LOST_AFTER_S``.

    When there are lost tasks it first ends the store sessions a cut-off client left
    inside a transaction: one may hold a lost task's row lock. Its writes never wait for
    a lock (a reaper runs in an agent's heartbeat thread, and a wait there would make
    that agent look lost too): a task still locked is tried again next round."""
    if lost_after_s is None:
        lost_after_s = settings.lost_after_s()
    lost = store.lost_tasks(lost_after_s)
    if lost:  # else no lock of a stuck session stands in a reaper's way: no query
        end_stuck_sessions(store)
    done: list[tuple[TaskRecord, Status]] = []
    for task in lost:
        if task.attempt <= retries:
            moved = requeue(store, app, task, task.attempt,
                            f"agent {task.worker} lost; re-queued (attempt {task.attempt})",
                            skip_locked=True)
            if moved is not None:
                done.append((task, moved))
        elif store.finish(task.id, task.attempt, Status.failed,
                          message=f"agent lost: {task.worker} stopped sending heartbeats "
                          f"(attempt {task.attempt}, no retries left)", skip_locked=True):
            done.append((task, Status.failed))
    return done


def end_stuck_sessions(store: Store) -> None:
    """End the store's sessions stuck inside a transaction (``defaults.
    PG_STUCK_SESSION_S``), saying so; a store that refuses (a role that may not end
    them) is said once per round and leaves the reaping to go on."""
    try:
        ended = store.end_stuck_sessions(defaults.PG_STUCK_SESSION_S)
    except StoreError as exc:
        log.warning("could not end store sessions stuck inside a transaction: %s", exc)
        return
    if ended:
        log.warning("ended %d store session(s) stuck inside a transaction for over %.0fs "
                    "(a cut-off or frozen client; server pids %s): their row locks are "
                    "free", len(ended), defaults.PG_STUCK_SESSION_S,
                    ", ".join(map(str, ended)))


def republish_lost(
    store: Store,
    app: Celery,
    *,
    republish_after_s: float | None = None,
) -> list[TaskRecord]:
    """Publish again the tasks queued for longer than ``republish_after_s`` on a queue
    that holds fewer waiting messages than it has queued tasks: their messages were lost
    (a Redis restart keeps none). A backlog whose messages are all there is left alone,
    however long it waits. Per queue, at most the missing count is published, oldest
    task first. Returns the tasks published again.
    ``republish_after_s``: None is ``$HPO_REPUBLISH_AFTER_S``, else
    ``defaults.REPUBLISH_AFTER_S``."""
    if republish_after_s is None:
        republish_after_s = settings.republish_after_s()
    stale = store.queued_before(store.now() - republish_after_s)
    if not stale:
        return []
    counts = store.queued_counts()
    done: list[TaskRecord] = []
    for queue in sorted({task.queue or defaults.DEFAULT_QUEUE for task in stale}):
        queued = counts.get(queue, 0) + (counts.get(None, 0) if queue ==
                                         defaults.DEFAULT_QUEUE else 0)
        missing = queued - waiting_messages(app, queue)
        for task in [t for t in stale if (t.queue or defaults.DEFAULT_QUEUE) == queue]:
            if missing <= 0:
                break
            # Refused: another sweeper published it (or it left the queue): one fewer
            # missing all the same.
            if republish(store, app, task):
                done.append(task)
            missing -= 1
    return done
