"""Tasks: creation, cloning, parameters, and the checked status life cycle."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    Dialect,
    Row,
    Text,
    Update,
    bindparam,
    case,
    delete,
    func,
    select,
    type_coerce,
    update,
)

from hpo import typed_params as P
from hpo.defaults import MAX_TASK_NAME_LEN
from hpo.errors import ConfigError, InvalidTransition, StoreError, TaskNotFound
from hpo.lifecycle import TRANSITIONS, Status, TaskType
from hpo.records import ScriptInfo, TaskRecord
from hpo.store import schema
from hpo.store.base import StoreBase
from hpo.store.driver import DriverQuery, padded
from hpo.store.reports import drop_reports

T = schema.tasks

# How many times a status write is tried when the task moves between its UPDATE and the
# read that follows (PostgreSQL only: a SQLite writer holds the lock throughout).
_TRIES = 3


def new_task_id() -> str:
    return uuid.uuid4().hex


class TasksMixin(StoreBase):
    def create_task(
        self,
        project: str,
        name: str,
        *,
        type: str | TaskType = TaskType.training,
        script: ScriptInfo | None = None,
        parameters: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (),
        parent: str | None = None,
        queue: str | None = None,
        time_limit: float | None = None,
        comment: str | None = None,
        cloned_from: str | None = None,
    ) -> TaskRecord:
        """A new task in status ``created`` (``cloned_from``: set by ``clone_task``)."""
        values = self._new_task_values(
            project, name, type=type, script=script, parameters=parameters, tags=tags,
            parent=parent, queue=queue, time_limit=time_limit, comment=comment,
            cloned_from=cloned_from)
        with self._write() as conn:
            return self._insert(conn, values)

    def _new_task_values(
        self, project: str, name: str, *, type: str | TaskType = TaskType.training,
        script: ScriptInfo | None = None, parameters: Mapping[str, Any] | None = None,
        tags: Iterable[str] = (), parent: str | None = None, queue: str | None = None,
        time_limit: float | None = None, comment: str | None = None,
        cloned_from: str | None = None,
    ) -> dict[str, Any]:
        """The row of a new ``created`` task (``create_task``'s arguments, checked)."""
        if not project or not name:
            raise ConfigError("a task needs a project and a name: pass --project and --name")
        now = self.now()
        return {
            "id": new_task_id(), "project": project, "name": name,
            "type": TaskType(type).value, "status": Status.created.value, "parent": parent,
            "tags": list(tags), "queue": queue,
            "script": script.to_dict() if script else None,
            "parameters": _qualified(parameters or {}), "time_limit": time_limit,
            "worker": None, "attempt": 0, "stop_requested": False, "comment": comment,
            "cloned_from": cloned_from, "created_at": now, "updated_at": now,
        }

    @staticmethod
    def _insert(conn: Connection, values: dict[str, Any]) -> TaskRecord:
        """Insert a task row, returning it as stored (one round trip)."""
        return _record(conn.execute(T.insert().values(**values).returning(*T.c)).one())

    def get_task(self, task_id: str) -> TaskRecord:
        with self._read() as conn:
            return self._get(conn, task_id)

    def get_tasks(self, task_ids: Sequence[str]) -> list[TaskRecord]:
        """Several tasks in one query (per 1,024), in the order asked; unknown ids are
        left out."""
        if not task_ids:
            return []
        with self._read() as conn:
            return read_tasks(conn, task_ids)

    def resolve_task_id(self, text: str, *, type: str | TaskType | None = None) -> str:
        """A full id, or the id that a unique prefix of at least MIN_TASK_ID_PREFIX
        characters names; ``type``: only tasks of that type (``optimizer``: an
        optimization's id). TaskNotFound says which went wrong (too short, ambiguous
        with the candidates, unknown) and which command lists the ids of that kind."""
        from hpo.defaults import MIN_TASK_ID_PREFIX  # (here: one function's import)

        text = text.strip().lower()
        optimizer = type is not None and TaskType(type) is TaskType.optimizer
        kind, lister = (("optimization", "`hpo-controller list`") if optimizer
                        else ("task", "`hpo task list`"))
        query = select(T.c.id, T.c.name)
        if type is not None:
            query = query.where(T.c.type == TaskType(type).value)
        with self._read() as conn:
            if conn.execute(query.where(T.c.id == text)).first():
                return text
            if len(text) < MIN_TASK_ID_PREFIX:
                raise TaskNotFound(
                    f"{kind} id {text!r} is too short: an id prefix needs at least "
                    f"{MIN_TASK_ID_PREFIX} characters; {lister} shows the ids")
            shown = 5  # candidates named in the error; more are counted
            found = conn.execute(query.where(T.c.id.startswith(text, autoescape=True))
                                 .order_by(T.c.id).limit(shown + 1)).all()
            other = None
            if not found and type is not None:  # a task of another kind: say which
                other = conn.execute(select(T.c.id, T.c.type).where(
                    T.c.id.startswith(text, autoescape=True)).limit(2)).all()
        if len(found) == 1:
            return str(found[0].id)
        if found:
            named = ", ".join(f"{row.id} ({row.name})" for row in found[:shown])
            more = ", and more" if len(found) > shown else ""
            raise TaskNotFound(f"{kind} id prefix {text!r} is ambiguous: it starts "
                               f"{named}{more}; give more of the id ({lister} shows "
                               "the ids)")
        if other is not None and len(other) == 1:
            article = "an" if kind[0] in "aeiou" else "a"
            raise TaskNotFound(f"{text!r} is a {other[0].type} task, not {article} {kind}: "
                               f"{lister} shows the ids")
        raise TaskNotFound(f"no {kind} with id {text!r}: {lister} shows the ids")

    def find_tasks(
        self,
        *,
        project: str | None = None,
        name: str | None = None,
        status: Status | str | Iterable[Status | str] | None = None,
        tag: str | None = None,
        parent: str | None = None,
        type: str | TaskType | None = None,
        worker: str | None = None,
        limit: int | None = None,
    ) -> list[TaskRecord]:
        """Tasks matching every filter given, newest first."""
        query = select(T).order_by(T.c.created_at.desc(), T.c.id)
        if project is not None:
            query = query.where(T.c.project == project)
        if name is not None:
            query = query.where(T.c.name == name)
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            query = query.where(T.c.status.in_([_status(s).value for s in statuses]))
        if parent is not None:
            query = query.where(T.c.parent == parent)
        if type is not None:
            query = query.where(T.c.type == TaskType(type).value)
        if worker is not None:
            query = query.where(T.c.worker == worker)
        if tag is not None:
            # Tags are JSON text: match the encoded tag, then check exactly below.
            encoded = json.dumps(tag, ensure_ascii=False)
            query = query.where(type_coerce(T.c.tags, Text).contains(encoded, autoescape=True))
        if limit is not None and tag is None:
            query = query.limit(limit)
        with self._read() as conn:
            records = [_record(row) for row in conn.execute(query)]
        if tag is not None:
            records = [r for r in records if tag in r.tags][:limit]
        return records

    def update_task(self, task_id: str, **fields: Any) -> TaskRecord:
        """Change name, tags, script, queue, time_limit, comment or status_message."""
        allowed = {"name", "tags", "script", "queue", "time_limit", "comment",
                   "status_message", "project"}
        unknown = set(fields) - allowed
        if unknown:
            raise ConfigError(f"cannot update task field(s) {sorted(unknown)}")
        if isinstance(fields.get("script"), ScriptInfo):
            fields["script"] = fields["script"].to_dict()
        if "tags" in fields:
            fields["tags"] = list(fields["tags"])
        with self._write() as conn:
            self._get(conn, task_id)
            conn.execute(update(T).where(T.c.id == task_id).values(
                updated_at=self.now(), **fields))
            return self._get(conn, task_id)

    def set_parameters(
        self, task_id: str, values: Mapping[str, Any], *, replace: bool = False,
        attempt: int | None = None,
    ) -> dict[str, Any]:
        """Merge (or with ``replace`` set) the task's parameters; returns all of them.
        ``attempt``: the writing attempt, refused with LostOwnership unless it owns the
        task (checked with the row locked, in this transaction); None: unfenced."""
        with self._write() as conn:
            self._check_owner(conn, task_id, attempt, exclusive=True)
            return write_parameters(conn, task_id, values, now=self.now(), replace=replace)

    def clone_task(
        self,
        source_id: str,
        *,
        name: str | None = None,
        parent: str | None = None,
        project: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None,
        time_limit: float | None = None,
        queue: str | None = None,
    ) -> TaskRecord:
        """A new ``created`` task with the source's script and parameters; the given
        parameters override the source's and take the type of the value they replace.
        The clone's ``cloned_from`` is the source's id; its comment is left to the user.

        ``queue``: the clone is made already ``queued`` there, what ``clone_task`` and
        ``enqueue`` would write, in one transaction (one commit, not two); publishing its
        message is the caller's (``hpo.queue.dispatch.publish_queued``)."""
        with self._write() as conn:  # the source read and the clone written at once
            source = self._get(conn, source_id)
            return self._insert(conn, self._clone_values(
                source, name=name, parent=parent, project=project, parameters=parameters,
                tags=tags, time_limit=time_limit, queue=queue))

    def _clone_values(
        self, source: TaskRecord, *, name: str | None = None, parent: str | None = None,
        project: str | None = None, parameters: Mapping[str, Any] | None = None,
        tags: Iterable[str] | None = None, time_limit: float | None = None,
        queue: str | None = None,
    ) -> dict[str, Any]:
        """The row of a clone of ``source`` (``clone_task``'s arguments)."""
        if queue is not None and not queue:
            raise ConfigError("enqueue needs a queue name: pass --queue NAME")
        merged = dict(source.parameters)
        for key, value in _qualified(parameters or {}).items():
            merged[key] = (P.coerce(value, merged.get(key)) if isinstance(value, str)
                           else value)
        values = self._new_task_values(
            project or source.project,
            name or f"{source.name} (clone)",
            type=source.type,
            script=source.script,
            parameters=merged,
            tags=list(tags) if tags is not None else list(source.tags),
            parent=parent,
            queue=queue,
            time_limit=time_limit if time_limit is not None else source.time_limit,
            cloned_from=source.id,
        )
        if queue is not None:  # as enqueue() would leave it
            values["status"] = Status.queued.value
        return values

    # ----- life cycle -------------------------------------------------------------
    # Every status write is one conditional UPDATE whose WHERE names the states it may
    # leave (``_move``): on PostgreSQL (READ COMMITTED) a row read before the write may
    # have changed by then, and a write must not land on a state it did not decide on.
    # "Else raise": when the UPDATE matches no row the task is read again in the same
    # transaction; if it is in a state the change may leave (it moved in meanwhile) the
    # UPDATE is tried again, otherwise TaskNotFound / InvalidTransition as always. So an
    # abort racing a claim ends as a stop request on the claimed task, never `stopped`.

    def set_status(
        self,
        task_id: str,
        to: Status | str,
        *,
        message: str | None = None,
        exit_code: int | None = None,
    ) -> TaskRecord:
        """Move a task along the life cycle; an illegal change raises InvalidTransition.

        Policy: WHERE status IN (the states TRANSITIONS lets reach ``to``); else raise."""
        to = Status(to)
        values = _values_for(to, self.now(), message=message, exit_code=exit_code)
        with self._write() as conn:
            return self._move_or_raise(conn, task_id, _sources(to), values, to)

    def enqueue(self, task_id: str, queue: str) -> TaskRecord:
        """created -> queued on ``queue``. Publishing the message is the broker's job.

        Policy: WHERE status = 'created' (of racing enqueues one wins); else raise."""
        if not queue:
            raise ConfigError("enqueue needs a queue name: pass --queue NAME")
        values = {"status": Status.queued.value, "queue": queue, "stop_requested": False,
                  "status_message": None, "updated_at": self.now()}
        with self._write() as conn:
            for _ in range(_TRIES):
                queued = self._move(conn, task_id, {Status.created}, values)
                if queued is not None:
                    return queued
                task = self._get(conn, task_id)
                if task.status is not Status.created:
                    # running -> queued is the re-queue of an attempt (requeue()), not this.
                    raise InvalidTransition(
                        f"task {task_id} is {task.status.value}: only a created task can "
                        "be enqueued (reset a finished one first)")
        raise _kept_changing(task_id, "enqueue")

    def dequeue(self, task_id: str) -> TaskRecord:
        """queued -> created; a message still in the broker is dropped at the claim.

        Policy: WHERE status = 'queued' (a dequeue racing a claim: one of them wins);
        else raise. Only a queued task: a finished one goes back to created by ``reset``,
        which also clears its results."""
        values = _values_for(Status.created, self.now())
        with self._write() as conn:
            for _ in range(_TRIES):
                dequeued = self._move(conn, task_id, {Status.queued}, values)
                if dequeued is not None:
                    return dequeued
                task = self._get(conn, task_id)
                if task.status is not Status.queued:
                    raise InvalidTransition(
                        f"task {task_id} is {task.status.value}: only a queued task can "
                        "be dequeued")
        raise _kept_changing(task_id, "dequeue")

    def claim(self, task_id: str, worker: str) -> int | None:
        """Atomically take a queued task for ``worker``: returns the new attempt number,
        or None when the task is not queued (already claimed, dequeued, aborted,
        unknown). Of several concurrent claims of one task exactly one wins."""
        claimed = self.claim_task(task_id, worker)
        return None if claimed is None else claimed.attempt

    def claim_task(self, task_id: str, worker: str) -> TaskRecord | None:
        """``claim``, returning the task as claimed (its new attempt, running under
        ``worker``): what the agent needs to run it, without a read after the claim.

        Policy: WHERE status = 'queued'; no match: None, never a retry."""
        params = {"task": task_id, "by": worker, "now": self.now()}
        with self._write_one() as conn:  # one statement: autocommit on PostgreSQL
            row = conn.execute(_CLAIM, params).first()
        return None if row is None else _record(row)

    def finish(
        self,
        task_id: str,
        attempt: int,
        status: Status | str,
        *,
        exit_code: int | None = None,
        message: str | None = None,
        skip_locked: bool = False,
    ) -> bool:
        """End the running ``attempt`` as completed, failed or stopped. False when that
        attempt no longer owns the task (it was re-queued or ended meanwhile);
        ``skip_locked`` as ``requeue``'s.

        Policy: WHERE status = 'running' AND attempt = ``attempt``; no match: False."""
        stmt, params = finish_statement(task_id, attempt, status, exit_code=exit_code,
                                        message=message, now=self.now(),
                                        skip_locked=skip_locked)
        with self._write() as conn:
            return self._update_changed(conn, stmt, params, task_id)

    def requeue(self, task_id: str, attempt: int, message: str | None = None, *,
                skip_locked: bool = False) -> Status | None:
        """Put a running ``attempt`` back in its queue (its agent was lost or shut down):
        returns ``queued``; or, when a stop was requested on it, end it ``stopped`` (the
        user asked: running it again would be unseen) and return ``stopped``. None when
        that attempt no longer owns the task. ``skip_locked``: None, at once, also while
        another session holds the task's row (PostgreSQL; a reaper's, which must not
        wait on a cut-off client's lock: its next round tries again).

        Policy: WHERE status = 'running' AND attempt = ``attempt``; no match: None."""
        now = self.now()
        flagged = T.c.stop_requested.is_(True)
        owned = [T.c.id == task_id, T.c.status == Status.running.value,
                 T.c.attempt == attempt]
        if skip_locked:
            owned.append(_unlocked(task_id))
        stmt = (
            update(T)
            .where(*owned)
            .values(status=case((flagged, Status.stopped.value), else_=Status.queued.value),
                    status_message=case((flagged, T.c.status_message), else_=message),
                    ended_at=case((flagged, now), else_=None),
                    worker=case((flagged, T.c.worker), else_=None),
                    stop_requested=False, updated_at=now)
            .returning(T.c.status)
        )
        with self._write() as conn:
            moved = conn.execute(stmt).scalar_one_or_none()
            if moved == Status.stopped.value:
                self._changed(conn, task_id)
        return None if moved is None else Status(moved)

    def queued_before(self, cutoff: float) -> list[TaskRecord]:
        """Queued tasks last (re)queued or changed before ``cutoff``, oldest first: the
        ones whose message may have been lost with a broker's state."""
        query = (select(T).where(T.c.status == Status.queued.value, T.c.updated_at < cutoff)
                 .order_by(T.c.updated_at, T.c.id))
        with self._read() as conn:
            return [_record(row) for row in conn.execute(query)]

    def queued_counts(self) -> dict[str | None, int]:
        """How many tasks are queued, by queue name (None: no queue recorded)."""
        query = (select(T.c.queue, func.count()).where(T.c.status == Status.queued.value)
                 .group_by(T.c.queue))
        with self._read() as conn:
            return {queue: int(count) for queue, count in conn.execute(query)}

    def touch_queued(self, task_id: str, seen_updated_at: float) -> bool:
        """Mark a queued task as published again now (its ``updated_at``), only if it is
        still queued and unchanged since ``seen_updated_at`` was read: of several
        sweepers that saw it, one wins and publishes. False when another did, or the
        task moved on.

        Policy: WHERE status = 'queued' AND updated_at = ``seen_updated_at``; no match: False."""
        stmt = (
            update(T)
            .where(T.c.id == task_id, T.c.status == Status.queued.value,
                   T.c.updated_at == seen_updated_at)
            .values(updated_at=self.now())
        )
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    def request_stop(self, task_id: str, message: str | None = None) -> TaskRecord:
        """Abort: a queued task is stopped at once (its message is dropped at the claim);
        a running one is flagged, and its agent stops it.

        Policy: WHERE status = 'queued' (stop), else WHERE status = 'running' (flag); else raise."""
        message = message or "stop requested"
        now = self.now()
        with self._write() as conn:
            for _ in range(_TRIES):
                stopped = self._move(conn, task_id, {Status.queued}, {
                    "status": Status.stopped.value, "status_message": message,
                    "ended_at": now, "updated_at": now})
                if stopped is not None:
                    return stopped
                flagged = self._move(conn, task_id, {Status.running}, {
                    "stop_requested": True, "status_message": message, "updated_at": now})
                if flagged is not None:
                    self._changed(conn, task_id)
                    return flagged
                task = self._get(conn, task_id)
                if task.status not in (Status.queued, Status.running):
                    raise InvalidTransition(
                        f"task {task_id} is {task.status.value}: only a queued or running "
                        "task can be stopped")
        raise _kept_changing(task_id, "stop")

    def reset(self, task_id: str) -> TaskRecord:
        """A finished task back to created, its scalars, logs, reports and artifact
        records cleared.

        Policy: ``set_status(created)``'s; what it reported goes in the same transaction."""
        values = _values_for(Status.created, self.now())
        with self._write() as conn:
            reset = self._move_or_raise(conn, task_id, _sources(Status.created), values,
                                        Status.created)
            conn.execute(delete(schema.scalars).where(schema.scalars.c.task_id == task_id))
            conn.execute(delete(schema.logs).where(schema.logs.c.task_id == task_id))
            drop_reports(conn, task_id)
            return reset

    def count_tasks(self, *, parent: str | None = None,
                    status: Iterable[Status] | None = None) -> int:
        query = select(func.count()).select_from(T)
        if parent is not None:
            query = query.where(T.c.parent == parent)
        if status is not None:
            query = query.where(T.c.status.in_([Status(s).value for s in status]))
        with self._read() as conn:
            return int(conn.execute(query).scalar_one())

    def children_mark(self, parent: str) -> tuple[int, float, float]:
        """(how many, latest ``updated_at``, sum of ``updated_at``) of the children of
        ``parent``: changes when a child is added or any of its fields changes. A cheap
        "anything new?" test. The sum is there because ``updated_at`` comes from the
        clock of whichever machine wrote it: an agent's clock behind the controller's
        would leave the latest one as it was."""
        query = select(func.count(), func.max(T.c.updated_at),
                       func.sum(T.c.updated_at)).where(T.c.parent == parent)
        with self._read() as conn:
            count, latest, total = conn.execute(query).one()
        return int(count), float(latest or 0.0), float(total or 0.0)

    # ----- helpers ----------------------------------------------------------------

    def _get(self, conn: Connection, task_id: str) -> TaskRecord:
        row = conn.execute(_TASK_BY_ID, {"id": task_id}).first()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id!r}: `hpo task list` shows the ids")
        return _record(row)

    def _move(self, conn: Connection, task_id: str, leaving: Collection[Status],
              values: Mapping[str, Any]) -> TaskRecord | None:
        """One conditional UPDATE: ``values`` written only while the task is in one of
        the states ``leaving``; the task as written, or None when it matched no row."""
        row = conn.execute(
            update(T)
            .where(T.c.id == task_id, T.c.status.in_([s.value for s in leaving]))
            .values(**values)
            .returning(*T.c)
        ).first()
        if row is None:
            return None
        if Status(row.status).is_final:
            self._changed(conn, task_id)
        return _record(row)

    def _move_or_raise(self, conn: Connection, task_id: str, leaving: Collection[Status],
                       values: Mapping[str, Any], to: Status) -> TaskRecord:
        """``_move``; on no match, InvalidTransition for the state seen now, or another
        try when the task has just moved into one of the states ``leaving``."""
        for _ in range(_TRIES):
            moved = self._move(conn, task_id, leaving, values)
            if moved is not None:
                return moved
            _check(self._get(conn, task_id), to)
        raise _kept_changing(task_id, to.value)


