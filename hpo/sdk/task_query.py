"""``Task.get_tasks``' filters, with ClearML's meaning: a task name is a regular
expression searched in the name, tags match any (``"__$all"``: all) and ``"-tag"`` or
``"__$not", "tag"`` exclude one, and ``task_filter`` narrows by status, type, parent and
tags and orders by a field. The store narrows by project, status, type and parent; the
name and tag rules run here, on what it returns."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from hpo.errors import ConfigError
from hpo.lifecycle import TaskType
from hpo.records import TaskRecord
from hpo.store import Store

# task_filter keys hpo understands; others are refused, naming this list.
FILTER_KEYS = ("status", "type", "parent", "tags", "order_by")
# order_by fields (ClearML's names; "-" in front: descending).
_ORDER = {"created": "created_at", "last_update": "updated_at", "started": "started_at",
          "completed": "ended_at", "name": "name", "status": "status"}


def find(store: Store, task_ids: Sequence[str] | None, project_name: str | None,
         task_name: str | None, tags: Sequence[str] | None,
         task_filter: dict[str, Any], *, exact_name: str | None = None) -> list[TaskRecord]:
    """Tasks matching every filter, newest first (``exact_name``: ``get_task``'s exact
    name, narrowed by the store's index)."""
    unknown = sorted(set(task_filter) - set(FILTER_KEYS))
    if unknown:
        raise ConfigError(f"Task.get_tasks: task_filter key(s) {unknown} are not supported; "
                          f"hpo filters by {', '.join(FILTER_KEYS)} (docs/clearml.md)")
    if task_ids:
        records = store.get_tasks(list(task_ids))
    else:
        types = _listed(task_filter.get("type"))
        records = store.find_tasks(
            project=project_name, name=exact_name, status=_listed(task_filter.get("status")),
            parent=task_filter.get("parent"),
            type=TaskType(types[0]) if types and len(types) == 1 else None)
        if types and len(types) > 1:
            records = [r for r in records if r.type in types]
    if task_name:
        try:
            pattern = re.compile(task_name)
        except re.error as exc:
            raise ConfigError(f"Task.get_tasks: task_name {task_name!r} is not a regular "
                              f"expression ({exc}); use re.escape() for a literal name") from None
        records = [r for r in records if pattern.search(r.name)]
    for group in (tags, _listed(task_filter.get("tags"))):
        if group:
            records = [r for r in records if _tags_match(r.tags, list(group))]
    for order in reversed(_listed(task_filter.get("order_by")) or []):
        field = _ORDER.get(order.lstrip("-+"))
        if field is None:
            raise ConfigError(f"Task.get_tasks: cannot order by {order!r}; use one of "
                              f"{', '.join(_ORDER)} (a leading '-': descending)")
        records.sort(key=functools.partial(_sort_key, field), reverse=order.startswith("-"))
    return records


def _sort_key(field: str, record: TaskRecord) -> tuple[bool, Any]:
    value = getattr(record, field)
    return (value is None, value if value is not None else 0)


def _listed(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _tags_match(have: list[str], wanted: list[str]) -> bool:
    """ClearML's tag filter: any of the tags (or all after "__$all"); "-tag" and
    "__$not", "tag" exclude."""
    every = bool(wanted) and wanted[0] == "__$all"
    include, exclude, negate = [], [], False
    for tag in wanted:
        if tag in ("__$all", "__$any"):
            continue
        if tag == "__$not":
            negate = True
            continue
        if negate or tag.startswith("-"):
            exclude.append(tag if negate else tag[1:])
        else:
            include.append(tag)
        negate = False
    if any(t in have for t in exclude):
        return False
    if not include:
        return True
    return all(t in have for t in include) if every else any(t in have for t in include)
