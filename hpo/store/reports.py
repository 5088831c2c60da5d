"""Reports beside scalars (tables, plots, images, media) and artifacts: what a script's
``Logger.report_*`` and ``Task.upload_artifact`` record. Files live under the artifact
root (``hpo.defaults.artifact_root``); the store keeps their paths relative to it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, delete, func, select

from hpo.errors import ConfigError
from hpo.store import schema
from hpo.store.base import StoreBase

R = schema.reports
A = schema.artifacts

# The kinds of report a row may hold (Logger's report_* calls; text goes to the log and
# single values to the scalars, as ClearML keeps them).
REPORT_KINDS = ("table", "plotly", "image", "media", "histogram", "scatter2d",
                "confusion_matrix")


class Report(NamedTuple):
    """One report as sent: what ``append_reports`` takes. ``payload``: JSON; ``file``: a
    path relative to the artifact root (an image, a media file, a large payload)."""

    kind: str
    title: str
    series: str
    iteration: int
    payload: Any
    file: str | None
    time: float


def report_from_message(data: dict[str, Any]) -> Report:
    """A report as a script's SDK sent it over the channel, checked: a kind this store
    knows, names its columns hold, a file path that stays under the artifact root.
    Anything else is a ValueError (the recorder skips it)."""
    report = Report(str(data["kind"]), checked_name(data["title"]),
                    checked_name(data["series"]), checked_iteration(data["iteration"]),
                    data.get("payload"), _rel(data.get("file")),
                    float(data.get("time") or 0.0))
    if report.kind not in REPORT_KINDS:
        raise ValueError(f"unknown report kind {report.kind!r}")
    return report


def artifact_from_message(data: dict[str, Any]) -> ArtifactEntry:
    """An artifact entry as a script's SDK sent it, checked likewise."""
    file = _rel(data["file"])
    if file is None:
        raise ValueError("an artifact needs its file")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ValueError("artifact metadata must be a dict")
    preview = data.get("preview")
    return ArtifactEntry(checked_name(data["name"]), str(data["type"])[:32], file,
                         int(data["size"]), str(data["hash"])[:64],
                         None if data.get("content_type") is None else
                         str(data["content_type"])[:128], metadata,
                         None if preview is None else str(preview), float(data["time"]))


def checked_name(value: Any) -> str:
    """A title, series or name as its column holds it, else a ValueError: a value the
    store refuses would make the batch that carries it fail on every resend."""
    text = str(value)
    if len(text) > 255 or "\x00" in text:
        raise ValueError("a title, series or name longer than 255 characters or with a "
                         "NUL byte")
    return text


def checked_iteration(value: Any) -> int:
    """An iteration as its column holds it (32 bits on PostgreSQL), else a ValueError."""
    iteration = int(value)
    if not -2**31 <= iteration < 2**31:
        raise ValueError(f"iteration {iteration} is beyond 32 bits")
    return iteration


def _rel(value: Any) -> str | None:
    """A path relative to the artifact root, or None; ``..`` or an absolute path is a
    ValueError: a script must not make the store name files outside the root."""
    if value is None:
        return None
    text = str(value)
    if not text or len(text) > 1024 or text.startswith(("/", "\\")) or ".." in text.split("/"):
        raise ValueError(f"bad report file path {text[:80]!r}")
    return text


class ArtifactEntry(NamedTuple):
    """One uploaded artifact as sent: what ``put_artifact`` takes."""

    name: str
    type: str
    file: str
    size: int
    hash: str
    content_type: str | None
    metadata: dict[str, Any]
    preview: str | None
    time: float


@dataclass(frozen=True)
class ReportRecord:
    id: int
    task_id: str
    kind: str
    title: str
    series: str
    iteration: int
    payload: Any
    file: str | None
    time: float
    attempt: int


@dataclass(frozen=True)
class ArtifactRecord:
    task_id: str
    name: str
    type: str
    file: str
    size: int
    hash: str
    content_type: str | None
    metadata: dict[str, Any]
    preview: str | None
    time: float
    attempt: int


