"""An optimization's launch: the controller's saved state and the trials' clones, queued,
written in one transaction.

A launch used to be three commits per trial (the state, the clone, its enqueue), each
waiting on PostgreSQL's WAL flush; here a cycle's launches are one. The controller's
crash guarantee holds as before, tighter: a suggestion is saved atomically with its
clone, never after it (``hpo.controller.controller``).

A launch after the first does not read the source task again: it writes the state and
the clones only while the source is as the last launch read it (its ``updated_at``, which
every write of a field a clone copies moves: ``update_task``, ``set_parameters``, the
life cycle's moves). On PostgreSQL that is one statement, its own transaction,
where the long way is five round trips (BEGIN, the state's UPDATE, the source read, the
INSERT, COMMIT). A source changed since, or an optimization gone, makes it write nothing,
and the launch is made the long way, which clones the source as it is now, as ClearML
clones the current base task.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    Connection,
    Dialect,
    String,
    bindparam,
    cast,
    exists,
    insert,
    select,
    union_all,
    update,
)
from sqlalchemy.types import TypeEngine

from hpo.errors import TaskNotFound
from hpo.records import TaskRecord
from hpo.store import schema
from hpo.store.driver import DriverQuery
from hpo.store.optimizations import OPT, OptimizationsMixin
from hpo.store.tasks import TasksMixin, new_task_id


@dataclass(frozen=True)
class NewClone:
    """What differs between the clones of one launch. ``id``: the clone's, fixed before
    the launch, so that one retried after an unacknowledged commit makes the same clone
    (``launch_clones(only_missing=True)``), not a second one."""

    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[str] = ()
    time_limit: float | None = None
    id: str = field(default_factory=new_task_id)


# Built once (a launch per controller cycle): its values are parameters.
_SAVE_STATE = (update(OPT).where(OPT.c.task_id == bindparam("id"))
               .values(state=bindparam("state"), updated_at=bindparam("updated_at")))
# The source task as a launch read it: the same ``updated_at``.
_SOURCE_SEEN = exists().where(schema.tasks.c.id == bindparam("source"),
                              schema.tasks.c.updated_at == bindparam("seen"))
_SAVE_STATE_IF_SEEN = _SAVE_STATE.where(_SOURCE_SEEN)


class LaunchesMixin(TasksMixin, OptimizationsMixin):
    def __init__(self, url: str, *, create: bool = True) -> None:
        super().__init__(url, create=create)
        # The source task of each launch, as the last launch read it (later launches
        # clone it while it is unchanged). Shared by threads: a dict's get and set are
        # each one step under the GIL.
        self._launch_sources: dict[str, TaskRecord] = {}

    def launch_clones(self, optimization_id: str, state: dict[str, Any], source_id: str,
                      clones: Sequence[NewClone], *, queue: str, parent: str | None = None,
                      project: str | None = None, only_missing: bool = False) -> list[str]:
        """Replace the optimization's saved state with ``state`` and create ``clones``
        of ``source_id`` (as ``clone_task``), already queued on ``queue``, in one
        transaction: all of it is stored, or none. Returns the clones' ids, in order
        (one INSERT for all, nothing read back: the caller knows what it asked for);
        their messages are the caller's to publish (``hpo.queue.dispatch.publish_queued``).

        ``only_missing``: a retry of a launch that raised, whose commit may have landed
        all the same (its acknowledgement lost): clones whose id is stored already are
        not inserted again. One still committing elsewhere makes this INSERT fail on its
        id (StoreError), and the next retry sees it."""
        sources = self._launch_sources
        source = sources.get(source_id)
        if (source is not None and not only_missing and 0 < len(clones) <= _AT_ONCE_MAX
                and self._launch_from_seen(optimization_id, state, source, clones,
                                           queue=queue, parent=parent, project=project)):
            return [c.id for c in clones]
        with self._write() as conn:
            updated = conn.execute(_SAVE_STATE, {"id": optimization_id, "state": state,
                                                 "updated_at": self.now()}).rowcount
            if not updated:
                raise TaskNotFound(f"no optimization {optimization_id}: `hpo-controller "
                                   "list` shows them")
            source = self._get(conn, source_id)
            new = _not_stored(conn, clones) if only_missing else clones
            rows = [self._clone_row(source, c, queue=queue, parent=parent, project=project)
                    for c in new]
            if rows:
                conn.execute(schema.tasks.insert(), rows)
        sources[source_id] = source
        return [c.id for c in clones]

    def _launch_from_seen(self, optimization_id: str, state: dict[str, Any],
                          source: TaskRecord, clones: Sequence[NewClone], *, queue: str,
                          parent: str | None, project: str | None) -> bool:
        """``launch_clones`` cloning ``source`` as the last launch read it, without
        reading it again, while it is unchanged (its ``updated_at``); False, nothing
        written, when it changed since (or the optimization is gone). PostgreSQL: one
        statement; SQLite: a transaction whose state UPDATE, on the same condition,
        decides (its write lock held from BEGIN IMMEDIATE)."""
        rows = [self._clone_row(source, c, queue=queue, parent=parent, project=project)
                for c in clones]
        saved = {"id": optimization_id, "state": state, "updated_at": self.now(),
                 "source": source.id, "seen": source.updated_at}
        if self.dialect == "postgresql":
            for i, row in enumerate(rows):
                saved.update({f"{column}_{i}": row[column] for column in _CLONE_COLUMNS})
            with self._write_one() as conn:
                made = _launch_statement(len(rows), conn.dialect).rows(conn, saved)
            return len(made) == len(rows)
        try:
            with self._write() as conn:
                if not conn.execute(_SAVE_STATE_IF_SEEN, saved).rowcount:
                    raise _SourceChanged  # rolled back: nothing written
                conn.execute(schema.tasks.insert(), rows)
        except _SourceChanged:
            return False
        return True

    def _clone_row(self, source: TaskRecord, clone: NewClone, *, queue: str,
                   parent: str | None, project: str | None) -> dict[str, Any]:
        return {**self._clone_values(source, name=clone.name, parent=parent, project=project,
                                     parameters=clone.parameters, tags=list(clone.tags),
                                     time_limit=clone.time_limit, queue=queue),
                "id": clone.id}


class _SourceChanged(Exception):
    """A launch's source changed since the last launch read it (never leaves here)."""


