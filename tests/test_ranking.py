"""Which job is best: a job trained on a larger iteration budget (BOHB, ASHA) ranks
before any job on a smaller one, then the objective decides; without budgets of their
own, jobs rank by the objective alone (random, grid, Optuna)."""

from __future__ import annotations

from typing import Any

from hpo.controller.jobs import budget_of, rank_key
from hpo.controller.summary import JobRow, best_rows
from hpo.strategies.base import Objective


def row(task_id: str, objective: float | None, budget: int | None,
        status: str = "completed") -> JobRow:
    nothing: Any = None
    return JobRow(task_id=task_id, name=task_id, status=status, objective=objective,
                  objectives=[objective], iteration=None, parameters={}, worker=nothing,
                  started_at=None, ended_at=None, duration_s=None, message=None,
                  budget=budget)


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
    rows = [row("a", 0.7, None), row("b", 0.9, None), row("c", 0.8, None)]
    assert [r.task_id for r in best_rows(rows, Objective("v", "acc", "max"))] == ["b", "c", "a"]
    # A job with no budget of its own ran on the full one: level with budget:9 jobs.
    assert rank_key(0.5, None, 9, True) < rank_key(0.6, 9, 9, True) < rank_key(0.1, 3, 9, True)
