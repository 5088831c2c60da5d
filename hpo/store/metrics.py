"""Scalars and log lines: appended in batches, read incrementally by cursor."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Dialect,
    Integer,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)

from hpo.lifecycle import Status
from hpo.records import LogLine, MetricSummary, Scalar, TaskRecord
from hpo.store import schema
from hpo.store.base import StoreBase
from hpo.store.driver import DriverQuery, padded
from hpo.store.reports import (
    ArtifactEntry,
    Report,
    checked_iteration,
    checked_name,
    drop_reports,
    report_rows,
    write_artifacts,
)
from hpo.store.tasks import finish_statement, read_tasks, write_fields, write_parameters

S = schema.scalars
L = schema.logs
T = schema.tasks

# Built once, their values parameters: an agent runs them for every batch of every run,
# and building one (and its cache key) cost SQLAlchemy more than running it.
_INSERT_SCALARS = S.insert()
_INSERT_LOGS = L.insert()
_FENCE_UPDATE = (
    update(T)
    .where(T.c.id == bindparam("task"), T.c.status == Status.running.value,
           T.c.attempt == bindparam("owner"), T.c.batch_seq < bindparam("seq"))
    .values(batch_seq=bindparam("seq"))
)
_FENCE = _FENCE_UPDATE.returning(T.c.id)
_FENCE_READING_PARAMETERS = _FENCE_UPDATE.returning(T.c.parameters)


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
                self._reported(conn, task_id)
        return len(rows)

    def drop_earlier_attempts(self, task_id: str, attempt: int) -> int:
        """Delete the scalars (and reports, artifact records) of attempts before
        ``attempt``: a re-run reports again, and its result must not count the lost
        attempt's values twice."""
        with self._write() as conn:
            result = conn.execute(
                delete(S).where(S.c.task_id == task_id, S.c.attempt < attempt))
            drop_reports(conn, task_id, before_attempt=attempt)
            return int(result.rowcount)

    def read_scalars(self, cursors: Mapping[str, int], *, limit: int | None = None,
                     titles: Sequence[str] | None = None) -> list[Scalar]:
        """Every scalar of the given tasks after each task's cursor (a scalar id; 0 for
        all), oldest first, optionally of some titles only. Feed the last id seen per
        task back in as its cursor."""
        if not cursors:
            return []
        with self._read() as conn:
            return _scalars_after(conn, cursors, titles, limit)

    def read_jobs(self, task_ids: Sequence[str], cursors: Mapping[str, int], *,
                  titles: Sequence[str] | None = None
                  ) -> tuple[list[TaskRecord], list[Scalar]]:
        """``get_tasks(task_ids)``, then ``read_scalars(cursors, titles=titles)``, in one
        transaction (a controller's look at its active jobs each cycle: one BEGIN and
        COMMIT fewer). The scalars are read after the records, so a record seen
        finished comes with every report its agent stored before finishing it."""
        if not task_ids:
            return [], []
        with self._read() as conn:
            tasks = read_tasks(conn, task_ids)
            scalars = _scalars_after(conn, cursors, titles, None) if cursors else []
        return tasks, scalars

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
        self, task_ids: Sequence[str], *, title: str | None = None, series: str | None = None,
        budgets: Mapping[str, int] | None = None, budget_series: tuple[str, str] | None = None,
    ) -> list[MetricSummary]:
        """Last (at the highest iteration), min and max of each series of each task, in
        one query however many tasks. NaN reports count for last but not min/max.

        ``budgets``: an iteration budget per task (a task not in it has none). Only a
        task's reports up to and including the first one (by row id: in the order
        reported) at or past its budget count, the controller's rule
        (``hpo.optimization.tally``): the first such report of ``budget_series`` (title,
        series: the primary objective) when given, else of each series itself."""
        if not task_ids:
            return []
        budget = _budget_by_task(S.c.task_id, task_ids, budgets or {})
        if budget is None:
            rows: Any = S
            where = [S.c.task_id.in_(list(task_ids)), *_series_filter(S, title, series)]
        else:
            # Measured (3,000 jobs, 20 reports each): a join against the cuts costs SQLite
            # nothing (it indexes the cuts) but PostgreSQL, whose planner picks a nested
            # loop when the table has no statistics yet, 20x; a window costs PostgreSQL
            # 10-20% and SQLite 45%. So each gets its own; both count the same rows.
            counted = _counted_by_window if self.dialect == "postgresql" else _counted_by_join
            rows, where = counted(task_ids, title, series, budget, budget_series), []
        key = (rows.c.task_id, rows.c.title, rows.c.series)
        inner = select(
            *key, rows.c.value, rows.c.iteration,
            func.row_number().over(partition_by=key, order_by=(
                rows.c.iteration.desc(), rows.c.id.desc())).label("rn"),
            func.min(rows.c.value).over(partition_by=key).label("mn"),
            func.max(rows.c.value).over(partition_by=key).label("mx"),
            func.count().over(partition_by=key).label("n"),
            # NaN is stored as NULL: count() counts it, count(value) does not.
            func.count(rows.c.value).over(partition_by=key).label("numbers"),
        ).where(*where)
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
        rows = _log_rows(task_id, lines)
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
        seq: int | None = None,
        reports: Iterable[Report | Sequence[Any]] = (),
        artifacts: Iterable[ArtifactEntry | Sequence[Any]] = (),
        fields: Mapping[str, Any] | None = None,
    ) -> int:
        """One run's batch (scalars, log lines, parameters to merge, reports, artifacts,
        task fields (name, tags, comment); any may be empty) written in ONE transaction
        under ONE owner check: all of it, or, refused with LostOwnership (``attempt`` as
        in ``append_scalars``), none of it. The task row is locked FOR UPDATE when there
        are parameters, fields or a ``seq`` (they update it), FOR SHARE otherwise.
        Returns how many scalars were stored.

        ``seq`` (with ``attempt``): the batch's number in its attempt, 1, 2, ... A batch
        whose number is not above the last stored one is a resend of one already stored
        (its commit went through, the reply was lost) and is skipped: 0 is returned, so
        a writer that retries every failed write stores each batch exactly once."""
        scalars, logs, reports, artifacts = list(scalars), list(logs), list(reports), \
            list(artifacts)
        if not (scalars or logs or parameters or reports or artifacts or fields):
            return 0  # no transaction for nothing (a SQLite write takes the file's lock)
        with self._write() as conn:
            return self._write_batch(conn, task_id, attempt=attempt, scalars=scalars,
                                     logs=logs, parameters=parameters, seq=seq,
                                     reports=reports, artifacts=artifacts, fields=fields)

    def _write_batch(
        self, conn: Connection, task_id: str, *, attempt: int | None,
        scalars: Iterable[ScalarReport | Sequence[Any]] = (),
        logs: Iterable[tuple[float, str, str]] = (),
        parameters: Mapping[str, Any] | None = None,
        seq: int | None = None,
        reports: Iterable[Report | Sequence[Any]] = (),
        artifacts: Iterable[ArtifactEntry | Sequence[Any]] = (),
        fields: Mapping[str, Any] | None = None,
        announce: bool = True,
    ) -> int:
        """``append_batch`` inside the caller's transaction (``finish`` writes a run's
        last batches and its end in one). ``announce`` False: new scalars are not
        announced (the caller announces what its transaction did)."""
        scalar_rows = [_scalar_row(task_id, ScalarReport(*r), attempt or 0) for r in scalars]
        log_rows = _log_rows(task_id, logs)
        reported = report_rows(task_id, reports, attempt)
        uploaded = [ArtifactEntry(*a) for a in artifacts]
        if not (scalar_rows or log_rows or parameters or reported or uploaded or fields):
            return 0
        current: dict[str, Any] | None = None  # the row's parameters, when read already
        if seq is not None and attempt is not None:
            fenced = self._fence_batch(conn, task_id, attempt, seq,
                                       parameters=bool(parameters))
            if fenced is None:
                return 0
            current = fenced
        else:
            self._check_owner(conn, task_id, attempt,
                              exclusive=bool(parameters) or bool(fields))
        if parameters:
            write_parameters(conn, task_id, parameters, now=self.now(), current=current)
        if fields:
            write_fields(conn, task_id, fields, now=self.now())
        if scalar_rows:
            conn.execute(_INSERT_SCALARS, scalar_rows)
            if announce:
                self._reported(conn, task_id)
        if log_rows:
            conn.execute(_INSERT_LOGS, log_rows)
        if reported:
            conn.execute(schema.reports.insert(), reported)
        if uploaded:
            write_artifacts(conn, task_id, uploaded, attempt)
        return len(scalar_rows)

    def _fence_batch(self, conn: Connection, task_id: str, attempt: int, seq: int, *,
                     parameters: bool) -> dict[str, Any] | None:
        """The fence of numbered batch ``seq`` of ``attempt`` and its number recorded, in
        ONE statement: an UPDATE of the task's ``batch_seq`` only while ``attempt`` owns
        the task (running, that attempt) and the number is new. It locks the row until
        commit, as ``_check_owner``'s FOR UPDATE would (PostgreSQL; SQLite's BEGIN
        IMMEDIATE already serialises writers), so a re-queue or a claim lands before
        the batch or after it. The row's parameters when ``parameters`` (read by the same
        statement, for the merge), else {}; None for a resend of a batch already stored
        (nothing to write). When it matches no row, a second look tells a lost owner
        (LostOwnership; TaskNotFound) from a resend: an attempt that has lost the task
        never owns it again (a claim makes a new attempt)."""
        row = conn.execute(_FENCE_READING_PARAMETERS if parameters else _FENCE,
                           {"task": task_id, "owner": attempt, "seq": seq}).first()
        if row is None:
            self._check_owner(conn, task_id, attempt)
            return None
        return dict(row[0] or {}) if parameters else {}

    def finish_with_batches(
        self, task_id: str, attempt: int, status: Status | str, *,
        exit_code: int | None = None, message: str | None = None,
        batches: Iterable[Mapping[str, Any]] = (),
    ) -> bool:
        """A run's last batches (each ``append_batch``'s keyword arguments) and its end
        (``finish``) in ONE transaction: the agent's last write of a run. False, with
        nothing written, when ``attempt`` no longer owns the task; LostOwnership when
        a batch is refused for the same reason; StoreRefusedValue (nothing written) for
        a value the store cannot take: write the batches alone then."""
        statement, params = finish_statement(task_id, attempt, status,
                                             exit_code=exit_code, message=message,
                                             now=self.now())
        with self._write() as conn:
            # The batches' new scalars are not announced: a batch that stores any has
            # found ``attempt`` owning the task and locked its row, so the end below
            # matches and its one wake-up covers them (a waiter woken by an end reads
            # the task's scalars with it: the controller's _observe reads every active
            # job's scalars after their records, whatever woke it).
            for batch in batches:
                self._write_batch(conn, task_id, attempt=attempt, announce=False, **batch)
            return self._update_changed(conn, statement, params, task_id)

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


