"""Every built-in strategy, and the user-written one in examples/custom_strategy, against
the strategy contract suite (hpo.testing.strategy_contract)."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from hpo.optimization.objective import Objective
from hpo.space.ranges import Parameter
from hpo.strategies import GridSearch, RandomSearch, SearchStrategy, resolve
from hpo.strategies.asha import ASHA
from hpo.strategies.bohb import OptimizerBOHB
from hpo.strategies.optuna_search import OptimizerOptuna
from hpo.testing.strategy_contract import StrategyContract, some_fail_some_nan

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_strategy"


class TestRandomSearch(StrategyContract):
    def make_strategy(self, space: list[Parameter], objectives: list[Objective],
                      **limits: Any) -> SearchStrategy:
        return RandomSearch(space, objectives, **limits)


class TestGridSearch(StrategyContract):
    continuous_ranges = False

    def make_strategy(self, space: list[Parameter], objectives: list[Objective],
                      **limits: Any) -> SearchStrategy:
        return GridSearch(space, objectives, **limits)


# SQLAlchemy warns that it will pick another pool for in-memory URLs: either keeps the
# database open while an engine holds a connection.
@pytest.mark.filterwarnings("ignore:Selection of the SingletonThreadPool:DeprecationWarning")
class TestOptuna(StrategyContract):
    finite_space_ends = False  # Optuna samplers go on, repeating configurations
    no_duplicates = False
    max_iteration_per_job = 3  # each report is a write to the study's database
    trials = 6

    def store_url(self, folder: Path) -> str:
        # SQLite in memory, shared by the connections of this process (a restored
        # strategy's too) while the first one stays open: the same SQL as a file, without
        # an fsync for every write of the study.
        name = hashlib.sha256(str(folder).encode()).hexdigest()[:16]
        return f"sqlite:///file:{name}?mode=memory&cache=shared&uri=true"

    def make_strategy(self, space: list[Parameter], objectives: list[Objective],
                      **limits: Any) -> SearchStrategy:
        # TPE's model from the fourth trial, and a pruner that stops some jobs, so that
        # both are in the trace a restored strategy must reproduce.
        sampler = (optuna.samplers.NSGAIISampler(seed=limits["seed"]) if len(objectives) > 1
                   else optuna.samplers.TPESampler(n_startup_trials=3, seed=limits["seed"]))
        return OptimizerOptuna(space, objectives, optuna_sampler=sampler,
                               optuna_pruner=optuna.pruners.MedianPruner(
                                   n_startup_trials=2, n_warmup_steps=0), **limits)


class TestBOHB(StrategyContract):
    finite_space_ends = False  # brackets go on until n_iterations or total_max_jobs
    no_duplicates = False  # a new bracket may draw a configuration tried before
    multi_fidelity = True
    # Into the fourth bracket: the KDE model (18 results at one budget for the eight
    # free ranges) exists from about the 31st trial, before the restore test's cut at 35.
    trials = 70

    def make_strategy(self, space: list[Parameter], objectives: list[Objective],
                      **limits: Any) -> SearchStrategy:
        return OptimizerBOHB(space, objectives, num_samples=4, **limits)  # cheaper draws

    def test_the_mid_run_cut_restores_kde_models(self, tmp_path: Path) -> None:
        # The restore test's mid-run cut (trials // 2, a job part-way) comes after the
        # KDE model exists, so that restoring it is what that test checks.
        run = self._driver(tmp_path, outcome=some_fail_some_nan)
        run.run(until=lambda: len(run.suggestions) >= self.trials // 2
                and any(job.iteration >= 0 for job in run.running))
        strategy = run.strategy
        assert isinstance(strategy, OptimizerBOHB)
        assert strategy._generator.kde_models


class TestASHA(StrategyContract):
    multi_fidelity = True

    def make_strategy(self, space: list[Parameter], objectives: list[Objective],
                      **limits: Any) -> SearchStrategy:
        return ASHA(space, objectives, **limits)

    def test_a_restored_asha_goes_on_promoting(self, tmp_path: Path) -> None:
        # The contract's restore test compares traces; this one makes sure the part after
        # the mid-run cut holds promotions (a trial continuing an earlier one's
        # checkpoint), so restoring the rungs is what that comparison covers.
        run = self._driver(tmp_path, outcome=some_fail_some_nan)
        run.run(until=lambda: len(run.suggestions) >= self.trials // 2
                and any(job.iteration >= 0 for job in run.running))
        resumed = run.resumed(self._strategy(tmp_path, self.space()))
        resumed.run(trials=self.trials)
        promotions = [step for step in resumed.trace if step[0] == "suggest" and step[-1]]
        assert promotions, "no promotion after the restore"


class TestCustomStrategyExample(StrategyContract):
    @pytest.fixture(autouse=True)
    def local_search(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
        monkeypatch.syspath_prepend(str(EXAMPLE))
        self.cls = resolve("my_strategy.LocalSearch")
        yield
        sys.modules.pop("my_strategy", None)

    def make_strategy(self, space: list[Parameter], objectives: list[Objective],
                      **limits: Any) -> SearchStrategy:
        return self.cls(space=space, objectives=objectives, n_initial=3, **limits)
