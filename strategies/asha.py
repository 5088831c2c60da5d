"""ASHA: asynchronous successive halving (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020).

Every configuration starts on the lowest rung, with a small iteration budget. Rung ``k``
has the budget ``r_min * eta**k``; the top rung is ``max_iteration_per_job``. Whenever a
worker is free, :meth:`ASHA.suggest` looks for a configuration that is in the top
``1/eta`` of all results recorded so far on its rung and has not been promoted yet,
highest rung first, and promotes it: a new trial with the same parameters, the next
rung's budget, and ``resume_from`` naming the trial it continues. Otherwise it samples a
new configuration (as :class:`~hpo.strategies.random_search.RandomSearch` does, never
the same one twice) for the lowest rung. It never waits for a rung to fill, so no worker
idles; it answers WAIT only when the space is used up while trials still run, and DONE
when the space is used up and nothing is running or promotable. A failed trial (or one
that reported NaN or infinity) ranks last on its rung and is never promoted.

The rungs: ``min_iteration_per_job`` is ``r_min`` when given; the rungs are
``r_min * eta**k`` for ``k < K = floor(log_eta(max / r_min))``, then
``max_iteration_per_job`` itself as the top rung (1, 3, 9 for 1..9 and eta 3; 1, 3, 15
for 1..15). Without ``min_iteration_per_job``, ``num_rungs`` rungs
(default: as many as fit with a lowest budget of at least 1, at most 4) are spaced
geometrically by ``eta`` down from ``max_iteration_per_job``.

A promoted trial restarts from scratch for now: the controller does not act on
``resume_from`` yet (the checkpoint hook is future work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hpo.errors import ConfigError
from hpo.space.product import check_space
from hpo.strategies.base import (
    NoSuggestion,
    SearchStrategy,
    Suggestion,
    check_seed,
    register,
)
from hpo.strategies.random_search import RandomSearch

_DEFAULT_MAX_RUNGS = 4
_STATE_VERSION = 1


def rung_budgets(max_iteration: int, eta: float, min_iteration: int | None = None,
                 num_rungs: int | None = None) -> list[int]:
    """The iteration budget of each rung, lowest first, strictly increasing, the last one
    ``max_iteration``."""
    if min_iteration:
        # The number of whole factors of eta between r_min and the maximum.
        steps = math.floor(math.log(max_iteration / min_iteration, eta) + 1e-9)
        budgets = [round(min_iteration * eta ** k) for k in range(steps)] + [max_iteration]
    else:
        if num_rungs is None:
            fit = 1 + math.floor(math.log(max_iteration, eta) + 1e-9)
            num_rungs = max(1, min(_DEFAULT_MAX_RUNGS, fit))
        budgets = [max(1, round(max_iteration / eta ** (num_rungs - 1 - k)))
                   for k in range(num_rungs)]
    unique: list[int] = []
    for budget in budgets:
        if not unique or budget > unique[-1]:
            unique.append(budget)
    return unique


@register
@dataclass
class ASHA(SearchStrategy):
    """Asynchronous successive halving. ``eta``: the reduction factor (the top 1/eta of
    a rung goes on, each rung's budget is eta times the one below); ``num_rungs``: the
    number of rungs when ``min_iteration_per_job`` is not given."""

    name = "asha"
    supports_multi_objective = False

    eta: float = 3
    num_rungs: int | None = None

    budgets: list[int] = field(init=False)
    _sampler: RandomSearch = field(init=False, repr=False)
    _configs: list[dict[str, Any]] = field(init=False, repr=False)  # by config index
    # trial id -> [config index, rung]
    _trials: dict[str, list[int]] = field(init=False, repr=False)
    # per rung: [config index, score (lower is better) or None for a failed trial]
    _results: list[list[list[Any]]] = field(init=False, repr=False)
    # per rung: config indexes already promoted from it
    _promoted: list[set[int]] = field(init=False, repr=False)
    _pending: set[str] = field(init=False, repr=False)  # suggested, no result heard yet
    _next_trial: int = field(init=False, repr=False)
    _exhausted: bool = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.objectives) != 1:
            raise ConfigError(f"ASHA optimizes one objective, not {len(self.objectives)}")
        if isinstance(self.eta, bool) or not isinstance(self.eta, int | float) or not (
                math.isfinite(self.eta) and self.eta > 1):
            raise ConfigError(f"ASHA: eta must be a number greater than 1 (e.g. 3), not "
                              f"{self.eta!r}")
        if self.num_rungs is not None and (isinstance(self.num_rungs, bool) or not isinstance(
                self.num_rungs, int) or self.num_rungs < 1):
            raise ConfigError(f"ASHA: num_rungs must be a positive integer, not "
                              f"{self.num_rungs!r}")
        if not self.max_iteration_per_job:
            raise ConfigError("ASHA needs max_iteration_per_job (the full budget of a job, "
                              "in reported iterations): set it, e.g. max_iteration_per_job: "
                              "27, and optionally min_iteration_per_job: 1")
        if self.min_iteration_per_job and self.num_rungs is not None:
            raise ConfigError("ASHA: give min_iteration_per_job or num_rungs, not both "
                              "(either one sets the lowest rung)")
        self.budgets = rung_budgets(self.max_iteration_per_job, self.eta,
                                    self.min_iteration_per_job or None, self.num_rungs)
        self.space = check_space(self.space)
        check_seed("ASHA", self.seed, text=True)
        self._sampler = RandomSearch(space=self.space, objectives=self.objectives,
                                     seed=self.seed)
        self._configs = []
        self._trials = {}
        self._results = [[] for _ in self.budgets]
        self._promoted = [set() for _ in self.budgets]
        self._pending = set()
        self._next_trial = 0
        self._exhausted = False

    # ----- the contract -------------------------------------------------------------

    def suggest(self) -> Suggestion | NoSuggestion:
        promotion = self._promotable()
        if promotion is not None:
            config, rung = promotion
            self._promoted[rung].add(config)
            parent = self._trial_of(config, rung)
            return self._new_trial(config, rung + 1, resume_from=parent)
        if not self._exhausted:
            drawn = self._sampler.suggest()
            if isinstance(drawn, Suggestion):
                self._configs.append(dict(drawn.parameters))
                return self._new_trial(len(self._configs) - 1, 0)
            self._exhausted = True
        # Space used up: a running trial may still make something promotable.
        return NoSuggestion.WAIT if self._pending else NoSuggestion.DONE

    def on_result(self, trial_id: str, values: Any) -> None:
        if trial_id not in self._pending:
            return  # unknown, or heard already
        self._pending.discard(trial_id)
        config, rung = self._trials[trial_id]
        score: float | None = None
        if values:
            value = float(values[0])
            if math.isfinite(value):  # NaN or infinity: as bad as a failure
                score = value if self.objectives[0].minimize else -value
        self._results[rung].append([config, score])

    def state(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "budgets": list(self.budgets),
            "sampler": self._sampler.state(),
            "configs": self._configs,
            "trials": self._trials,
            "results": self._results,
            "promoted": [sorted(p) for p in self._promoted],
            "pending": sorted(self._pending),
            "next_trial": self._next_trial,
            "exhausted": self._exhausted,
        }

    def restore(self, state: dict[str, Any]) -> None:
        try:
            if state["version"] != _STATE_VERSION:
                raise ValueError
            budgets = [int(b) for b in state["budgets"]]
            configs = [dict(c) for c in state["configs"]]
            trials = {str(t): [int(c), int(r)] for t, (c, r) in state["trials"].items()}
            results = [[[int(c), None if s is None else float(s)] for c, s in rung]
                       for rung in state["results"]]
            promoted = [{int(c) for c in rung} for rung in state["promoted"]]
            pending = {str(t) for t in state["pending"]}
            next_trial = int(state["next_trial"])
            exhausted = bool(state["exhausted"])
            sampler_state = state["sampler"]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise ConfigError("the saved ASHA state is malformed: start a new "
                              "optimization") from None
        if budgets != self.budgets or len(results) != len(budgets) or len(promoted) != len(
                budgets):
            raise ConfigError(f"the saved ASHA run had the rungs {budgets}, these settings "
                              f"give {self.budgets}: resume with the same eta and "
                              "min/max_iteration_per_job, or start a new optimization")
        self._sampler.restore(sampler_state)
        self._configs = configs
        self._trials = trials
        self._results = results
        self._promoted = promoted
        self._pending = pending
        self._next_trial = next_trial
        self._exhausted = exhausted

    # ----- helpers ------------------------------------------------------------------

    def _new_trial(self, config: int, rung: int, resume_from: str | None = None
                   ) -> Suggestion:
        trial_id = f"t{self._next_trial}"
        self._next_trial += 1
        self._trials[trial_id] = [config, rung]
        self._pending.add(trial_id)
        return Suggestion(trial_id=trial_id, parameters=dict(self._configs[config]),
                          max_iteration=self.budgets[rung], resume_from=resume_from)

    def _promotable(self) -> tuple[int, int] | None:
        """(config, rung) of the best not-yet-promoted configuration in the top 1/eta of
        its rung, the highest rung first; None if there is none."""
        for rung in range(len(self.budgets) - 2, -1, -1):
            results = self._results[rung]
            top = math.floor(len(results) / self.eta + 1e-9)
            if top == 0:
                continue
            ranked = sorted(results, key=lambda r: math.inf if r[1] is None else r[1])
            for config, score in ranked[:top]:
                if score is not None and config not in self._promoted[rung]:
                    return config, rung
        return None

    def _trial_of(self, config: int, rung: int) -> str | None:
        """The trial that ran ``config`` on ``rung`` (the one a promotion continues)."""
        for trial_id, (c, r) in self._trials.items():
            if c == config and r == rung:
                return trial_id
        return None

    def rung_of(self, trial_id: str) -> int | None:
        """The rung a trial was suggested for (None: not one of this strategy's)."""
        entry = self._trials.get(trial_id)
        return entry[1] if entry else None
