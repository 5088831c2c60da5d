"""How a job ended, in the one vocabulary every line and table uses: the ``jobs`` line,
``hpo-controller status``, the summary tables, the report's summary.csv/json and the web
view's counts all say it with these words.

A job's status alone says too little: ``completed`` is also a script that never
reported the objective, and ``stopped`` is both a budget the optimization enforced and a
user who asked. So:

* ``failed``: the task failed (its reports do not count);
* ``completed``: it ran to its end with a result, ``completed without objective``
  without one (it never reported the objective, or reported NaN);
* ``stopped by a limit``: the optimization's rules stopped it: its iteration budget, an
  early stop of its strategy, the agent's ``time_limit_per_job``, the optimization's
  time limits or ``fail_fast`` (it may still have a result that counts);
* ``stopped by the user``: someone asked (``hpo task abort``, ``hpo-controller stop``,
  Ctrl-C, the web view's stop button).

Who stopped a job is recorded where the stop is asked (``stop_job``): a tag
``stopped-by:<cause>:<attempt>`` on the task, for the attempt it stopped (a re-run of the
same task starts clean). A stop no one tagged is read from the record: a run that was
stopped while no stop was asked was stopped by its agent, for its time limit; anything
else someone asked for.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from hpo import relations
from hpo.errors import LostOwnership
from hpo.lifecycle import Status
from hpo.records import TaskRecord

TYPE_CHECKING = False
if TYPE_CHECKING:
    from hpo.store import Store


class End(enum.StrEnum):
    """How a finished job ended; the value is what the user reads."""

    result = "completed"
    no_objective = "completed without objective"
    limit = "stopped by a limit"
    user = "stopped by the user"
    failed = "failed"


class StopCause(enum.StrEnum):
    limit = "limit"
    user = "user"


def end_of(task: TaskRecord, has_result: bool) -> End | None:
    """How ``task`` ended (``has_result``: its objective counts); None while it has not."""
    if task.status is Status.failed:
        return End.failed
    if task.status is Status.completed:
        return End.result if has_result else End.no_objective
    if task.status is Status.stopped:
        return End.user if stop_cause(task) is StopCause.user else End.limit
    return None


def stop_cause(task: TaskRecord) -> StopCause:
    """Who stopped ``task``'s current attempt: the tag ``stop_job`` set, else the record."""
    tagged = _tagged_cause(task.tags, task.attempt)
    if tagged is not None:
        return tagged
    if task.started_at is not None and not task.stop_requested:
        return StopCause.limit  # no one asked: its agent stopped it at its time limit
    return StopCause.user


def _tagged_cause(tags: Iterable[str], attempt: int) -> StopCause | None:
    for tag in tags:
        if tag.startswith(relations.STOPPED_BY):
            cause, _, of_attempt = tag[len(relations.STOPPED_BY):].partition(":")
            if of_attempt == str(attempt) and cause in StopCause.__members__:
                return StopCause(cause)
    return None


def stop_job(store: Store, task_id: str, cause: StopCause, message: str) -> TaskRecord:
    """Stop a queued or running task (``dispatch.abort``), recording who asked first, so
    that the stopped task is never read without its cause. Raises as ``abort`` does (the
    task ended meanwhile)."""
    from hpo.queue import dispatch  # here: the summaries that read ends need no queue

    task = store.get_task(task_id)
    tag = relations.tag(relations.STOPPED_BY, f"{cause.value}:{task.attempt}")
    if task.status.is_final:  # nothing to stop: abort says so
        return dispatch.abort(store, task_id, message)
    fields = {"add_tags": [tag]}
    try:  # fenced while it runs: the row is locked, so the script's own tags are kept
        store.append_batch(task_id, attempt=task.attempt if task.status is Status.running
                           else None, fields=fields)
    except LostOwnership:  # it moved on meanwhile (re-queued, ended): tag it as it is
        store.append_batch(task_id, attempt=None, fields=fields)
    return dispatch.abort(store, task_id, message)


def count_ends(ends: Iterable[End | None]) -> dict[str, int]:
    """Every end's count, in the vocabulary's order (zeros included), by its words."""
    counts = {end.value: 0 for end in End}
    for end in ends:
        if end is not None:
            counts[end.value] += 1
    return counts


def describe_ends(counts: dict[str, int]) -> str:
    """``"12 completed, 3 stopped by a limit"``: the ends that happened; ``"none yet"``."""
    return ", ".join(f"{n} {word}" for word, n in counts.items() if n) or "none yet"
