"""An optimization's objectives and the rule that scores a job by them (one place: the
controller, the store-only summary and resume all score through here)."""

from __future__ import annotations

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