def scalar_from_message(data: Mapping[str, Any], now: float) -> ScalarReport:
    """A scalar as a script's SDK sent it over the channel, checked (names and iteration
    its columns hold); anything else is a KeyError, TypeError or ValueError (the
    recorder skips it). ``now``: its time when the message has none."""
    return ScalarReport(checked_name(data["title"]), checked_name(data["series"]),
                        checked_iteration(data["iteration"]), float(data["value"]),
                        float(data.get("time") or now))


def _scalar_row(task_id: str, r: ScalarReport, attempt: int) -> dict[str, Any]:
    value = float(r.value)
    return {
        "task_id": task_id, "title": str(r.title), "series": str(r.series),
        "iteration": int(r.iteration), "value": value if math.isfinite(value) else
        (None if math.isnan(value) else value), "time": float(r.time), "attempt": attempt,
    }


def _log_rows(task_id: str, lines: Iterable[tuple[float, str, str]]
              ) -> list[dict[str, Any]]:
    # PostgreSQL refuses a NUL in text, and a refused batch would be resent forever,
    # holding back the run's outcome: a script printing binary output must not do that.
    return [{"task_id": task_id, "time": t, "stream": stream,
             "text": text.replace("\x00", "\ufffd")} for t, stream, text in lines]


def _budget_by_task(task_id: Any, task_ids: Sequence[str], budgets: Mapping[str, int]
                    ) -> Any:
    """Each task's budget as one SQL expression (None when no task has one), grouped by
    value: BOHB and ASHA use a handful of budgets, and when every task has one the most
    common is the ELSE, so only the other budgets' ids are sent (none when all share one:
    a plain bound, which the series index serves)."""
    groups: dict[int, list[str]] = {}
    for t in dict.fromkeys(task_ids):
        if (budget := budgets.get(t)) is not None:
            groups.setdefault(int(budget), []).append(t)
    if not groups:
        return None
    ordered = sorted(groups.items(), key=lambda group: -len(group[1]))
    if sum(len(ids) for _, ids in ordered) == len(dict.fromkeys(task_ids)):
        (common, _), rest = ordered[0], ordered[1:]
        if not rest:
            return literal(common, Integer)
        return case(*((task_id.in_(ids), budget) for budget, ids in rest), else_=common)
    return case(*((task_id.in_(ids), budget) for budget, ids in ordered))