def _status(value: Status | str) -> Status:
    try:
        return Status(value)
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise ConfigError(f"unknown status {value!r}: use one of {known}") from None


def write_parameters(conn: Connection, task_id: str, values: Mapping[str, Any], *,
                     now: float, replace: bool = False,
                     current: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge ``values`` into the task's parameters (or replace them) inside the caller's
    transaction, whose owner check has locked the row; returns all of them.

    ``current``: the row's parameters as this transaction has already read them, with
    the row locked (no second read). Nothing is written when the result is what the row
    holds, to the byte of its JSON: a script's argparse hook sends the same Args/...
    values every run, and the task's ``updated_at`` then stays as it was."""
    if current is None:
        row = conn.execute(select(T.c.parameters).where(T.c.id == task_id)).first()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id!r}: `hpo task list` shows the ids")
        current = row.parameters or {}
    merged = {**({} if replace else current), **_qualified(values)}
    # As stored (JSON text): 1, 1.0 and true are equal in Python, not in the row.
    if json.dumps(merged, ensure_ascii=False) != json.dumps(current, ensure_ascii=False):
        conn.execute(update(T).where(T.c.id == task_id).values(parameters=merged,
                                                               updated_at=now))
    return merged


def script_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    """What a running script may change on its own task (Task.set_name, set_tags,
    add_tags, set_comment), checked; the rest of the row belongs to the life cycle. A
    ValueError for anything else (the recorder skips such a message)."""
    unknown = set(data) - {"name", "tags", "add_tags", "comment"}
    if unknown:
        raise ValueError(f"a script cannot set task field(s) {sorted(unknown)}")
    fields: dict[str, Any] = {}
    if "name" in data:
        name = str(data["name"])
        if not name or len(name) > MAX_TASK_NAME_LEN or "\x00" in name:
            raise ValueError("a task name must have 1 to 512 characters, no NUL byte")
        fields["name"] = name
    for key in ("tags", "add_tags"):
        if key in data:
            if not isinstance(data[key], list):
                raise ValueError(f"{key} must be a list")
            fields[key] = [str(t) for t in data[key]]
    if "comment" in data:
        comment = None if data["comment"] is None else str(data["comment"])
        if comment is not None and "\x00" in comment:  # PostgreSQL refuses it
            raise ValueError("a comment must have no NUL byte")
        fields["comment"] = comment
    return fields


