"""What the server keeps between requests: each optimization's line on the front page,
and the last JSON answer of each live view."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from hpo.defaults import UI_REBUILD_SHARE
from hpo.lifecycle import TaskType
from hpo.optimization.config import OptimizerConfig
from hpo.optimization.summary import listing, load_config
from hpo.records import TaskRecord
from hpo.store import Store
from hpo.ui.views import OptimizationRow


class ListingCache:
    """The front page's line of each optimization, kept while nothing of it changed: the
    page refreshes every few seconds, and a line costs a read of every job, whereas
    whether anything changed costs one aggregate query. Best values count finished jobs
    only, so the optimizer task and its children's own fields (status, updated_at) are
    all a line depends on."""

    def __init__(self) -> None:
        self._lines: dict[str, tuple[Any, OptimizationRow]] = {}
        self._lock = threading.Lock()

    def rows(self, store: Store, limit: int = 50) -> list[OptimizationRow]:
        tasks = store.find_tasks(type=TaskType.optimizer, limit=limit)
        rows = [self._row(store, task) for task in tasks]
        with self._lock:  # forget optimizations no longer listed
            for gone in set(self._lines) - {t.id for t in tasks}:
                del self._lines[gone]
        return rows

    def _row(self, store: Store, task: TaskRecord) -> OptimizationRow:
        key = (task.status.value, task.updated_at, store.children_mark(task.id))
        with self._lock:
            cached = self._lines.get(task.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            config: OptimizerConfig | None = load_config(store, task.id)
        except Exception:  # an optimizer task without a saved optimization
            config = None
        row = OptimizationRow(listing(store, task, config),
                              config.strategy if config is not None else None)
        with self._lock:
            self._lines[task.id] = (key, row)
        return row


@dataclass
class _Answer:
    version: str
    body: bytes
    built_at: float  # time.monotonic() when its build started
    build_s: float


class AnswerCache:
    """The last answer of each live view (a key: the view, its id, its options). Every
    page polling the same view shares one build; and a view that is slow to build (a
    large optimization whose jobs report every moment) is built again only
    UI_REBUILD_SHARE x its build time after the last build: until then pages get that
    answer, a little late, instead of the server spending all its time rebuilding."""

    def __init__(self, keep: int = 32) -> None:
        self._answers: OrderedDict[Hashable, _Answer] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()
        self._keep = keep

    def get(self, key: Hashable, version: str, build: Callable[[], bytes]
            ) -> tuple[str, bytes]:
        """(the version served, its body): the cached answer when it is of ``version``
        or too young to rebuild, else a new ``build()``."""
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:  # one build per view at a time; the others wait and share it
            answer = self._fresh(key, version)
            if answer is None:
                start = time.monotonic()
                body = build()
                answer = _Answer(version, body, start, time.monotonic() - start)
                self._store(key, answer)
            return answer.version, answer.body

    def _fresh(self, key: Hashable, version: str) -> _Answer | None:
        with self._lock:
            answer = self._answers.get(key)
        if answer is None:
            return None
        too_young = time.monotonic() - answer.built_at < UI_REBUILD_SHARE * answer.build_s
        return answer if answer.version == version or too_young else None

    def _store(self, key: Hashable, answer: _Answer) -> None:
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self._keep:
                old, _ = self._answers.popitem(last=False)
                self._building.pop(old, None)