def _series_filter(table: Any, title: str | None, series: str | None) -> list[Any]:
    conditions = []
    if title is not None:
        conditions.append(table.c.title == title)
    if series is not None:
        conditions.append(table.c.series == series)
    return conditions


def _reached(budget: Any, budget_series: tuple[str, str] | None) -> tuple[Any, list[Any]]:
    """A scalar at or past its task's budget, and the series that decide (none: each)."""
    if budget_series is None:
        return S.c.iteration >= budget, []
    on_series = [S.c.title == budget_series[0], S.c.series == budget_series[1]]
    return and_(*on_series, S.c.iteration >= budget), on_series


def _counted_by_join(task_ids: Sequence[str], title: str | None, series: str | None,
                     budget: Any, budget_series: tuple[str, str] | None) -> Any:
    """The scalars that count, as a subquery: joined with each task's cut (the id of its
    first report at or past its budget: one grouped read of the series index)."""
    by = (S.c.task_id,) if budget_series else (S.c.task_id, S.c.title, S.c.series)
    reached, _ = _reached(budget, budget_series)
    which = [] if budget_series else _series_filter(S, title, series)
    cuts = (select(*(c.label(f"cut_{c.name}") for c in by), func.min(S.c.id).label("cut"))
            .where(S.c.task_id.in_(list(task_ids)), *which, reached)
            .group_by(*by).subquery())
    joined = S.outerjoin(cuts, and_(*(cuts.c[f"cut_{c.name}"] == c for c in by)))
    return (select(S.c.task_id, S.c.title, S.c.series, S.c.value, S.c.iteration, S.c.id)
            .select_from(joined)
            .where(S.c.task_id.in_(list(task_ids)), *_series_filter(S, title, series),
                   or_(cuts.c.cut.is_(None), S.c.id <= cuts.c.cut))
            .subquery())


