"""``OptimizerOptuna``: Optuna's ask/tell driven by the controller.

The study lives in the store's own database (Optuna's RDB storage), named
``hpo-<optimizer task id>``, so it survives a controller restart and
``optuna-dashboard <store url>`` shows it. Any Optuna sampler and pruner can be passed;
TPE (NSGA-II with several objectives) and the median pruner are the defaults.

``optuna_sampler`` / ``optuna_pruner`` take an instance, or, where the value must be
JSON (``hpo.yaml``, a saved optimization config), a class name (``"TPESampler"``,
``"optuna.pruners.MedianPruner"``) or a mapping with the class name under ``type`` and
the constructor's arguments beside it (``{"type": "MedianPruner", "n_startup_trials":
3}``); a sampler built from a name gets the strategy's ``seed`` when it takes one.

Each ask is one trial, ``optuna-<trial number>``. Intermediate values of the (single)
objective are ``trial.report``-ed at their iteration; pruning is asked only from
``min_iteration_per_job`` on, and never with several objectives (Optuna cannot). The
state saved by the controller holds the running trials, the pruned ones, and the sampler
itself (pickled), so a resumed optimization continues the sampler's random sequence
instead of repeating it.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import TrialState

from hpo import pickle_text
from hpo.errors import ConfigError
from hpo.space.ranges import (
    DiscreteParameterRange,
    Kind,
    LogUniformParameterRange,
    Parameter,
    ParameterSet,
)
from hpo.strategies.base import Decision, SearchStrategy, Suggestion, register

log = logging.getLogger("hpo.strategies.optuna")

_PLAIN = (type(None), bool, int, float, str)
_PREFIX = "optuna-"
#: The user attribute that marks a trial as asked by this optimization.
OPTIMIZATION_ATTR = "hpo_optimization"


def _route_optuna_logs() -> None:
    """Optuna's records go where the program's own log goes (the root logger:
    ``hpo-controller -v`` prints it, a script's logging.basicConfig too), not to the
    stderr handler Optuna installs: they are Optuna's view of trials the controller
    reports already. Its INFO lines (one per trial) are left out."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    logger = logging.getLogger("optuna")
    if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
        # With no handler configured, Python would print warnings on stderr anyway.
        logger.addHandler(logging.NullHandler())


@register
@dataclass
class OptimizerOptuna(SearchStrategy):
    optuna_sampler: Any = None
    optuna_pruner: Any = None
    #: An optuna.Study, a study name in the store (or in ``storage``), or a mapping
    #: ``{"study_name": ..., "storage": ...}``, whose trials this search continues.
    continue_previous_study: Any = None
    #: Optuna storage URL; default: the store's own database.
    storage: str | None = None
    study_name: str | None = None
    _study: Any = field(default=None, init=False, repr=False)
    _trials: dict[str, Any] = field(default_factory=dict, init=False, repr=False)
    _trial_ids: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _pruned: set[str] = field(default_factory=set, init=False, repr=False)
    _reported: dict[str, set[int]] = field(default_factory=dict, init=False, repr=False)
    _optimization_id: str = field(default="", init=False, repr=False)

    name = "optuna"
    supports_multi_objective = True

    def __post_init__(self) -> None:
        _route_optuna_logs()
        # Bad sampler/pruner specs fail when the optimizer is built, before any launch.
        self._sampler = _build(self.optuna_sampler, optuna.samplers.BaseSampler, "optuna_sampler",
                               self.seed)
        self._pruner = _build(self.optuna_pruner, optuna.pruners.BasePruner, "optuna_pruner",
                              None)
        previous = self.continue_previous_study
        if not (previous is None or isinstance(previous, str | optuna.Study) or (
                isinstance(previous, Mapping) and isinstance(previous.get("study_name"), str))):
            raise ConfigError("continue_previous_study: give an optuna.Study, a study name, "
                              "or {'study_name': ..., 'storage': ...}, not "
                              f"{type(previous).__name__}")

    # ----- the study ------------------------------------------------------------------

    def attach(self, store_url: str, optimization_id: str) -> None:
        self._optimization_id = optimization_id
        directions: list[Any] = ["minimize" if o.minimize else "maximize"
                                 for o in self.objectives]
        sampler = self._sampler or (
            optuna.samplers.NSGAIISampler(seed=self.seed) if len(directions) > 1
            else optuna.samplers.TPESampler(seed=self.seed))
        pruner = self._pruner or optuna.pruners.MedianPruner()
        previous = self.continue_previous_study
        storage_url = self.storage or store_url
        name = self.study_name or f"hpo-{optimization_id}"
        if isinstance(previous, optuna.Study):
            if not isinstance(previous._storage, optuna.storages.InMemoryStorage):
                # A study in a database (or a journal): go on adding trials to it.
                previous.sampler = self._sampler or previous.sampler
                previous.pruner = self._pruner or previous.pruner
                self._study = previous
                return
            # In memory: its finished trials seed a study in the store's database.
            self._study = _create(storage_url, name, directions, sampler, pruner)
            if not self._study.trials:
                self._study.add_trials([t for t in previous.trials if t.state.is_finished()])
            return
        if isinstance(previous, str):
            name = previous
        elif isinstance(previous, Mapping):
            name = previous["study_name"]
            storage_url = previous.get("storage") or storage_url
        self._study = _create(storage_url, name, directions, sampler, pruner)

    @property
    def study(self) -> optuna.Study:
        if self._study is None:
            raise ConfigError("OptimizerOptuna was not attached to an optimization")
        return self._study

    # ----- the strategy contract ----------------------------------------------------

    def suggest(self) -> Suggestion:
        trial = self.study.ask()
        if self._optimization_id:
            trial.set_user_attr(OPTIMIZATION_ATTR, self._optimization_id)
        values: dict[str, Any] = {}
        for parameter in self.space:
            values.update(_suggest(trial, parameter))
        trial_id = f"{_PREFIX}{trial.number}"
        self._trials[trial_id] = trial
        self._trial_ids[trial_id] = trial._trial_id
        return Suggestion(trial_id, values)

    def on_report(self, trial_id: str, iteration: int, values: Sequence[float]) -> Decision:
        if len(self.objectives) > 1 or not values:
            return Decision.CONTINUE  # Optuna cannot report or prune several objectives
        value = values[0]
        if value is None or not math.isfinite(value):
            return Decision.CONTINUE  # NaN / inf: nothing Optuna can compare
        trial = self._trial(trial_id)
        if trial is None:
            return Decision.CONTINUE
        reported = self._reported.setdefault(trial_id, set())
        if iteration not in reported:  # a resumed controller reads a job's reports again
            trial.report(float(value), step=int(iteration))
            reported.add(iteration)
        if iteration < (self.min_iteration_per_job or 0):
            return Decision.CONTINUE
        if trial_id in self._pruned or trial.should_prune():
            self._pruned.add(trial_id)
            return Decision.STOP
        return Decision.CONTINUE

    def on_result(self, trial_id: str, values: Sequence[float] | None) -> None:
        storage_id = self._storage_id(trial_id)
        self._trials.pop(trial_id, None)
        self._trial_ids.pop(trial_id, None)
        self._reported.pop(trial_id, None)
        pruned = trial_id in self._pruned
        self._pruned.discard(trial_id)
        if storage_id is None:
            log.warning("optuna: result of unknown trial %s ignored", trial_id)
            return
        if self.study._storage.get_trial(storage_id).state.is_finished():
            return  # told before a crash that came before the controller saved
        number = self.study._storage.get_trial_number_from_id(storage_id)
        if pruned:
            self.study.tell(number, state=TrialState.PRUNED, skip_if_finished=True)
        elif values is None or len(values) != len(self.objectives) or not all(
                v is not None and math.isfinite(v) for v in values):
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        else:
            told = [float(v) for v in values]
            self.study.tell(number, told if len(told) > 1 else told[0], skip_if_finished=True)

    def state(self) -> dict[str, Any]:
        return {"study_name": self.study.study_name,
                "running": {t: self._trial_ids[t] for t in sorted(self._trial_ids)},
                "pruned": sorted(self._pruned),
                "sampler": _pickle(self.study.sampler)}

    def restore(self, state: dict[str, Any]) -> None:
        name = state.get("study_name")
        if name and name != self.study.study_name:
            self._study = optuna.load_study(study_name=name, storage=self.study._storage,
                                            sampler=self.study.sampler,
                                            pruner=self.study.pruner)
        sampler = _unpickle(state.get("sampler"))
        if isinstance(sampler, optuna.samplers.BaseSampler):
            self.study.sampler = sampler  # its random sequence goes on where it was
        elif self.study.trials:
            self.study.sampler.reseed_rng()  # not the same seeded sequence a second time
        # Trial objects are rebuilt when first needed, from the storage ids.
        self._trials, self._reported = {}, {}
        self._trial_ids = {str(t): int(i) for t, i in state.get("running", {}).items()}
        self._pruned = set(state.get("pruned", [])) & set(self._trial_ids)
        self._fail_orphans()

    # ----- helpers ------------------------------------------------------------------

    def _storage_id(self, trial_id: str) -> int | None:
        if trial_id in self._trial_ids:
            return self._trial_ids[trial_id]
        if trial_id.startswith(_PREFIX) and trial_id[len(_PREFIX):].isdigit():
            number = int(trial_id[len(_PREFIX):])
            for frozen in self.study.get_trials(deepcopy=False):
                if frozen.number == number:
                    return frozen._trial_id
        return None

    def _trial(self, trial_id: str) -> optuna.Trial | None:
        """The live Trial, rebuilt from the storage after a restore (if still running)."""
        trial = self._trials.get(trial_id)
        if trial is not None:
            return trial
        storage_id = self._storage_id(trial_id)
        if storage_id is None:
            return None
        frozen = self.study._storage.get_trial(storage_id)
        if frozen.state is not TrialState.RUNNING:
            return None
        trial = optuna.trial.Trial(self.study, storage_id)
        self._reported[trial_id] = set(frozen.intermediate_values)
        self._trials[trial_id] = trial
        self._trial_ids[trial_id] = storage_id
        return trial

    def _fail_orphans(self) -> None:
        """Trials this optimization asked for but never saved (a crash between the ask
        and the save) would stay RUNNING forever: fail them. In the optimization's own
        study that is every running trial it does not know; in a study it shares, those
        it marked as its own."""
        if not self._optimization_id:
            return
        own = self.study.study_name == f"hpo-{self._optimization_id}"
        known = set(self._trial_ids.values())
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in known and (
                    own or frozen.user_attrs.get(OPTIMIZATION_ATTR) == self._optimization_id):
                self.study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)


