"""The store's tables (SQLAlchemy Core). Times are UNIX seconds as floats, the same on
SQLite and PostgreSQL; parameters, tags and script are JSON text."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

# Bump when a table changes; open() refuses a database with a newer number and brings
# an older one up to date (engine.py: new tables are created, and each version's other
# changes are applied in place, under the schema lock).
#   1: tasks, scalars, logs, workers;  2: + hpo_optimizations;
#   3: + hpo_tasks.cloned_from (filled from the "cloned from <id>" comment of version 2)
#   4: + hpo_tasks.batch_seq;  5: + hpo_reports, hpo_artifacts
#   6: + hpo_workers.stopped_at (a stopped agent's row is kept a while, not deleted)
SCHEMA_VERSION = 6


class JSONText(TypeDecorator[Any]):
    """JSON kept as text, so NaN, infinities and key order survive on every backend."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, ensure_ascii=False)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(value)


metadata = MetaData()

meta = Table(
    "hpo_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

tasks = Table(
    "hpo_tasks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("project", String(255), nullable=False),
    Column("name", String(512), nullable=False),
    Column("type", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("parent", String(32)),
    Column("tags", JSONText, nullable=False),
    Column("queue", String(255)),
    Column("script", JSONText),
    Column("parameters", JSONText, nullable=False),
    Column("time_limit", Float),
    Column("worker", String(255)),
    Column("attempt", Integer, nullable=False, default=0),
    # The sequence number of the last report batch stored from the current attempt (a
    # claim resets it): a batch sent again after a commit whose reply was lost (a cut
    # connection) is recognised and not stored twice.
    Column("batch_seq", Integer, nullable=False, default=0, server_default="0"),
    Column("stop_requested", Boolean, nullable=False, default=False),
    Column("status_message", Text),
    Column("exit_code", Integer),
    Column("comment", Text),
    # The task this one was cloned from (None: not a clone). A field, not comment text:
    # the comment is the user's, and "is it a template?" must not parse prose.
    Column("cloned_from", String(32)),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Index("ix_hpo_tasks_project_name", "project", "name"),
    Index("ix_hpo_tasks_parent", "parent"),
    Index("ix_hpo_tasks_status", "status"),
)

# id is the cursor of incremental reads: one writer per task (its agent) appends in
# order, so within a task ids grow in commit order.
scalars = Table(
    "hpo_scalars",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(32), nullable=False),
    Column("title", String(255), nullable=False),
    Column("series", String(255), nullable=False),
    Column("iteration", Integer, nullable=False),
    # NULL is a NaN report: SQLite cannot keep NaN, so both backends store NULL.
    Column("value", Float),
    Column("time", Float, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Index("ix_hpo_scalars_task_id", "task_id", "id"),
    Index("ix_hpo_scalars_series", "task_id", "title", "series", "iteration"),
)

logs = Table(
    "hpo_logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(32), nullable=False),
    Column("time", Float, nullable=False),
    Column("stream", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Index("ix_hpo_logs_task_id", "task_id", "id"),
)

workers = Table(
    "hpo_workers",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("queues", JSONText, nullable=False),
    Column("slots", JSONText, nullable=False),
    Column("running", JSONText, nullable=False),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("started_at", Float, nullable=False),
    Column("last_heartbeat", Float, nullable=False),
    Column("stopped_at", Float),  # NULL while the agent runs
)

# One row per optimization (its optimizer task): the configuration it was started with
# and the controller's saved state (strategy state, launched trials), for resume.
optimizations = Table(
    "hpo_optimizations",
    metadata,
    Column("task_id", String(32), primary_key=True),
    Column("config", JSONText, nullable=False),
    Column("state", JSONText),
    Column("updated_at", Float, nullable=False),
)

# What a script reports beside scalars and text (Logger.report_table, report_plotly,
# report_image, ...): one row per report. ``payload`` is the report's JSON (a plotly
# figure, a table's rows); ``file`` a path under the artifact root (defaults.
# artifact_root) for an image, a media file, or a payload too large to keep inline.
# ``attempt`` as in hpo_scalars: 0 for a run by hand, else the attempt that wrote it.
reports = Table(
    "hpo_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("task_id", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("title", String(255), nullable=False),
    Column("series", String(255), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("payload", JSONText),
    Column("file", String(1024)),
    Column("time", Float, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Index("ix_hpo_reports_task_id", "task_id", "id"),
)

# Task.upload_artifact: one row per (task, name), the last upload of that name. The
# content is a file under the artifact root (``file``, relative to it); ``type`` is
# ClearML's artifact type (dict, numpy, pandas, archive, custom, string, pickle).
artifacts = Table(
    "hpo_artifacts",
    metadata,
    Column("task_id", String(32), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("file", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("content_type", String(128)),
    Column("metadata", JSONText, nullable=False),
    Column("preview", Text),
    Column("time", Float, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
)