def write_fields(conn: Connection, task_id: str, fields: Mapping[str, Any], *,
                 now: float) -> None:
    """Set a task's name, tags or comment (``add_tags``: merged with its tags) inside
    the caller's transaction, whose owner check has locked the row."""
    values = script_fields(fields)
    added = values.pop("add_tags", None)
    if added:
        current = values.get("tags")
        if current is None:
            row = conn.execute(select(T.c.tags).where(T.c.id == task_id)).first()
            current = list(row.tags or []) if row is not None else []
        values["tags"] = current + [t for t in dict.fromkeys(added) if t not in current]
    if values:
        conn.execute(update(T).where(T.c.id == task_id).values(updated_at=now, **values))


def _qualified(values: Mapping[str, Any]) -> dict[str, Any]:
    return {P.qualify(k): P.to_json_value(v) for k, v in values.items()}


def _check(task: TaskRecord, to: Status) -> None:
    if to not in TRANSITIONS[task.status]:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[task.status]))
        raise InvalidTransition(
            f"task {task.id} is {task.status.value} and cannot become {to.value} "
            f"(allowed: {allowed})")


def _sources(to: Status) -> frozenset[Status]:
    """The states the life cycle lets a task leave for ``to``."""
    return frozenset(s for s, targets in TRANSITIONS.items() if to in targets)


