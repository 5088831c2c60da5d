"""Grid search: every combination of every range's values, once each, in the order
of ``itertools.product`` over the ranges (ClearML's ``GridSearch``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hpo.defaults import GRID_COVERAGE_WARN_RATIO
from hpo.errors import ConfigError
from hpo.space.product import check_space, combination_at, space_fingerprint, space_size
from hpo.strategies.base import NoSuggestion, SearchStrategy, Suggestion, register


@register
@dataclass
class GridSearch(SearchStrategy):
    name = "grid"
    supports_multi_objective = True  # it ignores the objectives altogether

    _size: int = field(init=False, repr=False)
    _next: int = field(init=False, repr=False)
    _fingerprint: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.space = check_space(self.space)
        for param in self.space:
            if not param.is_finite:
                raise ConfigError(f"{type(param).__name__} {param.name!r} has no step_size: "
                                  "grid search needs one")
        size = space_size(self.space)
        assert size is not None  # every range is finite, checked above
        self._size = size
        self._next = 0
        # Once: the controller saves the state at every launch.
        self._fingerprint = space_fingerprint(self.space)

    def suggest(self) -> Suggestion | NoSuggestion:
        if self._next >= self._size:
            return NoSuggestion.DONE
        # Computed from the index rather than held in an iterator, so that the state
        # is one number and a huge grid costs no memory.
        config = combination_at(self.space, self._next)
        trial_id = f"t{self._next}"
        self._next += 1
        return Suggestion(trial_id=trial_id, parameters=config)

    def coverage_note(self) -> str | None:
        """One line when ``total_max_jobs`` covers much less of the grid than it holds
        (GRID_COVERAGE_WARN_RATIO): how much it covers, which parameters its jobs vary
        (the grid is walked in order, the last range fastest), and how to sample the
        whole space instead. None when it is covered, or nearly."""
        jobs = self.total_max_jobs
        if jobs is None or self._size <= jobs * GRID_COVERAGE_WARN_RATIO:
            return None
        varied: list[str] = []
        stride = 1  # a range varies in the first jobs when its stride is less
        for param in reversed(self.space):
            assert param.size is not None
            if param.size > 1 and stride < jobs:
                varied.insert(0, param.name)
            stride *= param.size
        only = (f"the {jobs} jobs differ only in {', '.join(varied)}" if varied
                else f"the {jobs} jobs are all alike")
        share = jobs / self._size
        covered = f"{share:.2%}" if share >= 0.0001 else "under 0.01%"
        return (f"grid of {self._size:,} combinations, total_max_jobs {jobs} covers "
                f"{covered}: {only} (the grid is run in order, its last "
                "parameter fastest); use strategy: random (or optuna) to sample the whole "
                "space, or raise total_max_jobs")

    def state(self) -> dict[str, Any]:
        return {"fingerprint": self._fingerprint, "next_index": self._next}

    def restore(self, state: dict[str, Any]) -> None:
        try:
            fingerprint, index = state["fingerprint"], state["next_index"]
        except (KeyError, TypeError):
            raise ConfigError("the saved grid-search state is malformed: start a new "
                              "optimization") from None
        if fingerprint != self._fingerprint:
            raise ConfigError("the saved grid search was over a different parameter space: "
                              "resume with the same hyper_parameters or start a new one")
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise ConfigError(f"the saved grid-search state has a bad next_index {index!r}: "
                              "start a new optimization")
        self._next = index
