"""Scalars and log lines: appended in batches, read incrementally by cursor."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import and_, delete, func, or_, select

from hpo.errors import TaskNotFound
from hpo.records import LogLine, MetricSummary, Scalar
from hpo.store import schema
from hpo.store.base import StoreBase
from hpo.store.tasks import _qualified

S = schema.scalars
L = schema.logs
T = schema.tasks


class ScalarReport(NamedTuple):
    """One value as reported: what ``append_scalars`` takes."""

    title: str
    series: str
    iteration: int
    value: float
    time: float


class MetricsMixin(StoreBase):
    def append_scalars(
        self, task_id: str, reports: Iterable[ScalarReport | Sequence[Any]], *,
        attempt: int | None = None,
    ) -> int:
        """Append a batch of reports in one transaction; returns how many.

        ``attempt``: the writing attempt, recorded with each report and fenced: the batch
        is refused with LostOwnership unless that attempt owns the task, checked in the
        same transaction. None: an unfenced writer (recorded as attempt 0)."""
        rows = [_scalar_row(task_id, ScalarReport(*r), attempt or 0) for r in reports]
        if rows:
            with self._write() as conn:
                self._check_owner(conn, task_id, attempt)
                conn.execute(S.insert(), rows)
        return len(rows)

    def drop_earlier_attempts(self, task_id: str, attempt: int) -> int:
        """Delete the scalars of attempts before ``attempt``: a re-run reports again, and
        its result must not count the lost attempt's values twice."""
        with self._write() as conn:
            result = conn.execute(
                delete(S).where(S.c.task_id == task_id, S.c.attempt < attempt))
            return int(result.rowcount)

    def read_scalars(self, cursors: Mapping[str, int], *, limit: int | None = None,
                     titles: Sequence[str] | None = None) -> list[Scalar]:
        """Every scalar of the given tasks after each task's cursor (a scalar id; 0 for
        all), oldest first, optionally of some titles only. Feed the last id seen per
        task back in as its cursor."""
        if not cursors:
            return []
        condition = or_(*(and_(S.c.task_id == t, S.c.id > c) for t, c in cursors.items()))
        query = select(S).where(condition).order_by(S.c.id)
        if titles is not None:
            query = query.where(S.c.title.in_(list(titles)))
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [_scalar(row._mapping) for row in conn.execute(query)]

    def task_scalars(
        self, task_id: str, *, title: str | None = None, series: str | None = None
    ) -> list[Scalar]:
        """All scalars of one task (optionally one title or series), oldest first."""
        query = select(S).where(S.c.task_id == task_id).order_by(S.c.id)
        if title is not None:
            query = query.where(S.c.title == title)
        if series is not None:
            query = query.where(S.c.series == series)
        with self._read() as conn:
            return [_scalar(row._mapping) for row in conn.execute(query)]

    def children_series(self, parent: str, title: str, series: str) -> list[Scalar]:
        """One series (an objective) of every child task of ``parent``, oldest first, in
        one query: no list of ids to send, whatever the number of children."""
        children = select(T.c.id).where(T.c.parent == parent).scalar_subquery()
        query = (select(S).where(S.c.task_id.in_(children), S.c.title == title,
                                 S.c.series == series).order_by(S.c.id))
        with self._read() as conn:
            return [_scalar(row._mapping) for row in conn.execute(query)]

    def children_scalar_mark(self, parent: str, titles: Sequence[str]) -> tuple[int, int]:
        """(how many, highest id) of the scalars of these titles reported by the children
        of ``parent``: changes whenever one is added or an attempt's are dropped. A cheap
        "anything new?" test for a page that polls."""
        children = select(T.c.id).where(T.c.parent == parent).scalar_subquery()
        query = select(func.count(), func.max(S.c.id)).where(
            S.c.task_id.in_(children), S.c.title.in_(list(titles)))
        with self._read() as conn:
            count, highest = conn.execute(query).one()
        return int(count), int(highest or 0)

    def scalar_summary(
        self, task_ids: Sequence[str], *, title: str | None = None, series: str | None = None
    ) -> list[MetricSummary]:
        """Last (at the highest iteration), min and max of each series of each task, in
        one query however many tasks. NaN reports count for last but not min/max."""
        if not task_ids:
            return []
        key = (S.c.task_id, S.c.title, S.c.series)
        inner = select(
            *key, S.c.value, S.c.iteration,
            func.row_number().over(partition_by=key,
                                   order_by=(S.c.iteration.desc(), S.c.id.desc())).label("rn"),
            func.min(S.c.value).over(partition_by=key).label("mn"),
            func.max(S.c.value).over(partition_by=key).label("mx"),
            func.count().over(partition_by=key).label("n"),
            # NaN is stored as NULL: count() counts it, count(value) does not.
            func.count(S.c.value).over(partition_by=key).label("numbers"),
        ).where(S.c.task_id.in_(list(task_ids)))
        if title is not None:
            inner = inner.where(S.c.title == title)
        if series is not None:
            inner = inner.where(S.c.series == series)
        sub = inner.subquery()
        query = select(sub).where(sub.c.rn == 1).order_by(sub.c.task_id, sub.c.title,
                                                           sub.c.series)
        with self._read() as conn:
            return [
                MetricSummary(
                    task_id=r.task_id, title=r.title, series=r.series, last=_float(r.value),
                    min=_float(r.mn), max=_float(r.mx), last_iteration=r.iteration, count=r.n,
                    nans=r.n - r.numbers,
                )
                for r in conn.execute(query)
            ]

    def append_logs(self, task_id: str, lines: Iterable[tuple[float, str, str]], *,
                    attempt: int | None = None) -> int:
        """Append a batch of (time, stream, text) log lines in one transaction;
        ``attempt`` fences it as in ``append_scalars`` (None: unfenced)."""
        rows = [{"task_id": task_id, "time": t, "stream": stream, "text": text}
                for t, stream, text in lines]
        if rows:
            with self._write() as conn:
                self._check_owner(conn, task_id, attempt)
                conn.execute(L.insert(), rows)
        return len(rows)

    def append_batch(
        self, task_id: str, *, attempt: int | None,
        scalars: Iterable[ScalarReport | Sequence[Any]] = (),
        logs: Iterable[tuple[float, str, str]] = (),
        parameters: Mapping[str, Any] | None = None,
    ) -> int:
        """One run's batch (scalars, log lines, parameters to merge; any may be empty)
        written in ONE transaction under ONE owner check: all of it, or, refused with
        LostOwnership (``attempt`` as in ``append_scalars``), none of it. The task row
        is locked FOR UPDATE only when there are parameters (they update it), FOR SHARE
        otherwise. Returns how many scalars."""
        scalar_rows = [_scalar_row(task_id, ScalarReport(*r), attempt or 0) for r in scalars]
        log_rows = [{"task_id": task_id, "time": t, "stream": stream, "text": text}
                    for t, stream, text in logs]
        if not (scalar_rows or log_rows or parameters):
            return 0
        with self._write() as conn:
            self._check_owner(conn, task_id, attempt, exclusive=bool(parameters))
            if parameters:
                current = conn.execute(select(T.c.parameters).where(T.c.id == task_id)
                                       ).first()
                if current is None:
                    raise TaskNotFound(
                        f"no task with id {task_id!r}: `hpo task list` shows the ids")
                merged = {**(current.parameters or {}), **_qualified(parameters)}
                conn.execute(T.update().where(T.c.id == task_id).values(
                    parameters=merged, updated_at=self.now()))
            if scalar_rows:
                conn.execute(S.insert(), scalar_rows)
            if log_rows:
                conn.execute(L.insert(), log_rows)
        return len(scalar_rows)

    def read_logs(self, task_id: str, *, after: int = 0, limit: int | None = None) -> list[LogLine]:
        """Log lines of a task after a cursor (a line id), oldest first."""
        query = select(L).where(L.c.task_id == task_id, L.c.id > after).order_by(L.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self._read() as conn:
            return [LogLine(**row._mapping) for row in conn.execute(query)]

    def tail_logs(self, task_id: str, count: int) -> list[LogLine]:
        """The last ``count`` log lines of a task, oldest first."""
        query = select(L).where(L.c.task_id == task_id).order_by(L.c.id.desc()).limit(count)
        with self._read() as conn:
            rows = [LogLine(**row._mapping) for row in conn.execute(query)]
        return rows[::-1]


def _scalar_row(task_id: str, r: ScalarReport, attempt: int) -> dict[str, Any]:
    value = float(r.value)
    return {
        "task_id": task_id, "title": str(r.title), "series": str(r.series),
        "iteration": int(r.iteration), "value": value if math.isfinite(value) else
        (None if math.isnan(value) else value), "time": float(r.time), "attempt": attempt,
    }


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


def _scalar(m: Any) -> Scalar:
    return Scalar(id=m["id"], task_id=m["task_id"], title=m["title"], series=m["series"],
                  iteration=m["iteration"], value=_float(m["value"]), time=m["time"],
                  attempt=m["attempt"])
