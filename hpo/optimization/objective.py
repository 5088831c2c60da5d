"""An optimization's objectives and the rule that scores a job by them, in one place:
the controller's live scoring (``Job``), resume and the store-only summary
(``hpo.optimization.summary``) all score through here, on the same reports
(``hpo.optimization.tally`` says which count and adds them up).

The rule: sign ``min``/``max`` counts the last reported value, ``min_global`` /
``max_global`` the best one; a NaN report anywhere, or an objective never reported,
leaves the job without a result (it counts as failed, and the search goes on).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SIGNS = ("min", "max", "min_global", "max_global")


@dataclass(frozen=True)
class Objective:
    """``sign`` min/max: the last reported value counts; min_global/max_global: the best
    value over all reports."""

    title: str
    series: str
    sign: str = "min"

    @property
    def minimize(self) -> bool:
        return self.sign.startswith("min")

    @property
    def use_best(self) -> bool:
        return self.sign.endswith("_global")


def is_better(objective: Objective, value: float, best: float | None) -> bool:
    """Whether a reported ``value`` improves on the ``best`` so far (a NaN never does)."""
    if math.isnan(value):
        return False
    return best is None or (value < best if objective.minimize else value > best)


def counted_value(objective: Objective, last: float | None, best: float | None,
                  saw_nan: bool = False) -> float | None:
    """The value that counts for one objective of one job: ``last`` (the report at the
    highest iteration that counts) for min/max, ``best`` for min_global/max_global.
    None when it was never reported, is NaN, or when any report was NaN (``saw_nan``)."""
    if saw_nan:
        return None
    value = best if objective.use_best else last
    return None if value is None or math.isnan(value) else float(value)


def job_result(values: Sequence[float | None], failed: bool = False) -> list[float] | None:
    """A job's result: every objective's counted value, or None when the job failed or
    one objective has no value (a job is scored on all its objectives or not at all)."""
    if failed or any(v is None for v in values):
        return None
    return [float(v) for v in values if v is not None]
