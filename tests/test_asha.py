"""ASHA (strategies/asha.py) driven directly with synthetic objectives, then end to end
with real agents; and the user-strategy example in examples/custom_strategy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo.automation import (
    DiscreteParameterRange,
    HyperParameterOptimizer,
    UniformIntegerParameterRange,
    UniformParameterRange,
)
from hpo.errors import ConfigError
from hpo.lifecycle import Status
from hpo.records import ScriptInfo
from hpo.store import Store, open_store
from hpo.strategies.asha import ASHA, rung_budgets
from hpo.strategies.base import NoSuggestion, Objective, Suggestion, resolve
from tests.agents import env_for, running_agent

ROOT = Path(__file__).resolve().parent.parent
JOB = ROOT / "tests" / "scripts" / "objective_job.py"
EXAMPLE = ROOT / "examples" / "custom_strategy"
DIGITS = ROOT / "examples" / "digits"

MIN = Objective("loss", "total", "min")
MAX = Objective("validation", "accuracy", "max")


def space() -> list[Any]:
    return [UniformParameterRange("x", 0.0, 1.0), UniformIntegerParameterRange("y", 1, 5)]


def asha(**kwargs: Any) -> ASHA:
    settings: dict[str, Any] = dict(space=space(), objectives=[MIN], min_iteration_per_job=1,
                                    max_iteration_per_job=9, seed=7)
    settings.update(kwargs)
    return ASHA(**settings)


def suggestion(strategy: Any) -> Suggestion:
    s = strategy.suggest()
    assert isinstance(s, Suggestion), s
    return s


# ----- rungs and arguments ------------------------------------------------------------


def test_rung_budgets_are_r_min_times_powers_of_eta_up_to_the_maximum() -> None:
    assert asha().budgets == [1, 3, 9]
    assert asha(max_iteration_per_job=27).budgets == [1, 3, 9, 27]
    assert asha(eta=2, max_iteration_per_job=8).budgets == [1, 2, 4, 8]
    assert asha(min_iteration_per_job=2, max_iteration_per_job=18).budgets == [2, 6, 18]
    # The top rung is always the job's full budget
    assert asha(max_iteration_per_job=15).budgets == [1, 3, 15]
    assert asha(min_iteration_per_job=9, max_iteration_per_job=9).budgets == [9]
    # Without min_iteration_per_job: geometric down from the maximum, at most 4 rungs
    assert asha(min_iteration_per_job=None).budgets == [1, 3, 9]
    assert asha(min_iteration_per_job=None, max_iteration_per_job=100).budgets == [
        4, 11, 33, 100]
    assert asha(min_iteration_per_job=None, num_rungs=2).budgets == [3, 9]
    assert asha(min_iteration_per_job=0, max_iteration_per_job=1).budgets == [1]
    assert rung_budgets(81, 3, 1) == [1, 3, 9, 27, 81]


def test_asha_is_registered_and_checks_its_arguments() -> None:
    assert resolve("asha") is ASHA
    with pytest.raises(ConfigError, match="max_iteration_per_job"):
        asha(max_iteration_per_job=None)
    with pytest.raises(ConfigError, match="eta must be a number greater than 1"):
        asha(eta=1)
    with pytest.raises(ConfigError, match="one objective"):
        asha(objectives=[MIN, MAX])
    with pytest.raises(ConfigError, match="not both"):
        asha(num_rungs=3)
    with pytest.raises(ConfigError, match="num_rungs"):
        asha(min_iteration_per_job=None, num_rungs=0)
    with pytest.raises(ConfigError, match="ASHA: seed must be an integer or a string"):
        asha(seed=0.5)


def test_hpo_yaml_selects_asha_and_a_missing_max_iteration_is_one_clear_line(
        tmp_path: Path) -> None:
    from hpo.controller.yaml_config import load_optimizer_arguments

    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    data = yaml.safe_load((DIGITS / "hpo.yaml").read_text())
    data["base_task"]["script"] = str(DIGITS / "train.py")
    data.update(strategy="asha", strategy_kwargs={"eta": 3, "seed": 2},
                min_iteration_per_job=1, max_iteration_per_job=9)
    path = tmp_path / "hpo.yaml"
    path.write_text(yaml.safe_dump(data))
    arguments = load_optimizer_arguments(path, store)
    assert arguments["optimizer_class"] == "asha" and arguments["eta"] == 3
    del data["max_iteration_per_job"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="ASHA needs max_iteration_per_job"):
        load_optimizer_arguments(path, store)
    store.close()


# ----- suggestions and promotions -----------------------------------------------------


def test_new_configurations_start_on_the_lowest_rung_and_nothing_ever_waits() -> None:
    strategy = asha()
    seen = set()
    for i in range(30):  # no result at all: still a new configuration every time
        s = suggestion(strategy)
        assert s.trial_id == f"t{i}" and s.max_iteration == 1 and s.resume_from is None
        seen.add(json.dumps(s.parameters, sort_keys=True))
    assert len(seen) == 30


def test_sampling_is_seedable() -> None:
    a, b, c = asha(seed=3), asha(seed=3), asha(seed=4)
    first = [suggestion(a).parameters for _ in range(5)]
    assert first == [suggestion(b).parameters for _ in range(5)]
    assert first != [suggestion(c).parameters for _ in range(5)]


def test_a_top_configuration_is_promoted_as_soon_as_it_is_in_the_top_fraction() -> None:
    strategy = asha()
    t0, t1, t2, t3 = (suggestion(strategy) for _ in range(4))
    strategy.on_result(t0.trial_id, [0.5])
    strategy.on_result(t1.trial_id, [0.2])
    # Two results: the top third of 2 is nobody yet, so a new configuration
    t4 = suggestion(strategy)
    assert t4.max_iteration == 1 and t4.resume_from is None
    strategy.on_result(t2.trial_id, [0.9])
    # Three results (t3 and t4 still running: the rung is not full): t1 is the top third
    promoted = suggestion(strategy)
    assert promoted.trial_id == "t5"
    assert promoted.parameters == t1.parameters
    assert promoted.max_iteration == 3 and promoted.resume_from == t1.trial_id
    # Promoted once only
    t6 = suggestion(strategy)
    assert t6.max_iteration == 1 and t6.resume_from is None
    # Six results on rung 0: the top third is t1 (promoted) and the next best, t3
    strategy.on_result(t3.trial_id, [0.3])
    strategy.on_result(t4.trial_id, [0.8])
    assert suggestion(strategy).max_iteration == 1  # 5 results: top one, promoted
    strategy.on_result(t6.trial_id, [0.7])
    second = suggestion(strategy)
    assert (second.parameters, second.max_iteration, second.resume_from) == (
        t3.parameters, 3, t3.trial_id)


def test_the_highest_rung_is_promoted_first_and_the_top_rung_never() -> None:
    strategy = asha()
    base = [suggestion(strategy) for _ in range(9)]
    for i, s in enumerate(base):
        strategy.on_result(s.trial_id, [float(i)])
    rung1 = [suggestion(strategy) for _ in range(3)]  # the top third: base 0, 1, 2
    assert [s.resume_from for s in rung1] == ["t0", "t1", "t2"]
    assert all(s.max_iteration == 3 for s in rung1)
    for s, value in zip(rung1, [0.5, 0.1, 0.9], strict=True):
        strategy.on_result(s.trial_id, [value])
    top = suggestion(strategy)  # rung 1 has 3 results: its best goes to the top rung
    assert top.max_iteration == 9 and top.resume_from == rung1[1].trial_id
    assert top.parameters == base[1].parameters
    strategy.on_result(top.trial_id, [0.0])
    assert suggestion(strategy).max_iteration == 1  # nothing to promote from rung 9
    assert strategy.rung_of(top.trial_id) == 2 and strategy.rung_of("nope") is None


def test_maximize_promotes_the_highest_values_and_failures_are_the_worst() -> None:
    strategy = asha(objectives=[MAX])
    trials = [suggestion(strategy) for _ in range(3)]
    strategy.on_result(trials[0].trial_id, [0.9])
    strategy.on_result(trials[1].trial_id, None)  # failed
    strategy.on_result(trials[2].trial_id, [0.95])
    assert suggestion(strategy).resume_from == trials[2].trial_id
    # A rung of failures promotes nothing
    strategy = asha()
    trials = [suggestion(strategy) for _ in range(3)]
    for t in trials:
        strategy.on_result(t.trial_id, None)
    assert suggestion(strategy).max_iteration == 1
    # NaN and infinity count as failures, a repeated or unknown result is ignored
    strategy = asha()
    trials = [suggestion(strategy) for _ in range(3)]
    strategy.on_result(trials[0].trial_id, [float("-inf")])
    strategy.on_result(trials[1].trial_id, [float("nan")])
    strategy.on_result(trials[1].trial_id, [0.1])
    strategy.on_result("t99", [0.0])
    strategy.on_result(trials[2].trial_id, [5.0])
    assert suggestion(strategy).resume_from == trials[2].trial_id


def test_a_finite_space_waits_only_for_running_trials_then_is_done() -> None:
    strategy = asha(space=[DiscreteParameterRange("x", [1, 2, 3])])
    trials = [suggestion(strategy) for _ in range(3)]
    assert sorted(t.parameters["x"] for t in trials) == [1, 2, 3]
    assert strategy.suggest() is NoSuggestion.WAIT  # used up, but results may promote
    for t, value in zip(trials, [3.0, 1.0, 2.0], strict=True):
        strategy.on_result(t.trial_id, [value])
    promoted = suggestion(strategy)
    assert promoted.parameters == trials[1].parameters and promoted.max_iteration == 3
    assert strategy.suggest() is NoSuggestion.WAIT
    strategy.on_result(promoted.trial_id, [0.5])
    assert strategy.suggest() is NoSuggestion.DONE  # one result on rung 1: nothing more


# ----- a simulated asynchronous run ---------------------------------------------------


def objective(parameters: dict[str, Any], budget: int) -> float:
    """Better with a good x, and with more iterations."""
    return (parameters["x"] - 0.3) ** 2 + 0.1 * parameters["y"] + 1.0 / (1 + budget)


def simulate(strategy: Any, steps: int, workers: int = 3,
             running: list[Suggestion] | None = None,
             f: Callable[[dict[str, Any], int], float] = objective) -> list[Suggestion]:
    """Keep ``workers`` trials running; each step, the oldest one finishes. Returns the
    suggestions made, in order. ``running`` (the trials in flight) is updated."""
    running = running if running is not None else []
    made: list[Suggestion] = []
    for _ in range(steps):
        while len(running) < workers:
            s = strategy.suggest()
            assert isinstance(s, Suggestion), f"the strategy answered {s} with idle workers"
            running.append(s)
            made.append(s)
        done = running.pop(0)
        strategy.on_result(done.trial_id, [f(done.parameters, done.max_iteration or 9)])
    return made


def test_a_long_run_halves_each_rung_and_promotes_the_good_configurations() -> None:
    strategy = asha()
    made = simulate(strategy, 300)
    per_rung = [sum(s.max_iteration == b for s in made) for b in strategy.budgets]
    # About 1/eta of each rung goes on (a little more: promotions happen early)
    assert per_rung[0] > 150 and 0.25 < per_rung[1] / per_rung[0] < 0.45
    assert 0.2 < per_rung[2] / per_rung[1] < 0.5
    by_trial = {s.trial_id: s for s in made}
    for s in made:
        if s.resume_from is not None:  # same configuration, next rung
            parent = by_trial[s.resume_from]
            assert s.parameters == parent.parameters
            assert strategy.budgets.index(s.max_iteration) == strategy.budgets.index(
                parent.max_iteration) + 1
    top = [s.parameters for s in made if s.max_iteration == 9]
    assert all(abs(p["x"] - 0.3) < 0.35 for p in top)
    assert sum(p["y"] == 1 for p in top) > len(top) / 2


def test_restore_refuses_other_rungs_a_malformed_state_and_another_space() -> None:
    # That a restored ASHA continues exactly is the contract suite's
    # (tests/test_strategy_contract.py).
    original = asha()
    simulate(original, 40)
    saved = json.loads(json.dumps(original.state(), allow_nan=False))
    with pytest.raises(ConfigError, match="rungs"):
        asha(max_iteration_per_job=27).restore(saved)
    with pytest.raises(ConfigError, match="malformed"):
        asha().restore({"version": 1})
    with pytest.raises(ConfigError, match="different parameter space"):
        asha(space=[UniformParameterRange("x", 0.0, 2.0)]).restore(saved)


# ----- end to end ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_asha_with_real_agents_stops_jobs_at_their_rung_budgets_and_promotes(
        hpo_env: dict[str, str], tmp_path: Path, queue_name: str) -> None:
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    hpo_env["HPO_BROKER_URL"] = broker
    os.environ["HPO_BROKER_URL"] = broker  # hpo_env's monkeypatch restores os.environ
    store: Store = open_store(hpo_env["HPO_STORE_URL"])
    script = ScriptInfo(entry_point=str(JOB), working_dir=str(tmp_path),
                        interpreter=sys.executable)
    base = store.create_task("asha-tests", "objective", script=script, parameters={
        "General/x": 0.0, "General/y": 1, "General/steps": 5, "General/sleep": 0.0,
        "General/fail": False, "General/nan": False, "General/silent": False}).id
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "2"):
        opt = HyperParameterOptimizer(
            base_task_id=base,
            hyper_parameters=[UniformParameterRange("x", 0.0, 1.0, step_size=0.01),
                              DiscreteParameterRange("steps", [10_000]),
                              DiscreteParameterRange("sleep", [0.05])],
            objective_metric_title="loss", objective_metric_series="total",
            objective_metric_sign="min", optimizer_class="asha", eta=3,
            min_iteration_per_job=1, max_iteration_per_job=9,
            max_number_of_concurrent_tasks=2, execution_queue=queue_name, total_max_jobs=8,
            auto_connect_task=False, store=store, seed=1)
        opt.start()
        assert opt.wait(timeout=200)
    strategy = opt.get_optimizer()
    assert isinstance(strategy, ASHA) and strategy.budgets == [1, 3, 9]
    jobs = sorted(store.find_tasks(parent=opt.id), key=lambda t: t.created_at)
    assert len(jobs) == 8
    trial_of = {j.id: next(t[6:] for t in j.tags if t.startswith("trial:")) for j in jobs}
    first_of: dict[float, Any] = {}
    promoted = 0
    for job in jobs:
        rung = strategy.rung_of(trial_of[job.id])
        assert rung is not None
        budget = strategy.budgets[rung]
        assert job.status is Status.stopped, (job.status, job.status_message)
        assert f">= {budget})" in (job.status_message or ""), job.status_message
        last = max(s.iteration for s in store.task_scalars(job.id, title="loss"))
        assert budget <= last < budget + 100  # stopped within ~5 s (0.05 s per step)
        x = job.parameters["General/x"]
        if rung == 0:
            assert x not in first_of  # new configurations are new
            first_of[x] = job
        else:  # a promotion: the same configuration as a finished lower-rung job
            promoted += 1
            parent = first_of[x]
            assert parent.ended_at is not None and parent.ended_at <= job.created_at
    assert promoted >= 1
    assert len(opt.get_top_experiments(8)) == 8  # stopped jobs' objectives count
    store.close()


# ----- the custom-strategy example ----------------------------------------------------


@pytest.fixture
def example_on_path(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield resolve("my_strategy.LocalSearch")
    sys.modules.pop("my_strategy", None)


def test_the_custom_strategy_resolves_by_dotted_path_and_searches_locally(
        example_on_path: Any) -> None:
    cls = example_on_path
    assert cls.__module__ == "my_strategy" and cls.__name__ == "LocalSearch"
    strategy = cls(space=space(), objectives=[MIN], seed=5, n_initial=3)
    made = simulate(strategy, 12, workers=2, f=lambda p, _b: objective(p, 9))
    keys = [json.dumps(s.parameters, sort_keys=True) for s in made]
    assert len(set(keys)) == len(keys) == 13
    # After the random start, each suggestion changes one range of an earlier trial's
    for i in range(3, len(made)):
        assert any(sum(made[i].parameters[k] != p.parameters[k] for k in p.parameters) == 1
                   for p in made[:i])
    # A small finite space ends with DONE (its state and restore, and the rest of the
    # contract: tests/test_strategy_contract.py)
    tiny = cls(space=[DiscreteParameterRange("x", [1, 2])], objectives=[MIN], n_initial=1)
    assert [suggestion(tiny).parameters["x"] for _ in range(2)] in ([1, 2], [2, 1])
    assert tiny.suggest() is NoSuggestion.DONE


def test_the_example_yaml_finds_the_strategy_module_beside_it(tmp_path: Path) -> None:
    from hpo.controller.yaml_config import load_optimizer_arguments

    sys.modules.pop("my_strategy", None)
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    # No PYTHONPATH: my_strategy.py beside hpo.yaml is found, and saved as a file path
    # so that a resume finds it too.
    arguments = load_optimizer_arguments(EXAMPLE / "hpo.yaml", store)
    assert arguments["optimizer_class"] == f"{EXAMPLE / 'my_strategy.py'}:LocalSearch"
    assert resolve(arguments["optimizer_class"]).__name__ == "LocalSearch"
    assert arguments["n_initial"] == 4
    script = store.get_task(arguments["base_task_id"]).script
    assert script is not None and script.entry_point.endswith("train.py")
    store.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_custom_strategy_example_runs_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    data = yaml.safe_load((EXAMPLE / "hpo.yaml").read_text())
    data["base_task"]["script"] = str(DIGITS / "train.py")
    data["total_max_jobs"] = 6
    config = tmp_path / "hpo.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPO_")}
    env.update(HPO_HOME=str(home), HPO_STORE_URL=f"sqlite:///{home / 'hpo.db'}",
               HPO_BROKER_URL=f"sqla+sqlite:///{home / 'broker.db'}", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(EXAMPLE), env.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "hpo.controller.cli", "start", str(config), "--local-agents",
         "2", "--json"], env=env, capture_output=True, text=True, timeout=200, check=False,
        cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    store = open_store(env["HPO_STORE_URL"])
    events = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    optimizer_id = next(e["id"] for e in events if e["event"] == "started")
    assert events[-1]["event"] == "finished"
    jobs = store.find_tasks(parent=optimizer_id)
    assert len(jobs) == 6 and all(j.status is Status.completed for j in jobs)
    store.close()
