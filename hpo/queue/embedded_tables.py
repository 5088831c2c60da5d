"""The embedded broker's two tables, in SQLAlchemy Core: a queue's name and id, and each
message with its queue's id.

They are the tables kombu's SQLAlchemy transport models with its ORM, column for
column, index for index: a broker file that kombu's own transport (or an earlier hpo)
created is used as it is, and one made here stays readable by kombu. Core only, because
kombu's models need SQLAlchemy's ORM, about 50 ms of imports in every process that
uses the embedded broker (the controller's start-up among them), for two tables. Left
out: kombu's MySQL table option (InnoDB, MySQL's default engine anyway), whose mere
mention makes SQLAlchemy import its MySQL dialect.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Sequence,
    SmallInteger,
    String,
    Table,
    Text,
)

# kombu's ids: BIGINT on SQL Server, whose sequences start at their minimum value.
_ID = Integer().with_variant(BigInteger, "mssql")
# kombu's defaults for its transport options queue_tablename and message_tablename.
QUEUE_TABLE = "kombu_queue"
MESSAGE_TABLE = "kombu_message"


class BrokerTables(NamedTuple):
    metadata: MetaData
    queues: Table
    messages: Table


@functools.cache
def broker_tables(queue_table: str = QUEUE_TABLE,
                  message_table: str = MESSAGE_TABLE) -> BrokerTables:
    """The two tables under these names (one MetaData per pair, made once)."""
    metadata = MetaData()
    # sqlite_autoincrement: ids never reused, so "oldest first" by id holds after deletes.
    queues = Table(
        queue_table, metadata,
        Column("id", _ID, Sequence("queue_id_sequence"), primary_key=True,
               autoincrement=True),
        Column("name", String(200), unique=True),
        sqlite_autoincrement=True,
    )
    messages = Table(
        message_table, metadata,
        Column("id", _ID, Sequence("message_id_sequence"), primary_key=True,
               autoincrement=True),
        Column("visible", Boolean, default=True, index=True),
        # kombu's "sent_at": set on no insert (its ORM sets it on update only).
        Column("timestamp", DateTime, nullable=True, index=True),
        Column("payload", Text, nullable=False),
        Column("version", SmallInteger, nullable=False, default=1),
        Column("queue_id", _ID,
               ForeignKey(f"{queue_table}.id", name="FK_kombu_message_queue")),
        Index("ix_kombu_message_timestamp_id", "timestamp", "id"),  # kombu's, fixed
        sqlite_autoincrement=True,
    )
    return BrokerTables(metadata, queues, messages)