def _create(url: str, name: str, directions: list[Any], sampler: Any, pruner: Any
            ) -> optuna.Study:
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        # The store's agents write to the same file: wait for their locks like the
        # store does, instead of failing after sqlite3's default 5 s.
        engine_kwargs = {"connect_args": {"timeout": 30}}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    return optuna.create_study(storage=storage, study_name=name, directions=directions,
                               sampler=sampler, pruner=pruner, load_if_exists=True)


def _build(spec: Any, base: type, what: str, seed: int | None) -> Any:
    """A sampler / pruner from an instance, a class name, or {"type": name, **kwargs}."""
    if spec is None or isinstance(spec, base):
        return spec
    if isinstance(spec, type) and issubclass(spec, base):
        spec = spec.__module__ + "." + spec.__qualname__
    kwargs: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        kwargs = {k: v for k, v in spec.items() if k != "type"}
        spec = spec.get("type")
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"{what}: give an Optuna {base.__name__} instance, a class name "
                          "such as 'TPESampler', or {'type': 'TPESampler', **arguments}")
    module_name, _, attr = spec.replace(":", ".").rpartition(".")
    module = module_name or ("optuna.samplers" if base is optuna.samplers.BaseSampler
                             else "optuna.pruners")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise ConfigError(f"{what}: no class {spec!r} (try e.g. "
                          f"{'TPESampler' if 'sampler' in what else 'MedianPruner'})") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{what}: {spec!r} is not an Optuna {base.__name__}")
    if seed is not None and "seed" not in kwargs:
        import inspect

        if "seed" in inspect.signature(cls).parameters:
            kwargs["seed"] = seed
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {cls.__name__}({kwargs}): {exc}") from None


