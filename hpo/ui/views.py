"""What the pages show, read from the store: the front page's optimizations, agents and
queues; one optimization (the report data and its figures); one task (fields, scalars,
log). Each live view also has a cheap version key, so a poll that finds nothing changed
is answered without loading or drawing anything."""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hpo import settings
from hpo.defaults import STOPPED_WORKERS_KEPT_S, UI_CLOCK_S
from hpo.lifecycle import Status
from hpo.optimization.summary import (
    OptimizationListing,
    load_config,
    tuned_keys,
)
from hpo.records import LogLine, TaskRecord, WorkerRecord
from hpo.store import Store
from hpo.ui import charts

LOG_TAIL = 300  # lines shown when a task page opens
LOG_BATCH = 2000  # at most this many new lines per poll


@dataclass
class OptimizationRow:
    listing: OptimizationListing
    strategy: str | None


@dataclass
class AgentRow:
    worker: WorkerRecord
    heartbeat_age_s: float
    # "running"; "silent": registered, but no heartbeat for lost_after_s (killed, or cut
    # off from the store: the reaper takes its tasks back); "stopped": it unregistered.
    state: str
    stopped_age_s: float | None = None

    @property
    def serving(self) -> bool:
        return self.state == "running"


@dataclass
class FrontPage:
    optimizations: list[OptimizationRow]
    agents: list[AgentRow]
    queues: list[tuple[str, int, int]]  # (queue, queued tasks, agents), busiest first


def front_page(store: Store, rows: list[OptimizationRow]) -> FrontPage:
    """The optimizations (``rows``, newest first), the agents (registered ones by name,
    then those stopped in the last STOPPED_WORKERS_KEPT_S, the latest first) and the
    queue lengths."""
    now = time.time()
    lost_after = settings.lost_after_s()
    agents = [agent_row(w, now, lost_after)
              for w in store.list_workers(stopped_within=STOPPED_WORKERS_KEPT_S)]
    agents.sort(key=lambda a: (a.worker.stopped_at is not None,
                               -(a.worker.stopped_at or 0.0), a.worker.name))
    return FrontPage(rows, agents, queue_rows(store, agents))


def agent_row(worker: WorkerRecord, now: float, lost_after_s: float) -> AgentRow:
    heartbeat_age = max(0.0, now - worker.last_heartbeat)
    if worker.stopped_at is not None:
        return AgentRow(worker, heartbeat_age, "stopped", max(0.0, now - worker.stopped_at))
    return AgentRow(worker, heartbeat_age,
                    "silent" if heartbeat_age > lost_after_s else "running")


def queue_rows(store: Store, agents: list[AgentRow]) -> list[tuple[str, int, int]]:
    """Every queue a running agent serves or a task waits in: (name, queued tasks,
    agents serving it), the longest first. An idle queue still shows, with 0 waiting."""
    queued = Counter(t.queue or "?" for t in store.find_tasks(status=Status.queued))
    serving = Counter(q for a in agents if a.serving for q in a.worker.queues)
    names = set(queued) | set(serving)
    return sorted(((n, queued[n], serving[n]) for n in names), key=lambda r: (-r[1], r[0]))


def version_key(*parts: Any) -> str:
    """A short, stable digest of what a view depends on (an ETag)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:20]


def optimization_version(store: Store, optimizer_id: str, top_k: int) -> str:
    """Changes whenever the optimization page would: the optimizer's status, a job
    launched or changing (any field), a new objective report (the learning curves).
    Four small queries, each an aggregate: far cheaper than the report itself."""
    task = store.get_task(optimizer_id)
    config = load_config(store, optimizer_id)
    reports = store.children_scalar_mark(optimizer_id, sorted({o.title for o in
                                                               config.objectives}))
    # While it runs, the clocks on the page (durations, wall time) move too: a new
    # version every UI_CLOCK_S even when nothing else changed.
    clock = None if task.status.is_final else int(time.time() // UI_CLOCK_S)
    return version_key(top_k, task.status.value, task.updated_at,
                       store.children_mark(optimizer_id), reports, clock)


def is_final(status: str) -> bool:
    return Status(status).is_final


def optimization_payload(store: Store, optimizer_id: str, top_k: int) -> dict[str, Any]:
    """The optimization page's data: summary (top-k and every job) and the report's
    figures as plotly JSON objects. plotly is imported here, only by the server."""
    import plotly.io as pio

    from hpo.report.data import load_report
    from hpo.report.figures import FIGURES, build_figures

    data = load_report(store, optimizer_id, top_k=top_k)
    figures = build_figures(data)
    summary = data.summary.to_dict()
    return {
        "summary": summary,
        "objective_label": data.objective_label,
        "parameters": summary["parameters"],
        "final": is_final(summary["status"]),
        "titles": FIGURES,
        "figures": {stem: json.loads(pio.to_json(figures[stem], validate=False))
                    for stem in FIGURES if stem in figures},
    }


def task_version(store: Store, task_id: str, log_after: int) -> str:
    """Changes when the task's record, its scalars or its log do."""
    task = store.get_task(task_id)
    reports = sum(m.count for m in store.scalar_summary([task_id]))
    last_log = store.tail_logs(task_id, 1)
    return version_key(task.status.value, task.updated_at, reports,
                       last_log[0].id if last_log else 0, log_after)


def task_payload(store: Store, task_id: str, log_after: int | None) -> dict[str, Any]:
    """One task: its fields, scalar and monitor figures, and its log (the tail, or the
    lines after the ``log_after`` cursor)."""
    import plotly.io as pio

    task = store.get_task(task_id)
    scalars, monitor = charts.scalar_figures(store.task_scalars(task_id))
    lines = (store.tail_logs(task_id, LOG_TAIL) if log_after is None
             else store.read_logs(task_id, after=log_after, limit=LOG_BATCH))
    return {
        "task": task_fields(task),
        "final": task.status.is_final,
        "scalars": {t: json.loads(pio.to_json(f, validate=False)) for t, f in scalars.items()},
        "monitor": {t: json.loads(pio.to_json(f, validate=False)) for t, f in monitor.items()},
        "log": [log_fields(line) for line in lines],
        "log_cursor": lines[-1].id if lines else (log_after or 0),
    }


def task_fields(task: TaskRecord) -> dict[str, Any]:
    now = time.time()
    return {
        "id": task.id, "name": task.name, "project": task.project, "type": task.type,
        "status": task.status.value, "message": task.status_message,
        "parent": task.parent, "queue": task.queue, "worker": task.worker,
        "attempt": task.attempt, "stop_requested": task.stop_requested,
        "exit_code": task.exit_code, "created_at": task.created_at,
        "started_at": task.started_at, "ended_at": task.ended_at,
        "duration_s": (max(0.0, (task.ended_at or now) - task.started_at)
                       if task.started_at is not None else None),
    }


def log_fields(line: LogLine) -> dict[str, Any]:
    return {"id": line.id, "time": line.time, "stream": line.stream, "text": line.text}


def tuned_parameters(store: Store, task: TaskRecord) -> set[str]:
    """The keys a task's parent optimization tunes (highlighted on its page)."""
    if task.parent is None:
        return set()
    try:
        return set(tuned_keys(load_config(store, task.parent)))
    except Exception:  # the parent is not an optimization
        return set()