# The most clones a launch makes without reading its source again: PostgreSQL's one
# statement takes 18 parameters a clone (a controller launches its free slots' worth).
_AT_ONCE_MAX = 64

# What a launch writes of each clone (TasksMixin._new_task_values' row, made queued).
_CLONE_COLUMNS = ("id", "project", "name", "type", "status", "parent", "tags", "queue",
                  "script", "parameters", "time_limit", "worker", "attempt",
                  "stop_requested", "comment", "cloned_from", "created_at", "updated_at")


@functools.lru_cache(maxsize=16)
def _launch_statement(count: int, dialect: Dialect) -> DriverQuery:
    """PostgreSQL: save the state and insert ``count`` clones (binds ``<column>_<i>``),
    both only while the source (``source``) has the ``updated_at`` it was read with
    (``seen``); returns the clones' ids, none when it wrote nothing. Built and compiled
    once per count, run on the driver's cursor (``hpo.store.driver``): a controller
    runs it every cycle."""
    tasks = schema.tasks
    saved = _SAVE_STATE_IF_SEEN.returning(OPT.c.task_id).cte("saved")
    # Each value cast to its column's type (a NULL in a SELECT list is otherwise text),
    # a string to one of no length: a cast to VARCHAR(n) cuts a longer value where the
    # INSERT refuses it, as the long way does.
    rows = [select(*(cast(bindparam(f"{column}_{i}", type_=tasks.c[column].type),
                          _unbounded(tasks.c[column].type)).label(column)
                     for column in _CLONE_COLUMNS)).where(exists(saved.select()))
            for i in range(count)]
    source = union_all(*rows) if count > 1 else rows[0]
    # include_defaults=False: batch_seq takes the server's default, as in an INSERT.
    return DriverQuery.compile(
        insert(tasks).from_select(_CLONE_COLUMNS, source, include_defaults=False)
        .returning(tasks.c.id), dialect)


def _unbounded(type_: TypeEngine[Any]) -> TypeEngine[Any]:
    return String() if isinstance(type_, String) else type_


def _not_stored(conn: Connection, clones: Sequence[NewClone]) -> list[NewClone]:
    """The clones whose id no stored task has."""
    if not clones:
        return []
    stored = set(conn.scalars(select(schema.tasks.c.id).where(
        schema.tasks.c.id.in_([c.id for c in clones]))))
    return [c for c in clones if c.id not in stored]
