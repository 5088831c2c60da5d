"""A display refreshed while an optimization runs reads only the jobs new or going
(``LiveSummary``): what it shows is the same as a read from scratch, at every refresh."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from hpo.lifecycle import Status
from hpo.optimization.config import OptimizerConfig
from hpo.optimization.summary import LiveSummary, OptimizationSummary, summarize
from hpo.store import Store, open_store
from tests.test_ui import fill_store


def comparable(summary: OptimizationSummary) -> dict[str, Any]:
    """Its fields, but the clocks of the jobs still running (each read's own)."""
    jobs = [r if r.ended_at else replace(r, duration_s=None) for r in summary.jobs]
    data = replace(summary, jobs=jobs).to_dict()
    data["budget"]["compute_min"] = data["budget"]["wall_min"] = None
    return data


def finished_job(store: Store, template: str, optimizer: str, loss: float) -> str:
    """A job launched and ended between two refreshes: its first read finds it final."""
    child = store.clone_task(template, parent=optimizer, name=f"late {loss}")
    store.enqueue(child.id, "ui-queue")
    attempt = store.claim(child.id, "agent-ui-1")
    assert attempt is not None
    store.append_scalars(child.id, [("loss", "total", 0, loss, time.time())], attempt=attempt)
    store.finish(child.id, attempt, Status.completed, exit_code=0)
    return child.id


@pytest.mark.parametrize("sign", ["min", "min_global"])
def test_a_live_summary_equals_a_read_from_scratch_at_every_refresh(tmp_path: Path,
                                                                    sign: str):
    # Given a running optimization: two jobs done, one running, one queued
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    filled = fill_store(store, url)
    config, _state = store.load_optimization(filled.optimizer)
    config["objectives"][0]["sign"] = sign  # min_global: the top rows' best iteration
    store.update_optimization_config(filled.optimizer, config)
    assert OptimizerConfig.from_dict(config).objectives[0].use_best is (sign == "min_global")
    live = LiveSummary(filled.optimizer, top_k=2)

    def both(check: list[str]) -> tuple[OptimizationSummary, OptimizationSummary]:
        kept = live.read(store, check)
        fresh = summarize(store, filled.optimizer, top_k=2, all_jobs=True)
        assert comparable(kept) == comparable(fresh)
        return kept, fresh

    # When the display reads it first: every child, the finished ones ended
    kept, _ = both([])
    assert [r.task_id for r in live.ended] == filled.completed  # oldest first
    assert kept.done == 2 and kept.running == 1 and kept.queued == 1

    # Then the running job ends as the best, the queued one starts, and a job launched
    # after the last read ends before the next one (named by the controller)
    attempt = store.get_task(filled.running).attempt
    store.append_scalars(filled.running, [("loss", "total", 2, 0.1, time.time())],
                         attempt=attempt)
    store.finish(filled.running, attempt, Status.completed, exit_code=0)
    assert store.claim(filled.queued, "agent-ui-1") is not None
    late = finished_job(store, filled.template, filled.optimizer, 0.05)
    kept, _ = both([late, filled.queued])
    assert [r.task_id for r in live.ended] == [filled.running, late]
    assert kept.top[0].task_id == late and kept.top[1].task_id == filled.running
    assert kept.done == 4 and kept.running == 1 and kept.launched == 5
    if sign == "min_global":
        assert kept.top[0].iteration == 0 and kept.top[1].iteration == 2

    # And a finished job run again (the controller's rerun names it): it leaves the top
    store.reset(late)
    kept, _ = both([late])
    assert live.ended == [] and kept.top[0].task_id == filled.running
    assert kept.counts["created"] == 1 and kept.done == 3
    # A refresh with nothing new shows the same
    kept, _ = both([])
    assert live.ended == []
    store.close()
