"""Which job is best: one rule for the controller's ``best_jobs`` and the store-only
summary (``best_rows``), kept across resume."""

from __future__ import annotations

import math

from hpo import relations


def budget_of(tags: list[str]) -> int | None:
    """The iteration budget a ``budget:<n>`` tag gives, None without one."""
    value = relations.tag_value(tags, relations.BUDGET)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def reached_budget(budget: int | None, last_iteration: int | None, completed: bool
                   ) -> int | None:
    """The budget a job is ranked at: the one it was given (None: the full one) when it
    got there or its script ended on its own; else only as far as it reported (a job
    stopped early by a limit or by hand is no full-budget result)."""
    if budget is None or completed:
        return budget
    if last_iteration is not None and last_iteration >= budget:
        return budget
    return max(last_iteration if last_iteration is not None else 0, 0)


def rank_key(value: float, budget: int | None, full_budget: int | None,
             minimize: bool, *, ended_at: float | None = None, task_id: str = ""
             ) -> tuple[float, float, float, str]:
    """Best first: a job run on a larger iteration budget (BOHB, ASHA) before any job on
    a smaller one, as hpbandster picks its incumbent, so a lucky 1-epoch job never
    outranks the jobs trained in full; among equal budgets, the better objective; among
    equal objectives (a tie), the job that ended first, then the smaller task id, so
    every view of the ranking names the same best job. A job without a budget of its
    own ran on the full one."""
    reached = budget if budget is not None else full_budget
    size = float(reached) if reached is not None else math.inf
    return (-size, value if minimize else -value,
            ended_at if ended_at is not None else math.inf, task_id)
