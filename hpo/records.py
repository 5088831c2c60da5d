"""Plain records the store returns and takes (standard library only)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpo.lifecycle import Status


@dataclass(frozen=True)
class ScriptInfo:
    """How to run a task's script: ``interpreter entry_point *argv`` in ``working_dir``."""

    entry_point: str
    working_dir: str
    argv: list[str] = field(default_factory=list)
    interpreter: str | None = None
    repository: str | None = None  # the remote (origin), else the top folder's path
    commit: str | None = None
    diff: str | None = None  # uncommitted changes to tracked files (git diff --binary)
    # The repository's top folder where the task was registered: where entry_point and
    # working_dir sit in the repository, for an agent that checks the commit out elsewhere.
    root: str | None = None
    # Modules its agent's warm slot imports before forking it (hpo.yaml's preload:), on
    # top of the agent's own --preload list; None: none. In the script JSON, so no
    # schema change, and a clone keeps it.
    preload: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ScriptInfo | None:
        if not data:
            return None
        # Keys a newer hpo wrote are left out: an older agent still runs the task.
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class TaskRecord:
    id: str
    project: str
    name: str
    type: str
    status: Status
    parent: str | None
    tags: list[str]
    queue: str | None
    script: ScriptInfo | None
    parameters: dict[str, Any]
    time_limit: float | None
    worker: str | None
    attempt: int
    stop_requested: bool
    status_message: str | None
    exit_code: int | None
    created_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None
    comment: str | None = None
    cloned_from: str | None = None  # the source task of a clone; None: not a clone


@dataclass(frozen=True)
class Scalar:
    """One reported value. ``id`` is the cursor for incremental reads."""

    id: int
    task_id: str
    title: str
    series: str
    iteration: int
    value: float
    time: float
    attempt: int = 0


@dataclass(frozen=True)
class MetricSummary:
    """Last (at the highest iteration), min and max of one series of one task."""

    task_id: str
    title: str
    series: str
    last: float
    min: float
    max: float
    last_iteration: int
    count: int
    nans: int = 0  # reports that were NaN (they count for last, not for min and max)


@dataclass(frozen=True)
class LogLine:
    id: int
    task_id: str
    time: float
    stream: str
    text: str


@dataclass(frozen=True)
class WorkerRecord:
    name: str
    queues: list[str]
    slots: list[str]
    running: list[str]
    host: str | None
    pid: int | None
    started_at: float
    last_heartbeat: float
    stopped_at: float | None = None  # when it stopped (unregistered); None: live