def _values_for(to: Status, now: float, *, message: str | None = None,
                exit_code: int | None = None) -> dict[str, Any]:
    """What ``set_status`` writes for a move to ``to``, whichever state it leaves."""
    values: dict[str, Any] = {"status": to.value, "updated_at": now}
    if message is not None:
        values["status_message"] = message
    if exit_code is not None:
        values["exit_code"] = exit_code
    if to is Status.running:
        values.update(started_at=now, ended_at=None, attempt=T.c.attempt + 1)
    if to.is_final:
        values["ended_at"] = now
    if to is Status.created:
        values.update(worker=None, stop_requested=False, exit_code=None,
                      started_at=None, ended_at=None, status_message=None)
    return values


def _kept_changing(task_id: str, change: str) -> StoreError:
    return StoreError(
        f"task {task_id} changed status {_TRIES} times while this {change} was being "
        "written (other writers are moving it): read it again and retry")


def _unlocked(task_id: str | BindParameter[Any]) -> ColumnElement[bool]:
    """A condition true only while no other session holds the task's row: it locks the
    row itself, or skips it at once (PostgreSQL's FOR UPDATE SKIP LOCKED). For a reaper's
    writes, which must never wait on a cut-off client's lock. SQLite renders no FOR
    UPDATE: its writers hold the whole database and never wait on a row."""
    return T.c.id.in_(select(T.c.id).where(T.c.id == task_id)
                      .with_for_update(skip_locked=True))


