"""Before an optimization runs: a grid its ``total_max_jobs`` barely covers is said so
once, at the start (a display's note, else a log warning); an optimizer built and never
started is said so at exit and reads "never started", never ``completed 0/20``."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from hpo.automation import (
    HyperParameterOptimizer,
    UniformIntegerParameterRange,
    UniformParameterRange,
)
from hpo.controller.formatting import status_fields
from hpo.lifecycle import Status
from hpo.optimization.summary import list_optimizations, summarize
from hpo.store import open_store
from hpo.strategies.grid_search import GridSearch

pytestmark = pytest.mark.timeout(120)

# The ClearML documentation's example space: 6 x 8 x 11 x 40 = 21,120 combinations.
SEED_SPACE = [
    UniformIntegerParameterRange("number_of_epochs", min_value=2, max_value=12, step_size=2),
    UniformIntegerParameterRange("batch_size", min_value=2, max_value=16, step_size=2),
    UniformParameterRange("dropout", min_value=0, max_value=0.5, step_size=0.05),
    UniformParameterRange("base_lr", min_value=0.00025, max_value=0.01, step_size=0.00025),
]


def grid(total_max_jobs: int | None) -> GridSearch:
    return GridSearch(space=SEED_SPACE, objectives=[], total_max_jobs=total_max_jobs)


def test_a_grid_much_larger_than_total_max_jobs_says_how_much_it_covers_and_what_to_do():
    note = grid(20).coverage_note()
    assert note == (
        "grid of 21,120 combinations, total_max_jobs 20 covers 0.09%: the 20 jobs differ "
        "only in base_lr (the grid is run in order, its last parameter fastest); use "
        "strategy: random (or optuna) to sample the whole space, or raise total_max_jobs")
    # 100 jobs run through base_lr's 40 values and on into dropout's
    assert "differ only in dropout, base_lr" in (grid(100).coverage_note() or "")
    assert "under 0.01%" in (GridSearch(space=[*SEED_SPACE, UniformIntegerParameterRange(
        "n", 1, 1000)], objectives=[], total_max_jobs=20).coverage_note() or "")


@pytest.mark.parametrize("total", [None, 21_120, 10_560, 50_000])
def test_a_grid_its_budget_covers_or_nearly_is_not_warned_of(total):
    assert grid(total).coverage_note() is None


@pytest.fixture
def made(hpo_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A store with a base task, and an embedded broker: what an optimizer needs."""
    store = open_store(create=True)
    base = store.create_task("p", "template", parameters={
        f"General/{p.name}": 1 for p in SEED_SPACE})
    return {**hpo_env, "HPO_BROKER_URL": f"sqla+sqlite:///{tmp_path / 'broker.db'}",
            "BASE": base.id}


NEVER_STARTED = """
import os
from hpo.automation import HyperParameterOptimizer
from tests.test_optimizer_start import SEED_SPACE
optimizer = HyperParameterOptimizer(
    base_task_id=os.environ["BASE"], hyper_parameters=SEED_SPACE,
    objective_metric_title="accuracy", objective_metric_series="total",
    objective_metric_sign="max", optimizer_class="grid", total_max_jobs=20,
    auto_connect_task=False)
print(optimizer.id)
"""


def test_an_optimizer_never_started_says_so_at_exit_and_reads_never_started(made):
    # Given a script that builds an optimizer and never calls start() (the seed example)
    root = str(Path(__file__).resolve().parents[1])
    result = subprocess.run([sys.executable, "-c", NEVER_STARTED], env=made, cwd=root,
                            capture_output=True, text=True, timeout=60, check=True)
    optimizer_id = result.stdout.strip()
    # Then it says so as the script exits, naming what to call
    assert "was created but never started: no job ran" in result.stderr, result.stderr
    assert "optimizer.start()" in result.stderr
    # And the store reads "never started", not a completed optimization of 0/20 jobs
    store = open_store()
    assert store.get_task(optimizer_id).status is Status.created
    summary = summarize(store, optimizer_id)
    assert not summary.started and summary.launched == 0
    assert dict(status_fields(summary))["status"] == "never started"
    [listed] = list_optimizations(store)
    assert listed.id == optimizer_id and not listed.started
    # And stopping it says there is nothing to stop
    stop = subprocess.run([sys.executable, "-m", "hpo.controller.cli", "stop", optimizer_id[:8]],
                          env=made, capture_output=True, text=True, timeout=60, check=True)
    assert stop.stdout == f"{optimizer_id} never started: nothing to stop\n"


def test_the_grid_note_is_a_display_s_to_show_else_start_logs_it_once(made, monkeypatch, caplog):
    monkeypatch.setenv("HPO_BROKER_URL", made["HPO_BROKER_URL"])

    def build() -> HyperParameterOptimizer:
        return HyperParameterOptimizer(
            base_task_id=made["BASE"], hyper_parameters=SEED_SPACE,
            objective_metric_title="accuracy", objective_metric_series="total",
            objective_metric_sign="max", optimizer_class="grid", total_max_jobs=2,
            max_number_of_concurrent_tasks=1, auto_connect_task=False)

    # Given a grid its budget barely covers, whose note a display took before the start
    shown = build()
    [note] = shown.notices_before_start()
    assert note.startswith("grid of 21,120 combinations, total_max_jobs 2 covers under 0.01%")
    assert shown.notices_before_start() == []  # once
    # When an optimizer nobody took the note from starts (the Python API)
    caplog.set_level(logging.WARNING, logger="hpo.controller")
    quiet = build()
    for optimizer in (shown, quiet):
        optimizer.start()
        optimizer.stop(timeout=60)
    # Then the start logged it, once, and only for the one whose note no display took
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("grid of")]
    assert logged == [note]
    # And both ran: running from start() on, ended by the stop
    store = open_store()
    for optimizer in (shown, quiet):
        assert store.get_task(optimizer.id).status is Status.stopped
        assert summarize(store, optimizer.id).started
