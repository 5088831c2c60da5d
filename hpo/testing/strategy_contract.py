"""The contract every search strategy keeps, as a test suite that any ``SearchStrategy``
subclass (built in or your own) runs with one class in a test file, the way Optuna's
samplers run ``optuna.testing``'s suites::

    from hpo.testing.strategy_contract import StrategyContract

    class TestLocalSearch(StrategyContract):
        def make_strategy(self, space, objectives, **limits):
            return LocalSearch(space, objectives, n_initial=3, **limits)

pytest collects the inherited ``test_*`` methods. They check that every suggestion is a
configuration of the space (each range's bounds, step, values and types, or one of a
``ParameterSet``'s combinations) within the iteration limits; that a small finite space
ends with DONE and no configuration comes twice (where promised); that failed and NaN
results, and reports, are taken in stride; that ``state()`` is JSON after every cycle; and
that a fresh instance restored from it, with jobs still running, answers exactly what a
strategy never stopped answers. Class attributes declare what the strategy promises
beyond the base contract (``finite_space_ends``, ``no_duplicates``, ``multi_fidelity``,
``continuous_ranges``) and how long the tests drive it (``trials``).

:class:`StrategyDriver` calls the strategy as ``hpo.controller`` does, without jobs:
``attach`` (to an SQLite store in pytest's ``tmp_path``: see ``store_url``), then in each
cycle every running job reports its next iteration (``on_report``; the job ends at its
budget, when told to STOP from ``min_iteration_per_job`` on, or when it fails:
``on_result``), free slots are filled by ``suggest()`` until WAIT or DONE, and
``state()`` is saved as JSON. Objective values are a deterministic function of the
configuration and the iteration, so a strategy given a seed (``make_strategy`` must pass
``seed`` on) must answer the same in two runs. Needs pytest (hpo's ``test`` extra).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

from hpo.optimization.objective import Objective
from hpo.space.ranges import (
    DiscreteParameterRange,
    LogUniformParameterRange,
    Parameter,
    ParameterSet,
    UniformIntegerParameterRange,
    UniformParameterRange,
    canonical,
)
from hpo.strategies.base import Decision, NoSuggestion, SearchStrategy, Suggestion

__all__ = [
    "LOSS",
    "Outcome",
    "StrategyContract",
    "StrategyDriver",
    "every_kind_of_range",
    "outside",
    "small_finite_space",
]

#: The seed every test passes; a restored strategy is made with another one, so the
#: state, not the constructor, must carry the random sequence.
SEED = 7
OPTIMIZATION_ID = "contract"
#: Iterations a job reports when neither its suggestion nor max_iteration_per_job ends it.
NATURAL_LENGTH = 4
LOSS = [Objective("loss", "total", "min")]
TWO_OBJECTIVES = [*LOSS, Objective("accuracy", "validation", "max")]

#: How a job ends: with its values, crashed after its first report (result None), or
#: having reported NaN throughout (result NaN, which the controller turns into None:
#: passed as is, so that a strategy is seen to survive either).
Outcome = Literal["ok", "failed", "nan"]


# ----- spaces -------------------------------------------------------------------------


def every_kind_of_range(continuous: bool = True) -> list[Parameter]:
    """One range of every kind, with mixed value types; ``continuous=False``: every range
    with a step (a grid of 120,000 configurations)."""
    step = None if continuous else 0.25
    return [
        UniformParameterRange("x", -1.0, 1.0, step_size=step, include_max_value=False),
        UniformParameterRange("Args/dropout", 0.0, 0.5, step_size=0.1),
        LogUniformParameterRange("lr", -5, -1, step_size=None if continuous else 1),
        LogUniformParameterRange("width", 1, 5, base=2, step_size=1),
        LogUniformParameterRange("decay", 0, 2, base=0.5, include_max_value=False,
                                 step_size=None if continuous else 1),  # 0.25..1
        UniformIntegerParameterRange("layers", 1, 9, step_size=2),
        DiscreteParameterRange("act", ["relu", "gelu", 3, True, None]),
        DiscreteParameterRange("const", [7]),
        ParameterSet([{"opt": "sgd", "momentum": 0.9}, {"opt": "adam", "momentum": 0.0}]),
    ]


def small_finite_space() -> list[Parameter]:
    """Twelve configurations."""
    return [
        UniformIntegerParameterRange("n", 1, 3),
        DiscreteParameterRange("act", ["relu", "gelu"]),
        ParameterSet([{"opt": "sgd", "momentum": 0.9}, {"opt": "adam", "momentum": 0.0}]),
    ]


def _text(value: Any) -> str:
    """The typed identity of a value: 1, 1.0 and True differ; a NaN matches nothing."""
    try:
        return canonical(value)
    except (TypeError, ValueError):
        return f"<not JSON: {value!r}>"


def outside(space: Sequence[Parameter], parameters: Mapping[str, Any]) -> str | None:
    """Why ``parameters`` is not a configuration of ``space``; None when it is one."""
    known = {name for param in space for name in param.names}
    extra = sorted(set(parameters) - known)
    if extra:
        return f"{extra} belong to no range"
    for param in space:
        why = _outside_range(param, parameters)
        if why:
            return f"{type(param).__name__} {param.name!r}: {why}"
    return None


def _outside_range(param: Parameter, parameters: Mapping[str, Any]) -> str | None:
    if isinstance(param, ParameterSet):
        given = {n: parameters[n] for n in param.names if n in parameters}
        if _text(given) not in {_text(c) for c in param.values()}:
            return f"{given!r} is none of its combinations"
        return None
    if param.name not in parameters:
        return "no value"
    value = parameters[param.name]
    if param.is_finite:
        if _text(value) not in {_text(v) for v in param.values()}:
            return f"{value!r} is not one of its values {param.values()} (with its type)"
        return None
    if type(value) is not float or not math.isfinite(value):
        return f"{value!r} is not a finite float"
    r: Any = param  # a continuous numeric range
    if isinstance(param, LogUniformParameterRange):
        # base ** x: pow() may round a hair beyond the ends
        low, high = sorted((float(r.base) ** r.min_value, float(r.base) ** r.max_value))
        if not low * (1 - 1e-12) <= value <= high * (1 + 1e-12):
            return f"{value!r} is outside {low!r}..{high!r}"
        return None
    if not r.min_value <= value <= r.max_value or (
            value == r.max_value and not r.include_max_value):
        return f"{value!r} is outside {r.min_value}..{r.max_value}"
    return None


def key_of(suggestion: Suggestion) -> tuple[str, int | None]:
    """A configuration at a budget."""
    return canonical(suggestion.parameters), suggestion.max_iteration


# ----- job outcomes -------------------------------------------------------------------


def all_ok(number: int) -> Outcome:
    return "ok"


def all_failed(number: int) -> Outcome:
    return "failed"


def all_nan(number: int) -> Outcome:
    return "nan"


def some_fail_some_nan(number: int) -> Outcome:
    """Every fifth job crashes, every seventh reports NaN."""
    if number % 5 == 3:
        return "failed"
    return "nan" if number % 7 == 5 else "ok"


def objective_values(parameters: Mapping[str, Any], iteration: int, count: int
                     ) -> list[float]:
    """A learning curve per configuration: a hash of it, falling with the iterations."""
    digest = hashlib.sha256(canonical(parameters).encode()).digest()
    return [int.from_bytes(digest[8 * k: 8 * k + 8], "big") / 2**64 + 1 / (2 + iteration)
            for k in range(count)]


# ----- the controller's calls, without jobs --------------------------------------------


@dataclass
class Job:
    """A suggestion being run, as the controller sees it."""

    suggestion: Suggestion
    outcome: Outcome
    iteration: int = -1  # the last one reported

    @property
    def trial_id(self) -> str:
        return self.suggestion.trial_id


@dataclass
class StrategyDriver:
    """Calls a strategy in the controller's order and checks each answer's protocol:
    ``suggest`` answers a Suggestion with a new trial id, WAIT only while a job runs
    (else the search would stall), or DONE; ``on_report`` a Decision; ``resume_from``
    names an earlier trial; ``state()`` is JSON after every cycle.

    ``trace`` is what the strategy answered (and the results it heard), in order; two
    runs of one seeded strategy must have the same trace."""

    strategy: SearchStrategy
    objectives: Sequence[Objective]
    min_iteration: int | None = None
    max_iteration: int | None = None
    concurrency: int = 2
    outcome: Callable[[int], Outcome] = all_ok
    running: list[Job] = field(default_factory=list)
    suggestions: list[Suggestion] = field(default_factory=list)
    trace: list[tuple[Any, ...]] = field(default_factory=list)
    reports: int = 0
    done: bool = False  # the strategy said DONE; it is never asked again
    cycles: int = 0
    saved: str = ""  # the last state(), as JSON text

    @property
    def finished(self) -> bool:
        return self.done and not self.running

    def cycle(self) -> None:
        """Reports and ends, then launches, then the save: one controller cycle."""
        self.cycles += 1
        for job in list(self.running):
            self._advance(job)
        self._launch()
        self._save()

    def run(self, *, cycles: int | None = None, trials: int | None = None,
            until: Callable[[], bool] | None = None, limit: int = 10_000) -> None:
        """Cycle until the total of ``cycles``, ``trials`` suggestions, ``until()``, or the
        end of the search, whichever comes first."""
        for _ in range(limit):
            if (self.finished or (cycles is not None and self.cycles >= cycles)
                    or (trials is not None and len(self.suggestions) >= trials)
                    or (until is not None and until())):
                return
            self.cycle()
        raise AssertionError(f"{limit} cycles, {len(self.suggestions)} suggestions, and "
                             "the search neither got there nor ended")

    def resumed(self, fresh: SearchStrategy) -> StrategyDriver:
        """This run continued by ``fresh`` (a new, attached instance) restored from the
        last saved state, as ``hpo-controller resume`` does: it reads the running jobs'
        reports again, so the restored strategy hears those its original heard."""
        fresh.restore(json.loads(self.saved))
        again = dataclasses.replace(self, strategy=fresh, running=copy.deepcopy(self.running),
                                    suggestions=list(self.suggestions), trace=[])
        for job in again.running:
            for iteration in range(job.iteration + 1):
                values = self._values(job, iteration)
                self._check_decision(fresh.on_report(job.trial_id, iteration, values))
        return again

    # ----- one cycle ------------------------------------------------------------------

    def _advance(self, job: Job) -> None:
        job.iteration += 1
        iteration = job.iteration
        if job.outcome == "failed" and iteration == 1:  # crashed after one report
            return self._finish(job, None)
        values = self._values(job, iteration)
        budget = job.suggestion.max_iteration or self.max_iteration
        if budget is not None and iteration >= budget:  # stopped there, not asked
            return self._finish(job, values)
        decision = self.strategy.on_report(job.trial_id, iteration, values)
        self._check_decision(decision)
        self.reports += 1
        self.trace.append(("report", job.trial_id, iteration, decision.value))
        if decision is Decision.STOP and iteration >= (self.min_iteration or 0):
            return self._finish(job, values)
        if budget is None and iteration + 1 >= NATURAL_LENGTH:  # the script ended
            return self._finish(job, values)
        return None

    def _values(self, job: Job, iteration: int) -> list[float]:
        if job.outcome == "nan":
            return [math.nan] * len(self.objectives)
        return objective_values(job.suggestion.parameters, iteration, len(self.objectives))

    def _finish(self, job: Job, values: list[float] | None) -> None:
        self.running.remove(job)
        self.strategy.on_result(job.trial_id, values)
        self.trace.append(("result", job.trial_id))

    def _launch(self) -> None:
        while not self.done and len(self.running) < self.concurrency:
            answer = self.strategy.suggest()
            if answer is NoSuggestion.DONE:
                self.done = True
                self.trace.append(("done",))
                return
            if answer is NoSuggestion.WAIT:
                assert self.running, ("suggest() answered WAIT with no job running: nothing "
                                      "would ever ask it again (WAIT means: ask again after "
                                      "the next result)")
                self.trace.append(("wait",))
                return
            assert isinstance(answer, Suggestion), f"suggest() answered {answer!r}"
            self._check_suggestion(answer)
            self.running.append(Job(answer, self.outcome(len(self.suggestions))))
            self.suggestions.append(answer)
            self.trace.append(("suggest", answer.trial_id, *key_of(answer),
                               answer.resume_from))

    def _save(self) -> None:
        try:
            self.saved = json.dumps(self.strategy.state())
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"state() is not JSON after cycle {self.cycles}: {exc}"
                                 ) from None

    # ----- protocol checks ------------------------------------------------------------

    def _check_suggestion(self, s: Suggestion) -> None:
        earlier = {t.trial_id for t in self.suggestions}
        assert isinstance(s.trial_id, str) and s.trial_id, f"trial id {s.trial_id!r}"
        assert s.trial_id not in earlier, f"trial id {s.trial_id!r} suggested twice"
        assert s.resume_from is None or s.resume_from in earlier, (
            f"{s.trial_id} resumes {s.resume_from!r}, which is no earlier trial")

    @staticmethod
    def _check_decision(decision: Any) -> None:
        assert isinstance(decision, Decision), f"on_report answered {decision!r}"


# ----- the suite ----------------------------------------------------------------------


class StrategyContract:
    """Subclass it as ``Test<YourStrategy>`` and implement :meth:`make_strategy`."""

    #: suggest() answers DONE once a small finite space is used up, instead of going on.
    finite_space_ends: ClassVar[bool] = True
    #: It never suggests one configuration twice at one budget (``max_iteration``).
    no_duplicates: ClassVar[bool] = True
    #: It runs configurations at several budgets and reruns the good ones at larger
    #: ones (successive halving: BOHB, ASHA); it may WAIT for a rung to complete.
    multi_fidelity: ClassVar[bool] = False
    #: It takes ranges without a step (grid search does not).
    continuous_ranges: ClassVar[bool] = True
    #: The limits passed to make_strategy, as the controller passes them.
    min_iteration_per_job: ClassVar[int | None] = 1
    max_iteration_per_job: ClassVar[int | None] = 9
    #: Trials a test runs (fewer for a slow, model-based strategy), and at once.
    trials: ClassVar[int] = 30
    concurrency: ClassVar[int] = 2

    def make_strategy(self, space: list[Parameter], objectives: list[Objective],
                      **limits: Any) -> SearchStrategy:
        """A new strategy; pass ``limits`` on (``min_iteration_per_job``,
        ``max_iteration_per_job``, ``seed``) as the controller would."""
        raise NotImplementedError(f"{type(self).__name__}: implement make_strategy")

    def space(self) -> list[Parameter]:
        """The space most tests search."""
        return every_kind_of_range(continuous=self.continuous_ranges)

    def store_url(self, folder: Path) -> str:
        """The store ``attach`` names: a run and its restored continuation get the same
        folder, a run never stopped another one."""
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'store.db'}"

    # ----- helpers ----------------------------------------------------------------------

    def _made(self, space: list[Parameter], objectives: list[Objective] = LOSS,
              seed: int = SEED) -> SearchStrategy:
        return self.make_strategy(space, list(objectives), seed=seed,
                                  min_iteration_per_job=self.min_iteration_per_job,
                                  max_iteration_per_job=self.max_iteration_per_job)

    def _strategy(self, folder: Path, space: list[Parameter],
                  objectives: list[Objective] = LOSS, seed: int = SEED) -> SearchStrategy:
        """Made and attached as the controller does; ``folder`` names its store."""
        strategy = self._made(space, objectives, seed)
        strategy.attach(self.store_url(folder), OPTIMIZATION_ID)
        return strategy

    def _driver(self, folder: Path, space: list[Parameter] | None = None,
                    outcome: Callable[[int], Outcome] = all_ok,
                    objectives: list[Objective] = LOSS) -> StrategyDriver:
        return StrategyDriver(
            self._strategy(folder, space or self.space(), objectives), objectives,
            min_iteration=self.min_iteration_per_job, max_iteration=self.max_iteration_per_job,
            concurrency=self.concurrency, outcome=outcome)

    def _assert_inside(self, space: list[Parameter], run: StrategyDriver) -> None:
        assert run.suggestions, "no suggestion at all"
        for s in run.suggestions:
            why = outside(space, s.parameters)
            assert why is None, f"{s.trial_id} {s.parameters} is outside the space: {why}"

    # ----- suggestions --------------------------------------------------------------------

    def test_every_suggestion_is_in_the_space_and_within_the_iteration_limits(
            self, tmp_path: Path) -> None:
        run = self._driver(tmp_path, outcome=some_fail_some_nan)
        run.run(trials=self.trials)
        self._assert_inside(self.space(), run)
        low, high = self.min_iteration_per_job or 1, self.max_iteration_per_job
        for s in run.suggestions:
            budget = s.max_iteration
            assert budget is None or (
                type(budget) is int and low <= budget and (high is None or budget <= high)
            ), f"{s.trial_id}: max_iteration {budget!r} is outside {low}..{high}"

    def test_a_small_finite_space_ends_with_done(self, tmp_path: Path) -> None:
        if not self.finite_space_ends:
            pytest.skip("it does not promise to end on a finite space")
        run = self._driver(tmp_path, small_finite_space())
        run.run(trials=100 * 12)
        assert run.done, f"{len(run.suggestions)} suggestions on 12 configurations, no DONE"
        self._assert_inside(small_finite_space(), run)

    def test_no_configuration_is_suggested_twice_at_one_budget(self, tmp_path: Path) -> None:
        if not self.no_duplicates:
            pytest.skip("it may suggest a configuration again")
        run = self._driver(tmp_path, small_finite_space(), outcome=some_fail_some_nan)
        run.run(trials=100 * 12)
        keys = [key_of(s) for s in run.suggestions]
        assert len(set(keys)) == len(keys), [k for k in keys if keys.count(k) > 1][:3]

    def test_multi_fidelity_reruns_good_configurations_at_larger_budgets(
            self, tmp_path: Path) -> None:
        if not self.multi_fidelity:
            pytest.skip("not a multi-fidelity strategy")
        run = self._driver(tmp_path)
        run.run(trials=self.trials)
        first_budget: dict[str, int] = {}
        promoted = []
        for s in run.suggestions:
            assert s.max_iteration is not None, f"{s.trial_id} has no budget"
            config = canonical(s.parameters)
            if config in first_budget and s.max_iteration > first_budget[config]:
                promoted.append(s.trial_id)
            first_budget.setdefault(config, s.max_iteration)
        assert len({s.max_iteration for s in run.suggestions}) > 1
        assert promoted, "no configuration ran again at a larger budget"

    # ----- reports and results --------------------------------------------------------

    def test_on_report_answers_a_decision(self, tmp_path: Path) -> None:
        run = self._driver(tmp_path)
        run.run(trials=3)
        run.run(until=lambda: run.reports >= 3)
        assert run.reports >= 3  # and each answer was a Decision

    @pytest.mark.parametrize("outcome", [all_failed, all_nan], ids=["failed", "nan"])
    def test_failed_and_nan_results_do_not_break_it(
            self, tmp_path: Path, outcome: Callable[[int], Outcome]) -> None:
        run = self._driver(tmp_path, outcome=outcome)
        run.run(trials=self.trials)
        # It went on suggesting, or ended cleanly (run() fails when it does neither)
        assert run.done or len(run.suggestions) >= self.trials
        self._assert_inside(self.space(), run)

    def test_several_objectives_when_it_supports_them(self, tmp_path: Path) -> None:
        if not type(self._made(self.space())).supports_multi_objective:
            pytest.skip("it optimizes one objective (the controller refuses several)")
        run = self._driver(tmp_path, outcome=some_fail_some_nan, objectives=TWO_OBJECTIVES)
        run.run(trials=min(self.trials, 10))
        self._assert_inside(self.space(), run)

    # ----- state and restore ------------------------------------------------------------

    def test_state_is_json_after_every_suggestion_and_result(self, tmp_path: Path) -> None:
        run = self._driver(tmp_path, outcome=some_fail_some_nan)
        states = []
        while len(run.suggestions) < min(self.trials, 10) and not run.finished:
            run.cycle()  # fails with the reason when state() is not JSON
            states.append(json.loads(run.saved))
        assert states and all(isinstance(s, dict) for s in states)

    @pytest.mark.parametrize("cut", ["first_cycle", "mid_run", "finite_space_half_used"])
    def test_a_restored_strategy_continues_exactly_as_if_never_stopped(
            self, tmp_path: Path, cut: str) -> None:
        space = small_finite_space() if cut == "finite_space_half_used" else self.space()
        # Given a run stopped with jobs running (mid-run, one part-way through its reports)
        interrupted = self._driver(tmp_path / "interrupted", space, some_fail_some_nan)
        if cut == "first_cycle":
            interrupted.cycle()
        else:
            half = 6 if cut == "finite_space_half_used" else self.trials // 2
            interrupted.run(until=lambda: len(interrupted.suggestions) >= half
                            and any(job.iteration >= 0 for job in interrupted.running))
        assert interrupted.running, "the cut should leave a trial without its result"
        # When a fresh instance (another seed: the state holds the randomness) restores
        # its state and goes on with the same jobs
        fresh = self._strategy(tmp_path / "interrupted", space, seed=SEED + 1)
        resumed = interrupted.resumed(fresh)
        resumed.run(trials=self.trials)
        # Then it answers exactly what a run that never stopped answers
        never_stopped = self._driver(tmp_path / "never_stopped", space, some_fail_some_nan)
        never_stopped.run(cycles=resumed.cycles)
        assert interrupted.trace + resumed.trace == never_stopped.trace
        assert resumed.saved == never_stopped.saved