# Built once, their values parameters: statements run every controller cycle, which
# cost SQLAlchemy more to build (and to make a cache key for) than to run.
_TASK_BY_ID = select(T).where(T.c.id == bindparam("id"))
# (A parameter may not take a column's name in a SET clause: hence "by", "final", ...)
_NOW: BindParameter[Any] = bindparam("now")
_TASK: BindParameter[Any] = bindparam("task")
_CLAIM = (
    update(T)
    .where(T.c.id == _TASK, T.c.status == Status.queued.value)
    .values(status=Status.running.value, worker=bindparam("by"), attempt=T.c.attempt + 1,
            started_at=_NOW, updated_at=_NOW, ended_at=None, exit_code=None,
            stop_requested=False, status_message=None, batch_seq=0)
    .returning(*T.c)
)
_FINISH = (
    update(T)
    .where(T.c.id == _TASK, T.c.status == Status.running.value,
           T.c.attempt == bindparam("owner"))
    .values(status=bindparam("final"), exit_code=bindparam("code"),
            status_message=bindparam("said"), ended_at=_NOW, updated_at=_NOW)
)
_FINISH_UNLOCKED = _FINISH.where(_unlocked(_TASK))


# Ids per statement of read_tasks: the statements stay a few shapes of bounded size,
# far below SQLite's and PostgreSQL's limits on parameters.
_IDS_PER_READ = 1024