def _pickle(obj: Any) -> str | None:
    try:
        return pickle_text.to_text(obj)
    except Exception:  # a sampler holding a lambda, a lock...: reseeded on restore
        return None


def _unpickle(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return pickle_text.from_text(text)  # our own state, from our own store
    except Exception:
        log.warning("optuna: the saved sampler could not be read back; reseeding it")
        return None


def _suggest(trial: optuna.Trial, p: Parameter) -> dict[str, Any]:
    if isinstance(p, ParameterSet):
        combos = p.to_list()
        index = trial.suggest_categorical(p.name, list(range(len(combos))))
        return dict(combos[index])
    if isinstance(p, DiscreteParameterRange) or p.kind is Kind.CATEGORICAL:
        choices = p.values()
        # Optuna finds a choice by ==, so 1, 1.0 and True in one list would be mixed up:
        # then it picks an index instead of the value.
        if all(isinstance(c, _PLAIN) for c in choices) and len(set(choices)) == len(choices):
            return {p.name: trial.suggest_categorical(p.name, choices)}
        return {p.name: choices[trial.suggest_categorical(p.name, list(range(len(choices))))]}
    if isinstance(p, LogUniformParameterRange):
        if p.size is not None:  # a grid of exponents (or one value): pick one of its values
            return {p.name: trial.suggest_categorical(p.name, p.values())}
        low, high = float(p.base) ** p.min_value, float(p.base) ** p.max_value
        low, high = min(low, high), max(low, high)  # a base below 1 reverses them
        return {p.name: trial.suggest_float(p.name, low, high, log=True)}
    r: Any = p  # a numeric range: min_value, max_value, step_size
    if r.kind is Kind.INT:
        values = r.values()
        step = int(r.step_size or 1)
        return {r.name: int(trial.suggest_int(r.name, values[0], values[-1], step=step))}
    if r.size is not None:  # a float grid (or one value)
        values = r.values()
        if len(values) == 1:
            return {r.name: float(trial.suggest_float(r.name, values[0], values[0]))}
        fstep = float(r.step_size)
        x = trial.suggest_float(r.name, values[0], values[-1], step=fstep)
        # Optuna computes low + k * step in binary (0.30000000000000004); the range's
        # own grid value is the exact decimal one (0.3).
        index = min(max(round((x - values[0]) / fstep), 0), len(values) - 1)
        return {r.name: values[index]}
    return {r.name: float(trial.suggest_float(r.name, float(r.min_value),
                                              float(r.max_value)))}
