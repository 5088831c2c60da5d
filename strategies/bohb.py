"""``OptimizerBOHB``: BOHB (Falkner et al., 2018) driven by the controller directly.

hpbandster's KDE configuration generator proposes configurations; the Hyperband
brackets of successive halving are kept here, with no Pyro nameserver, dispatcher or
worker (under numpy 2 hpbandster's dispatcher silently drops every job).

Budgets are iterations: hpbandster's geometric budgets ``max * eta**-k`` (rounded)
from ``max_iteration_per_job`` (required) down to no less than ``min_iteration_per_job``
(default 1). With eta 3, min 1 and max 9 the budgets are 1, 3 and 9, and the brackets
run, in turn, 9 configurations at 1 iteration (the best 3 go on to 3 iterations, the
best of those to 9), then 3 at 3 (the best one to 9), then 3 at 9, then again
(hpbandster's bracket sizes).

Each run is a new trial, and so a new job, with ``Suggestion.max_iteration`` set to its
budget: a promoted configuration starts again from scratch (no checkpoints). While a
rung waits for results ``suggest()`` answers ``NoSuggestion.WAIT``; a job that fails or
never reports counts as the worst loss (and is never promoted), so a rung always
completes. ``total_max_jobs`` counts jobs (runs), not brackets; ``n_iterations`` (the
number of brackets, hpbandster's name) optionally ends the search too.

The ranges map to a ConfigSpace space: a continuous uniform range to a float, a
continuous log-uniform range to a float over its EXPONENTS (the value is
``base ** x``, so values are log-uniform between ``base**min_value`` and
``base**max_value``), a grid (integer range, ``step_size``) to an integer index into the
grid, a discrete range or a ``ParameterSet`` to a categorical over its indices. A range
with one value is a constant and stays out of the model.

``state()`` holds the bracket bookkeeping and every result so far: ``restore()`` replays
the results into a new generator, which rebuilds the same KDE models. Every draw is
seeded from ``seed`` and a draw counter, so a restored search goes on exactly as the
original would have.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpo.errors import ConfigError
from hpo.space.product import check_space, space_fingerprint
from hpo.space.ranges import (
    Kind,
    LogUniformParameterRange,
    Parameter,
    ParameterSet,
    canonical,
)
from hpo.strategies.base import (
    NoSuggestion,
    SearchStrategy,
    Suggestion,
    check_seed,
    register,
)

log = logging.getLogger("hpo.strategies.bohb")


class _KdeDiagnostics(logging.LoggerAdapter):
    """hpbandster's generator logs its KDE's state as warnings (``l(x) = inf``, ``g(x) =
    inf``, the KDE's data) whenever a draw scores infinite: routine on a small or
    discrete space, and no news to the user. Its warnings become debug lines of this
    module's log (``-v`` shows them); its errors stay errors."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(level if level >= logging.ERROR else logging.DEBUG, msg, *args, **kwargs)

# A budget count within this of an integer counts as that integer (log(27)/log(3)).
_TOLERANCE = 1e-9


@dataclass
class _Job:
    """What hpbandster's config generator reads from its ``Job``."""

    kwargs: dict[str, Any]
    result: dict[str, float] | None
    exception: str | None = None
    timestamps: dict[str, float] = field(default_factory=dict)
    id: tuple[int, int, int] = (0, 0, 0)


@dataclass(frozen=True)
class _Dim:
    """How one range maps to (at most) one ConfigSpace hyperparameter."""

    param: Parameter
    how: str  # "const", "float", "log", "index", "choice"
    hp_name: str


@register
@dataclass
class OptimizerBOHB(SearchStrategy):
    """BOHB with hpbandster's defaults: ``eta`` 3, ``min_points_in_model`` None (the
    number of free ranges + 1), ``top_n_percent`` 15, ``num_samples`` 64,
    ``random_fraction`` 1/3, ``bandwidth_factor`` 3, ``min_bandwidth`` 1e-3."""

    eta: float = 3
    min_points_in_model: int | None = None
    top_n_percent: int = 15
    num_samples: int = 64
    random_fraction: float = 1 / 3
    bandwidth_factor: float = 3
    min_bandwidth: float = 1e-3
    #: Number of successive-halving brackets to run (None: until another limit ends it).
    n_iterations: int | None = None

    name = "bohb"
    supports_multi_objective = False

    _dims: list[_Dim] = field(init=False, repr=False)
    _budgets: list[int] = field(init=False, repr=False)
    _cs: Any = field(init=False, repr=False)
    _generator: Any = field(init=False, repr=False)
    _base_seed: int = field(init=False, repr=False)
    _draws: int = field(init=False, repr=False)  # configurations sampled so far
    _launched: int = field(init=False, repr=False)  # jobs suggested so far
    _bracket: int = field(init=False, repr=False)  # Hyperband iteration index
    _stage: int = field(init=False, repr=False)  # rung within the bracket
    _configs: list[dict[str, Any]] = field(init=False, repr=False)  # this bracket's
    _members: list[int] = field(init=False, repr=False)  # config ids in this rung
    _next: int = field(init=False, repr=False)  # members launched so far (rungs > 0)
    _losses: dict[int, float] = field(init=False, repr=False)  # this rung's results
    _running: dict[str, list[int]] = field(init=False, repr=False)  # trial -> ids
    _results: list[list[Any]] = field(init=False, repr=False)  # [budget, config, loss]

    def __post_init__(self) -> None:
        self.space = check_space(self.space)
        if len(self.objectives) != 1:
            raise ConfigError(f"OptimizerBOHB optimizes one objective, not "
                              f"{len(self.objectives)}: give one, or use OptimizerOptuna")
        self._budgets = self._hyperband_budgets()
        self._check_kwargs()
        self._dims = self._map_space()
        check_seed("OptimizerBOHB", self.seed)
        self._base_seed = (self.seed if self.seed is not None
                           else random.SystemRandom().randrange(2**31))
        self._generator = self._new_generator()
        self._draws = 0
        self._launched = 0
        self._exhausted = False  # every configuration was run at a rung's budget
        self._bracket = 0
        self._start_bracket()
        self._running = {}
        self._results = []

    # ----- settings ---------------------------------------------------------------

    def _hyperband_budgets(self) -> list[int]:
        eta, top, low = self.eta, self.max_iteration_per_job, self.min_iteration_per_job
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not eta > 1:
            raise ConfigError(f"OptimizerBOHB: eta must be a number > 1, got {eta!r}")
        if top is None:
            raise ConfigError("OptimizerBOHB needs max_iteration_per_job: the largest "
                              "budget (in iterations) of a job; set max_iteration_per_job "
                              "(and min_iteration_per_job for the smallest budget)")
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise ConfigError(f"OptimizerBOHB: max_iteration_per_job must be an integer >= 1, "
                              f"got {top!r}")
        if low is None:
            bottom = 1.0
        elif isinstance(low, bool) or not isinstance(low, int) or low < 1:
            raise ConfigError(f"OptimizerBOHB: min_iteration_per_job must be an integer >= 1, "
                              f"got {low!r}")
        elif low > top:
            raise ConfigError(f"OptimizerBOHB: min_iteration_per_job {low} is greater than "
                              f"max_iteration_per_job {top}")
        else:
            bottom = float(low)
        rungs = math.floor(math.log(top / bottom) / math.log(eta) + _TOLERANCE) + 1
        budgets = [max(1, round(top * eta ** -(rungs - 1 - i))) for i in range(rungs)]
        budgets[-1] = top
        return budgets

    def _check_kwargs(self) -> None:
        def positive_int(name: str, value: Any, minimum: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"OptimizerBOHB: {name} must be an integer >= {minimum}, "
                                  f"got {value!r}")

        if self.min_points_in_model is not None:
            positive_int("min_points_in_model", self.min_points_in_model, 1)
        positive_int("num_samples", self.num_samples, 1)
        if self.n_iterations is not None:
            positive_int("n_iterations", self.n_iterations, 1)
        for name, low, high in (("top_n_percent", 1, 99), ("random_fraction", 0, 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not (
                    low <= value <= high):
                raise ConfigError(f"OptimizerBOHB: {name} must be between {low} and {high}, "
                                  f"got {value!r}")
        for name in ("bandwidth_factor", "min_bandwidth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"OptimizerBOHB: {name} must be a number > 0, got {value!r}")

    @property
    def budgets(self) -> list[int]:
        """The iteration budgets of the rungs, smallest first."""
        return list(self._budgets)

    # ----- the space ----------------------------------------------------------------

    def _map_space(self) -> list[_Dim]:
        dims = []
        for i, param in enumerate(self.space):
            name = f"x{i}"
            if param.size == 1:
                dims.append(_Dim(param, "const", name))
            elif param.size is None:
                how = "log" if isinstance(param, LogUniformParameterRange) else "float"
                dims.append(_Dim(param, how, name))
            elif isinstance(param, ParameterSet) or param.kind in (Kind.CATEGORICAL,
                                                                   Kind.SET):
                dims.append(_Dim(param, "choice", name))
            else:  # an ordered grid: integers, floats or exponents with a step
                dims.append(_Dim(param, "index", name))
        return dims

    def _configspace(self) -> Any:
        import ConfigSpace as CS

        cs = CS.ConfigurationSpace(seed=self._base_seed)
        for dim in self._dims:
            p: Any = dim.param
            hp: Any
            if dim.how in ("float", "log"):
                hp = CS.UniformFloatHyperparameter(dim.hp_name, float(p.min_value),
                                                   float(p.max_value))
            elif dim.how == "index":
                assert p.size is not None
                hp = CS.UniformIntegerHyperparameter(dim.hp_name, 0, p.size - 1)
            elif dim.how == "choice":
                assert p.size is not None
                hp = CS.CategoricalHyperparameter(dim.hp_name, [str(k) for k in range(p.size)])
            else:
                continue
            cs.add(hp)
        return cs

    def _new_generator(self) -> Any:
        self._cs = self._configspace()
        if not len(self._cs):
            return None  # nothing to model: every configuration is the same
        with _quiet():
            from hpbandster.optimizers.config_generators.bohb import BOHB

            return BOHB(self._cs, min_points_in_model=self.min_points_in_model,
                        top_n_percent=self.top_n_percent, num_samples=self.num_samples,
                        random_fraction=self.random_fraction,
                        bandwidth_factor=self.bandwidth_factor,
                        min_bandwidth=self.min_bandwidth,
                        logger=_KdeDiagnostics(log.getChild("kde"), {}))

    def _parameters(self, config: dict[str, Any]) -> dict[str, Any]:
        """The ranges' values for a ConfigSpace configuration, with the ranges' types."""
        out: dict[str, Any] = {}
        for dim in self._dims:
            p: Any = dim.param
            if dim.how == "const":
                out.update(p.value_at(0))
            elif dim.how == "float":
                low, high = float(p.min_value), float(p.max_value)
                x = min(max(float(config[dim.hp_name]), low), high)
                if x >= high and not p.include_max_value:
                    x = math.nextafter(high, low)
                out[p.name] = x
            elif dim.how == "log":
                base = float(p.base)
                low, high = float(p.min_value), float(p.max_value)
                x = min(max(float(config[dim.hp_name]), low), high)
                if x >= high and not p.include_max_value:
                    x = math.nextafter(high, low)
                ends = sorted((base**low, base**high))
                out[p.name] = min(max(base**x, ends[0]), ends[1])
            else:
                assert p.size is not None
                index = min(max(int(config[dim.hp_name]), 0), p.size - 1)
                out.update(p.value_at(index))
        return out

    def _draw(self) -> dict[str, Any]:
        """A configuration (ConfigSpace values, plain Python types) for the current rung,
        from the model when there is one: seeded by the draw counter."""
        seed = _derive(self._base_seed, self._draws)
        self._draws += 1
        if self._generator is None:
            return {}
        self._cs.seed(seed)
        with _seeded(seed):
            config, _info = self._generator.get_config(self._budgets[self._rung_budget()])
        return {k: _plain(v) for k, v in dict(config).items()}

    def _draw_new(self) -> dict[str, Any] | None:
        """A configuration not yet run (nor running) at the current rung's budget: the
        model's draw, drawn again while it repeats one (a KDE over a small or discrete
        space proposes the same point often), then uniform draws; None when even those
        find nothing new (the space is used up at this budget)."""
        budget = self._budgets[self._rung_budget()]
        taken = self._taken(budget)
        for attempt in range(MODEL_DRAW_TRIES + UNIFORM_DRAW_TRIES):
            config = self._draw() if attempt < MODEL_DRAW_TRIES else self._uniform()
            if canonical(self._parameters(config)) not in taken:
                return config
        return None

    def _taken(self, budget: int) -> set[str]:
        """The configurations (as launched) run or running at ``budget``."""
        runs = [(b, c) for b, c, _loss in self._results]
        runs += [(self._budgets[self._rung_budget()], c) for c in self._configs]
        return {canonical(self._parameters(c)) for b, c in runs if b == budget}

    def _uniform(self) -> dict[str, Any]:
        """A configuration drawn uniformly from the space (seeded by the draw counter)."""
        seed = _derive(self._base_seed, self._draws)
        self._draws += 1
        if self._generator is None:
            return {}
        self._cs.seed(seed)
        with _quiet():
            return {k: _plain(v) for k, v in dict(self._cs.sample_configuration()).items()}

    def _feed(self, budget: int, config: dict[str, Any], loss: float | None) -> None:
        if self._generator is None:
            return
        job = _Job(kwargs={"budget": budget, "config": config},
                   result=None if loss is None else {"loss": loss})
        with _seeded(_derive(self._base_seed, -1 - len(self._results))):
            self._generator.new_result(job)

    # ----- brackets -----------------------------------------------------------------

    def _shape(self) -> tuple[list[int], list[int]]:
        """(configurations per rung, index of each rung's budget) of the current
        bracket, as hpbandster's BOHB.get_next_iteration."""
        rungs = len(self._budgets)
        s = rungs - 1 - (self._bracket % rungs)
        n0 = int(math.floor(rungs / (s + 1)) * self.eta**s)
        counts = [max(int(n0 * self.eta ** (-i)), 1) for i in range(s + 1)]
        return counts, list(range(rungs - s - 1, rungs))

    def _rung_budget(self) -> int:
        """The index into the budgets of the current rung."""
        return self._shape()[1][self._stage]

    def _start_bracket(self) -> None:
        self._stage = 0
        self._configs = []
        self._members = []
        self._next = 0
        self._losses = {}

    def _advance(self) -> None:
        """The current rung is complete: promote its best 1/eta, or end the bracket."""
        counts, _ = self._shape()
        if self._stage + 1 < len(counts):
            scored = [c for c in self._members if math.isfinite(self._losses[c])]
            scored.sort(key=lambda c: self._losses[c])  # stable: ties keep their order
            promoted = scored[:counts[self._stage + 1]]
            if promoted:
                log.debug("bracket %d: rung %d complete, promoting %s", self._bracket,
                          self._stage, promoted)
                self._stage += 1
                self._members = promoted
                self._next = 0
                self._losses = {}
                return
        self._bracket += 1
        self._start_bracket()

    def _done(self) -> bool:
        if self._exhausted:
            return True
        if self.total_max_jobs is not None and self._launched >= self.total_max_jobs:
            return True
        return self.n_iterations is not None and self._bracket >= self.n_iterations

    def suggest(self) -> Suggestion | NoSuggestion:
        while True:
            if self._done():
                return NoSuggestion.DONE
            counts, _ = self._shape()
            if self._stage == 0 and len(self._configs) < counts[0]:
                config = self._draw_new()
                if config is None:
                    log.info("BOHB: every configuration has run at budget %d: done",
                             self._budgets[self._rung_budget()])
                    self._exhausted = True
                    continue
                self._configs.append(config)
                cid = len(self._configs) - 1
                self._members.append(cid)
                return self._launch(cid)
            if self._stage > 0 and self._next < len(self._members):
                cid = self._members[self._next]
                self._next += 1
                return self._launch(cid)
            if len(self._losses) < len(self._members):
                return NoSuggestion.WAIT
            self._advance()

    def _launch(self, cid: int) -> Suggestion:
        trial_id = f"bohb-{self._bracket}-{self._stage}-{cid}"
        self._running[trial_id] = [self._bracket, self._stage, cid]
        self._launched += 1
        return Suggestion(trial_id=trial_id, parameters=self._parameters(self._configs[cid]),
                          max_iteration=self._budgets[self._rung_budget()])

    def on_result(self, trial_id: str, values: Sequence[float] | None) -> None:
        where = self._running.pop(trial_id, None)
        if where is None:
            return
        bracket, stage, cid = where
        if bracket != self._bracket or stage != self._stage or cid not in self._members:
            return  # cannot happen: a rung waits for all its results
        value = None if values is None or not values else float(values[0])
        loss: float | None = None
        if value is not None and math.isfinite(value):
            loss = value if self.objectives[0].minimize else -value
        self._losses[cid] = math.inf if loss is None else loss
        budget = self._budgets[self._rung_budget()]
        config = self._configs[cid]
        self._results.append([budget, config, loss])
        self._feed(budget, config, loss)

    # ----- persistence --------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {"budgets": self._budgets, "eta": self.eta,
                "min_points_in_model": self.min_points_in_model,
                "top_n_percent": self.top_n_percent, "num_samples": self.num_samples,
                "random_fraction": self.random_fraction,
                "bandwidth_factor": self.bandwidth_factor,
                "min_bandwidth": self.min_bandwidth}

    def state(self) -> dict[str, Any]:
        return {
            "fingerprint": space_fingerprint(self.space),
            "settings": self._settings(),
            "seed": self._base_seed,
            "draws": self._draws,
            "launched": self._launched,
            "exhausted": self._exhausted,
            "bracket": self._bracket,
            "stage": self._stage,
            "configs": [dict(c) for c in self._configs],
            "members": list(self._members),
            "next": self._next,
            "losses": [[c, None if math.isinf(v) else v] for c, v in self._losses.items()],
            "running": {t: list(w) for t, w in self._running.items()},
            "results": [[b, dict(c), loss] for b, c, loss in self._results],
        }

    def restore(self, state: dict[str, Any]) -> None:
        malformed = ConfigError("the saved BOHB state is malformed: start a new optimization")
        try:
            fingerprint = state["fingerprint"]
            settings = state["settings"]
            base_seed = int(state["seed"])
            draws = int(state["draws"])
            launched = int(state["launched"])
            exhausted = bool(state.get("exhausted", False))
            bracket = int(state["bracket"])
            stage = int(state["stage"])
            configs = [dict(c) for c in state["configs"]]
            members = [int(c) for c in state["members"]]
            nxt = int(state["next"])
            losses = {int(c): math.inf if v is None else float(v) for c, v in state["losses"]}
            running = {str(t): [int(x) for x in w] for t, w in state["running"].items()}
            results: list[tuple[int, dict[str, Any], float | None]] = [
                (int(b), dict(c), None if loss is None else float(loss))
                for b, c, loss in state["results"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise malformed from None
        if fingerprint != space_fingerprint(self.space):
            raise ConfigError("the saved BOHB search was over a different parameter space: "
                              "resume with the same hyper_parameters or start a new one")
        if canonical(settings) != canonical(self._settings()):
            raise ConfigError("the saved BOHB search had other settings (budgets, eta, ...): "
                              "resume with the same ones or start a new optimization")
        self._base_seed = base_seed
        self._generator = self._new_generator()
        self._results = []
        for budget, config, loss in results:
            self._feed(budget, config, loss)
            self._results.append([budget, config, loss])
        self._draws, self._launched, self._exhausted = draws, launched, exhausted
        self._bracket, self._stage = bracket, stage
        self._configs, self._members, self._next = configs, members, nxt
        self._losses, self._running = losses, running


# Draws for a configuration not yet run at a rung's budget: from the model first, then
# uniform ones (microseconds each). A continuous space never needs a second; a discrete
# one counts as used up at that budget only when 200 uniform draws find nothing new: with
# one free configuration among 50, they miss it once in 57 times; among 10, never.
MODEL_DRAW_TRIES = 10
UNIFORM_DRAW_TRIES = 200


def _derive(base: int, counter: int) -> int:
    """A 32-bit seed for the ``counter``-th draw of a search seeded with ``base``."""
    return (base * 1_000_003 + counter * 7_919 + 12_345) % (2**32 - 1)


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    if not isinstance(value, int | float | str) and callable(item):
        value = item()
    return str(value) if isinstance(value, str) else value


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """hpbandster calls ConfigSpace's deprecated API on every draw."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """hpbandster and scipy draw from numpy's global generator: seed it for one call and
    give everyone else theirs back."""
    saved = np.random.get_state()
    np.random.seed(seed)
    try:
        with _quiet():
            yield
    finally:
        np.random.set_state(saved)