def read_tasks(conn: Connection, task_ids: Sequence[str]) -> list[TaskRecord]:
    """``get_tasks``' query, in the caller's transaction (a controller's every cycle: on
    the driver's cursor, ``hpo.store.driver``)."""
    by_id: dict[str, TaskRecord] = {}
    for start in range(0, len(task_ids), _IDS_PER_READ):
        ids = padded(task_ids[start:start + _IDS_PER_READ], None)
        rows = _tasks_by_id(len(ids), conn.dialect).rows(
            conn, {f"i{n}": i for n, i in enumerate(ids)})
        by_id.update((m["id"], _record_of(m)) for m in rows)
    return [by_id[i] for i in task_ids if i in by_id]


@functools.lru_cache(maxsize=64)
def _tasks_by_id(count: int, dialect: Dialect) -> DriverQuery:
    return DriverQuery.compile(
        select(T).where(T.c.id.in_([bindparam(f"i{n}") for n in range(count)])), dialect)


def finish_statement(task_id: str, attempt: int, status: Status | str, *,
                     exit_code: int | None, message: str | None, now: float,
                     skip_locked: bool = False) -> tuple[Update, dict[str, Any]]:
    """The UPDATE that ends ``attempt`` and its parameters (``finish``'s policy, in one
    place); ``skip_locked``: it matches nothing while another session holds the row."""
    status = Status(status)
    if not status.is_final:
        raise InvalidTransition(f"finish() takes a final status, not {status.value}")
    return (_FINISH_UNLOCKED if skip_locked else _FINISH), {
        "task": task_id, "owner": attempt, "final": status.value, "code": exit_code,
        "said": message, "now": now}


def _record(row: Row[Any]) -> TaskRecord:
    return _record_of(row._mapping)


def _record_of(m: Mapping[Any, Any]) -> TaskRecord:
    return TaskRecord(
        id=m["id"], project=m["project"], name=m["name"], type=m["type"],
        status=Status(m["status"]), parent=m["parent"], tags=list(m["tags"] or []),
        queue=m["queue"], script=ScriptInfo.from_dict(m["script"]),
        parameters=dict(m["parameters"] or {}), time_limit=m["time_limit"],
        worker=m["worker"], attempt=m["attempt"], stop_requested=bool(m["stop_requested"]),
        status_message=m["status_message"], exit_code=m["exit_code"],
        created_at=m["created_at"], updated_at=m["updated_at"],
        started_at=m["started_at"], ended_at=m["ended_at"], comment=m["comment"],
        cloned_from=m["cloned_from"],
    )
