"""A display refreshed while an optimization runs reads the finished jobs' rows once:
what it shows is the same as a read from scratch, at every refresh."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hpo.lifecycle import Status
from hpo.optimization.summary import RowCache, summarize
from hpo.store import open_store
from tests.test_ui import fill_store


def test_a_summary_read_with_kept_rows_equals_one_read_from_scratch(tmp_path: Path):
    # Given a running optimization: two jobs done, one running, one queued
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    filled = fill_store(store, url)
    cache = RowCache()

    def both() -> tuple[Any, Any]:
        kept = summarize(store, filled.optimizer, all_jobs=True, cache=cache)
        fresh = summarize(store, filled.optimizer, all_jobs=True)
        # A running job's duration is the clock's at each read: not compared
        for summary in (kept, fresh):
            summary.jobs = [r if r.ended_at else replace(r, duration_s=None)
                            for r in summary.jobs]
        return kept, fresh

    # When the display reads it, then again after the running job reported and ended
    kept, fresh = both()
    assert kept.jobs == fresh.jobs and kept.top == fresh.top and kept.ends == fresh.ends
    assert set(cache.rows) == set(filled.completed)
    attempt = store.get_task(filled.running).attempt
    store.append_scalars(filled.running, [("loss", "total", 2, 0.1, time.time())],
                         attempt=attempt)
    store.finish(filled.running, attempt, Status.completed, exit_code=0)
    kept, fresh = both()
    # Then every read shows what a read from scratch shows: the new best included
    assert kept.jobs == fresh.jobs and kept.top == fresh.top and kept.ends == fresh.ends
    assert kept.top[0].task_id == filled.running and kept.top[0].objective == 0.1
    assert set(cache.rows) == {*filled.completed, filled.running}
    store.close()