def _counted_by_window(task_ids: Sequence[str], title: str | None, series: str | None,
                       budget: Any, budget_series: tuple[str, str] | None) -> Any:
    """The scalars that count, as a subquery: each row with its task's cut (the id of its
    first report at or past its budget) by a window over the rows read once."""
    reached, on_series = _reached(budget, budget_series)
    partition = (S.c.task_id,) if budget_series else (S.c.task_id, S.c.title, S.c.series)
    wanted = _series_filter(S, title, series)
    if wanted and on_series:  # the deciding series is read, summarized or not
        wanted = [or_(and_(*wanted), and_(*on_series))]
    cut = func.min(case((reached, S.c.id))).over(partition_by=partition).label("cut")
    rows = (select(S.c.task_id, S.c.title, S.c.series, S.c.value, S.c.iteration, S.c.id, cut)
            .where(S.c.task_id.in_(list(task_ids)), *wanted).subquery())
    return (select(rows.c.task_id, rows.c.title, rows.c.series, rows.c.value,
                   rows.c.iteration, rows.c.id)
            .where(or_(rows.c.cut.is_(None), rows.c.id <= rows.c.cut),
                   *_series_filter(rows, title, series))
            .subquery())


def _float(value: float | None) -> float:
    return math.nan if value is None else float(value)


