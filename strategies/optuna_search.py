"""``OptimizerOptuna``: Optuna's ask/tell driven by the controller.

The study lives in the store's own database (Optuna's RDB storage), named after the
optimization, so it survives a controller restart and ``optuna-dashboard <store url>``
shows it. Any Optuna sampler and pruner can be passed; TPE (NSGA-II with several
objectives) and the median pruner are the defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna

from hpo.automation.parameters import (
    DiscreteParameterRange,
    Kind,
    LogUniformParameterRange,
    Parameter,
    ParameterSet,
)
from hpo.errors import ConfigError
from hpo.strategies.base import Decision, SearchStrategy, Suggestion, register

optuna.logging.set_verbosity(optuna.logging.WARNING)

_PLAIN = (type(None), bool, int, float, str)


@register
@dataclass
class OptimizerOptuna(SearchStrategy):
    optuna_sampler: Any = None
    optuna_pruner: Any = None
    #: An optuna.Study (or a study name in the store) whose trials this search continues.
    continue_previous_study: Any = None
    #: Optuna storage URL; default: the store's own database.
    storage: str | None = None
    study_name: str | None = None
    _study: Any = field(default=None, init=False, repr=False)
    _trials: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _pruned: set[str] = field(default_factory=set, init=False, repr=False)

    name = "optuna"
    supports_multi_objective = True

    def attach(self, store_url: str, optimization_id: str) -> None:
        previous = self.continue_previous_study
        if isinstance(previous, optuna.Study):
            self._study = previous
            return
        name = previous if isinstance(previous, str) else (
            self.study_name or f"hpo-{optimization_id}")
        directions = ["minimize" if o.minimize else "maximize" for o in self.objectives]
        sampler = self.optuna_sampler or (
            optuna.samplers.NSGAIISampler(seed=self.seed) if len(directions) > 1
            else optuna.samplers.TPESampler(seed=self.seed))
        self._study = optuna.create_study(
            storage=self.storage or store_url, study_name=name, directions=directions,
            sampler=sampler, pruner=self.optuna_pruner or optuna.pruners.MedianPruner(),
            load_if_exists=True)

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            raise ConfigError("OptimizerOptuna was not attached to an optimization")
        return self._study

    def suggest(self) -> Suggestion:
        trial = self.study.ask()
        values: dict[str, Any] = {}
        for parameter in self.space:
            values.update(_suggest(trial, parameter))
        trial_id = f"optuna-{trial.number}"
        self._trials[trial_id] = trial
        return Suggestion(trial_id, values)

    def on_report(self, trial_id: str, iteration: int, values: Sequence[float]) -> Decision:
        trial = self._trials.get(trial_id)
        if trial is None or len(self.objectives) > 1:
            return Decision.CONTINUE  # Optuna cannot prune multi-objective studies
        value = values[0]
        if value != value:  # NaN: nothing to report
            return Decision.CONTINUE
        trial.report(value, step=iteration)
        if iteration < (self.min_iteration_per_job or 0):
            return Decision.CONTINUE
        if trial.should_prune():
            self._pruned.add(trial_id)
            return Decision.STOP
        return Decision.CONTINUE

    def on_result(self, trial_id: str, values: Sequence[float] | None) -> None:
        trial = self._trials.pop(trial_id, None)
        if trial is None:
            return
        state = optuna.trial.TrialState
        if trial_id in self._pruned:
            self.study.tell(trial, state=state.PRUNED)
        elif values is None:
            self.study.tell(trial, state=state.FAIL)
        else:
            self.study.tell(trial, list(values) if len(values) > 1 else values[0])

    def state(self) -> dict[str, Any]:
        return {"study_name": self.study.study_name,
                "running": {t: trial._trial_id for t, trial in self._trials.items()},
                "pruned": sorted(self._pruned)}

    def restore(self, state: dict[str, Any]) -> None:
        # The study itself is in the store; only the trials still running are rebuilt.
        self._trials = {t: optuna.trial.Trial(self.study, trial_id)
                        for t, trial_id in state.get("running", {}).items()}
        self._pruned = set(state.get("pruned", []))


def _suggest(trial: optuna.Trial, p: Parameter) -> dict[str, Any]:
    if isinstance(p, ParameterSet):
        combos = p.to_list()
        index = trial.suggest_categorical(p.name, list(range(len(combos))))
        return dict(combos[index])
    if isinstance(p, DiscreteParameterRange) or p.kind is Kind.CATEGORICAL:
        choices = p.values()
        if all(isinstance(c, _PLAIN) for c in choices):
            return {p.name: trial.suggest_categorical(p.name, choices)}
        return {p.name: choices[trial.suggest_categorical(p.name, list(range(len(choices))))]}
    if isinstance(p, LogUniformParameterRange):
        if p.step_size is not None:  # a grid of exponents: pick one of its values
            return {p.name: trial.suggest_categorical(p.name, p.values())}
        low, high = float(p.base) ** p.min_value, float(p.base) ** p.max_value
        return {p.name: trial.suggest_float(p.name, low, high, log=True)}
    if p.kind is Kind.INT:
        values = p.values()
        step = int(p.step_size or 1)
        return {p.name: trial.suggest_int(p.name, values[0], values[-1], step=step)}
    if p.step_size is not None:
        values = p.values()
        return {p.name: trial.suggest_float(p.name, values[0], values[-1], step=p.step_size)}
    return {p.name: trial.suggest_float(p.name, float(p.min_value), float(p.max_value))}
