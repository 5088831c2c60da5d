"""An optimization's launch: the controller's saved state and the trials' clones, queued,
written in one transaction.

A launch used to be three commits per trial (the state, the clone, its enqueue), each
waiting on PostgreSQL's WAL flush; here a cycle's launches are one. The controller's
crash guarantee holds as before, tighter: a suggestion is saved atomically with its
clone, never after it (``hpo.controller.controller``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from hpo.errors import TaskNotFound
from hpo.store import schema
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


class LaunchesMixin(TasksMixin, OptimizationsMixin):
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
        with self._write() as conn:
            updated = conn.execute(_SAVE_STATE, {"id": optimization_id, "state": state,
                                                 "updated_at": self.now()}).rowcount
            if not updated:
                raise TaskNotFound(f"no optimization {optimization_id}: `hpo-controller "
                                   "list` shows them")
            source = self._get(conn, source_id)
            new = _not_stored(conn, clones) if only_missing else clones
            rows = [{**self._clone_values(source, name=c.name, parent=parent, project=project,
                                          parameters=c.parameters, tags=list(c.tags),
                                          time_limit=c.time_limit, queue=queue), "id": c.id}
                    for c in new]
            if rows:
                conn.execute(schema.tasks.insert(), rows)
        return [c.id for c in clones]


def _not_stored(conn: Connection, clones: Sequence[NewClone]) -> list[NewClone]:
    """The clones whose id no stored task has."""
    if not clones:
        return []
    stored = set(conn.scalars(select(schema.tasks.c.id).where(
        schema.tasks.c.id.in_([c.id for c in clones]))))
    return [c for c in clones if c.id not in stored]