class ReportsMixin(StoreBase):
    def append_reports(self, task_id: str, reports: Iterable[Report | Sequence[Any]], *,
                       attempt: int | None = None) -> int:
        """Append reports in one transaction, fenced by ``attempt`` as ``append_scalars``."""
        rows = report_rows(task_id, reports, attempt)
        if rows:
            with self._write() as conn:
                self._check_owner(conn, task_id, attempt)
                conn.execute(R.insert(), rows)
        return len(rows)

    def put_artifact(self, task_id: str, entry: ArtifactEntry | Sequence[Any], *,
                     attempt: int | None = None) -> None:
        """Record an artifact, replacing one of the same name (an upload of a name again
        is its new version, as in ClearML); fenced by ``attempt``."""
        with self._write() as conn:
            self._check_owner(conn, task_id, attempt)
            write_artifacts(conn, task_id, [entry], attempt)

    def task_reports(self, task_id: str, *, kind: str | None = None) -> list[ReportRecord]:
        """A task's reports, oldest first (optionally of one kind)."""
        query = select(R).where(R.c.task_id == task_id).order_by(R.c.id)
        if kind is not None:
            query = query.where(R.c.kind == kind)
        with self._read() as conn:
            return [ReportRecord(**row._mapping) for row in conn.execute(query)]

    def report_counts(self, task_id: str) -> dict[str, int]:
        """How many reports of each kind the task holds."""
        query = (select(R.c.kind, func.count()).where(R.c.task_id == task_id)
                 .group_by(R.c.kind).order_by(R.c.kind))
        with self._read() as conn:
            return {kind: int(n) for kind, n in conn.execute(query)}

    def task_artifacts(self, task_id: str) -> list[ArtifactRecord]:
        """A task's artifacts, by name."""
        query = select(A).where(A.c.task_id == task_id).order_by(A.c.name)
        with self._read() as conn:
            return [_artifact(row._mapping) for row in conn.execute(query)]

    def get_artifact(self, task_id: str, name: str) -> ArtifactRecord:
        query = select(A).where(A.c.task_id == task_id, A.c.name == name)
        with self._read() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise ConfigError(f"task {task_id} has no artifact {name!r}: "
                              f"`hpo task artifacts {task_id}` lists them")
        return _artifact(row._mapping)


def report_rows(task_id: str, reports: Iterable[Report | Sequence[Any]],
                attempt: int | None) -> list[dict[str, Any]]:
    rows = []
    for r in reports:
        report = Report(*r)
        if report.kind not in REPORT_KINDS:
            raise ConfigError(f"unknown report kind {report.kind!r}: one of "
                              f"{', '.join(REPORT_KINDS)}")
        rows.append({"task_id": task_id, "kind": report.kind, "title": str(report.title),
                     "series": str(report.series), "iteration": int(report.iteration),
                     "payload": report.payload, "file": report.file,
                     "time": float(report.time), "attempt": attempt or 0})
    return rows


def write_artifacts(conn: Connection, task_id: str,
                    entries: Iterable[ArtifactEntry | Sequence[Any]],
                    attempt: int | None) -> None:
    """Insert or replace artifacts by name, inside the caller's (owner-checked)
    transaction: a delete then an insert, the same on SQLite and PostgreSQL."""
    for e in entries:
        entry = ArtifactEntry(*e)
        conn.execute(delete(A).where(A.c.task_id == task_id, A.c.name == entry.name))
        conn.execute(A.insert().values(task_id=task_id, attempt=attempt or 0,
                                       **entry._asdict()))


def drop_reports(conn: Connection, task_id: str, before_attempt: int | None = None) -> None:
    """Delete a task's reports and artifact records (all, or those of attempts before
    ``before_attempt``), in the caller's transaction. The files stay: the artifact root
    is shared storage the store does not own, and a stale attempt may still hold one."""
    for table in (R, A):
        where = [table.c.task_id == task_id]
        if before_attempt is not None:
            where.append(table.c.attempt < before_attempt)
        conn.execute(delete(table).where(*where))


def _artifact(m: Any) -> ArtifactRecord:
    return ArtifactRecord(**{**m, "metadata": dict(m["metadata"] or {})})