# Cursors per statement of _scalars_after: its condition is an OR of one term per
# cursor, which SQLite parses as a tree as deep as the terms (at most 1,000 deep).
_CURSORS_PER_READ = 256


def _scalars_after(conn: Connection, cursors: Mapping[str, int],
                   titles: Sequence[str] | None, limit: int | None) -> list[Scalar]:
    """``read_scalars``' query, in the caller's transaction (a controller's every cycle:
    on the driver's cursor, ``hpo.store.driver``), in statements of at most
    ``_CURSORS_PER_READ`` cursors, their rows merged oldest first."""
    pairs = list(cursors.items())
    found: list[Scalar] = []
    for start in range(0, len(pairs), _CURSORS_PER_READ):
        found += _scalars_after_some(conn, pairs[start:start + _CURSORS_PER_READ], titles,
                                     limit)
    if len(pairs) > _CURSORS_PER_READ:
        found.sort(key=lambda scalar: scalar.id)
    return found[:limit] if limit is not None else found


def _scalars_after_some(conn: Connection, pairs: Sequence[tuple[str, int]],
                        titles: Sequence[str] | None, limit: int | None) -> list[Scalar]:
    """One statement of ``_scalars_after``: the pairs and titles padded to its shape
    with NULLs, which match nothing."""
    some = padded(pairs, (None, 0))
    named = None if titles is None else padded(titles, None)
    query = _scalars_after_query(len(some), None if named is None else len(named),
                                 limit is not None, conn.dialect)
    params: dict[str, Any] = {"limit": limit}
    for i, (task_id, cursor) in enumerate(some):
        params[f"t{i}"], params[f"c{i}"] = task_id, cursor
    params.update((f"n{i}", title) for i, title in enumerate(named or ()))
    return [_scalar(m) for m in query.rows(conn, params)]


@functools.lru_cache(maxsize=256)
def _scalars_after_query(tasks: int, titles: int | None, limited: bool,
                         dialect: Dialect) -> DriverQuery:
    """``_scalars_after``'s statement for ``tasks`` cursors and ``titles`` titles
    (a count; None: any title), built and compiled once per shape with its values as
    parameters: a controller runs it every cycle, and building it (and its cache key)
    cost SQLAlchemy more than running it."""
    condition = or_(*(and_(S.c.task_id == bindparam(f"t{i}"), S.c.id > bindparam(f"c{i}"))
                      for i in range(tasks)))
    query = select(S).where(condition).order_by(S.c.id)
    if titles is not None:
        query = query.where(S.c.title.in_([bindparam(f"n{i}") for i in range(titles)]))
    if limited:
        query = query.limit(bindparam("limit"))
    return DriverQuery.compile(query, dialect)


def _scalar(m: Any) -> Scalar:
    return Scalar(id=m["id"], task_id=m["task_id"], title=m["title"], series=m["series"],
                  iteration=m["iteration"], value=_float(m["value"]), time=m["time"],
                  attempt=m["attempt"])
