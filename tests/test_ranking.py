"""Which job is best: a job trained on a larger iteration budget (BOHB, ASHA) ranks
before any job on a smaller one, then the objective decides; without budgets of their
own, jobs rank by the objective alone (random, grid, Optuna)."""

from __future__ import annotations

from typing import Any

from hpo.optimization.ranking import budget_of, rank_key, reached_budget
from hpo.optimization.summary import JobRow, best_rows
from hpo.strategies.base import Objective


def row(task_id: str, objective: float | None, budget: int | None,
        status: str = "stopped", reached: int | None = None) -> JobRow:
    """A job; by default one stopped at its budget (as BOHB and ASHA stop them)."""
    nothing: Any = None
    return JobRow(task_id=task_id, name=task_id, status=status, objective=objective,
                  objectives=[objective], iteration=None, parameters={}, worker=nothing,
                  started_at=None, ended_at=None, duration_s=None, message=None,
                  budget=budget, reached=budget if reached is None else reached)


def test_the_budget_tag_is_read_back():
    assert budget_of(["optimizer:x", "trial:t1", "budget:9"]) == 9
    assert budget_of(["optimizer:x"]) is None
    assert budget_of(["budget:many"]) is None


def test_a_lucky_low_budget_job_does_not_outrank_the_full_budget_ones():
    rows = [row("lucky-1-epoch", 0.01, 1), row("full-a", 0.30, 9), row("full-b", 0.20, 9),
            row("mid", 0.05, 3), row("failed", None, 9, "failed"),
            row("running", 0.0, 9, "running")]
    ranked = best_rows(rows, Objective("val", "loss", "min"), full_budget=9)
    assert [r.task_id for r in ranked] == ["full-b", "full-a", "mid", "lucky-1-epoch"]


def test_without_budgets_the_objective_alone_ranks_in_its_direction():
    rows = [row("a", 0.7, None, "completed", 4), row("b", 0.9, None, "stopped", 2),
            row("c", 0.8, None, "completed", 14)]
    assert [r.task_id for r in best_rows(rows, Objective("v", "acc", "max"))] == ["b", "c", "a"]
    # A job with no budget of its own ran on the full one: level with budget:9 jobs.
    # (Epochs may be a tuned parameter: how far such a job got does not rank it.)
    assert rank_key(0.5, None, 9, True) < rank_key(0.6, 9, 9, True) < rank_key(0.1, 3, 9, True)


def test_a_job_stopped_before_its_budget_ranks_at_the_iteration_it_reached():
    # The optimization was stopped while a 9-iteration job was at iteration 1.
    rows = [row("b9-stopped-at-1", 0.95, 9, "stopped", reached=1),
            row("b3-good", 0.21, 3), row("b3-ok", 0.30, 3),
            row("b9-script-ended-at-5", 0.50, 9, "completed", reached=5)]
    ranked = best_rows(rows, Objective("val", "loss", "min"), full_budget=9)
    assert [r.task_id for r in ranked] == ["b9-script-ended-at-5", "b3-good", "b3-ok",
                                           "b9-stopped-at-1"]
    assert reached_budget(9, 12, completed=False) == 9  # reported past it while stopping
    assert reached_budget(9, None, completed=False) == 0  # never reported
    assert reached_budget(None, 1, completed=False) is None  # no budget of its own
