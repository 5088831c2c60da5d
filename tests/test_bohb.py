"""OptimizerBOHB: Hyperband brackets and the KDE generator, driven directly and end to end.
That a restored search goes on exactly as one never stopped, KDE models included, is the
contract suite's (tests/test_strategy_contract.py)."""

from __future__ import annotations

import math
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hpo.automation import (
    DiscreteParameterRange,
    HyperParameterOptimizer,
    LogUniformParameterRange,
    ParameterSet,
    UniformIntegerParameterRange,
    UniformParameterRange,
)
from hpo.automation.hpbandster import OptimizerBOHB
from hpo.errors import ConfigError
from hpo.lifecycle import Status
from hpo.optimization.ranking import budget_of
from hpo.optimization.summary import summarize
from hpo.records import ScriptInfo
from hpo.store import Store, open_store
from hpo.strategies.base import NoSuggestion, Objective, Suggestion, resolve

LOSS = [Objective("loss", "total", "min")]
SPACE = [UniformParameterRange("x", 0.0, 1.0), UniformIntegerParameterRange("y", 1, 5)]


def bohb(space: list[Any] | None = None, **kwargs: Any) -> OptimizerBOHB:
    settings: dict[str, Any] = dict(space=space or SPACE, objectives=LOSS,
                                    min_iteration_per_job=1, max_iteration_per_job=9, seed=3)
    settings.update(kwargs)
    return OptimizerBOHB(**settings)


def take(strategy: OptimizerBOHB) -> Suggestion:
    s = strategy.suggest()
    assert isinstance(s, Suggestion), s
    return s


def quadratic(s: Suggestion) -> list[float]:
    return [(s.parameters["x"] - 0.3) ** 2 + 1.0 / (s.max_iteration or 1)]


def drive(strategy: OptimizerBOHB, jobs: int, objective: Callable[[Suggestion], Any] = quadratic,
          concurrency: int = 2) -> list[Suggestion]:
    """Run ``jobs`` jobs, ``concurrency`` at a time, finishing the oldest first."""
    out: list[Suggestion] = []
    running: list[Suggestion] = []
    while len(out) < jobs:
        s = strategy.suggest()
        if isinstance(s, Suggestion):
            out.append(s)
            running.append(s)
            if len(running) < concurrency:
                continue
        elif s is NoSuggestion.DONE:
            break
        assert running, "WAIT with nothing running: the search would stall"
        done = running.pop(0)
        strategy.on_result(done.trial_id, objective(done))
    for s in running:
        strategy.on_result(s.trial_id, objective(s))
    return out


def test_budgets_and_brackets_follow_hyperband() -> None:
    strategy = bohb()
    assert strategy.budgets == [1, 3, 9]
    budgets = [s.max_iteration for s in drive(strategy, 9 + 3 + 1 + 3 + 1 + 3 + 9)]
    # bracket 0: 9 at 1, 3 at 3, 1 at 9; bracket 1: 3 at 3, 1 at 9; bracket 2: 3 at 9
    assert budgets == [1] * 9 + [3] * 3 + [9] + [3] * 3 + [9] + [9] * 3 + [1] * 9
    assert bohb(min_iteration_per_job=None, max_iteration_per_job=27).budgets == [1, 3, 9, 27]
    assert bohb(min_iteration_per_job=3, max_iteration_per_job=27).budgets == [3, 9, 27]
    assert bohb(min_iteration_per_job=1, max_iteration_per_job=15).budgets == [2, 5, 15]
    assert bohb(min_iteration_per_job=1, max_iteration_per_job=27).budgets == [1, 3, 9, 27]
    assert bohb(eta=2, min_iteration_per_job=2, max_iteration_per_job=16).budgets == [
        2, 4, 8, 16]
    assert bohb(min_iteration_per_job=5, max_iteration_per_job=5).budgets == [5]


def test_the_best_third_is_promoted_and_a_rung_waits_for_all_its_results() -> None:
    strategy = bohb()
    first = [take(strategy) for _ in range(9)]
    assert all(s.max_iteration == 1 for s in first)
    assert strategy.suggest() is NoSuggestion.WAIT
    losses = {s.trial_id: float(k) for k, s in enumerate(reversed(first))}
    for s in first[:-1]:
        strategy.on_result(s.trial_id, [losses[s.trial_id]])
        assert strategy.suggest() is NoSuggestion.WAIT
    strategy.on_result(first[-1].trial_id, [losses[first[-1].trial_id]])
    promoted = [take(strategy) for _ in range(3)]
    assert strategy.suggest() is NoSuggestion.WAIT
    assert all(s.max_iteration == 3 for s in promoted)
    best = sorted(first, key=lambda s: losses[s.trial_id])[:3]
    assert [p.parameters for p in promoted] == [b.parameters for b in best]
    # each run is a new trial
    ids = [s.trial_id for s in first + promoted]
    assert len(set(ids)) == 12
    # the best at 3 iterations goes on to 9
    for k, s in enumerate(promoted):
        strategy.on_result(s.trial_id, [10.0 - k])
    [last] = [strategy.suggest()]
    assert isinstance(last, Suggestion) and last.max_iteration == 9
    assert last.parameters == promoted[-1].parameters


def test_maximize_promotes_the_highest_values() -> None:
    strategy = bohb(objectives=[Objective("acc", "total", "max")])
    first = [take(strategy) for _ in range(9)]
    for k, s in enumerate(first):
        strategy.on_result(s.trial_id, [float(k)])
    promoted = [take(strategy) for _ in range(3)]
    assert [p.parameters for p in promoted] == [
        s.parameters for s in reversed(first[-3:])]


def test_failed_jobs_count_as_worst_and_never_stall_a_bracket() -> None:
    strategy = bohb()
    first = [take(strategy) for _ in range(9)]
    for k, s in enumerate(first):  # only two succeed; the rest crashed or never reported
        strategy.on_result(s.trial_id, [float(k)] if k in (4, 7) else None)
    promoted = [take(strategy) for _ in range(2)]
    assert [p.parameters for p in promoted] == [
        first[4].parameters, first[7].parameters]
    assert strategy.suggest() is NoSuggestion.WAIT
    for s in promoted:
        strategy.on_result(s.trial_id, None)
    # nothing left to promote: the next bracket starts (3 configurations at 3 iterations)
    following = strategy.suggest()
    assert isinstance(following, Suggestion) and following.max_iteration == 3
    assert following.trial_id.startswith("bohb-1-")
    # NaN counts as failed too
    strategy.on_result(following.trial_id, [math.nan])
    assert strategy.state()["losses"] == [[0, None]]


KDE_CHATTER = """
import sys
sys.path.insert(0, sys.argv[1])
from test_bohb import bohb, drive
from hpo.automation import DiscreteParameterRange, UniformIntegerParameterRange
space = [UniformIntegerParameterRange("a", 0, 3), DiscreteParameterRange("b", list("pqrs")),
         DiscreteParameterRange("c", [1, 2, 3])]
strategy = bohb(space, min_points_in_model=2, max_iteration_per_job=27)
drive(strategy, 80, lambda s: [float(sum(map(ord, str(s.parameters)))) % 7])
"""


@pytest.mark.timeout(120)
def test_the_kde_s_diagnostics_stay_out_of_the_user_s_output(caplog) -> None:
    # Given a small discrete space, where hpbandster's KDE scores draws infinite and
    # logs its state (l(x) = inf, g(x) = inf, its data) as warnings
    import subprocess

    tests = str(Path(__file__).parent)
    # When a search runs in a process with logging left as it is (the user's script)
    result = subprocess.run([sys.executable, "-c", KDE_CHATTER, tests], capture_output=True,
                            text=True, timeout=100, check=True)
    # Then none of it reaches the output
    assert "l(x)" not in result.stderr + result.stdout, result.stderr[-2000:]
    assert "g(x)" not in result.stderr and "KDE" not in result.stderr
    # And it is in the strategy's log, as debug lines
    caplog.set_level("DEBUG", logger="hpo.strategies.bohb")
    space = [UniformIntegerParameterRange("a", 0, 3), DiscreteParameterRange("b", list("pqrs")),
             DiscreteParameterRange("c", [1, 2, 3])]
    drive(bohb(space, min_points_in_model=2, max_iteration_per_job=27), 80,
          lambda s: [float(sum(map(ord, str(s.parameters)))) % 7])
    said = [r for r in caplog.records if "l(x)" in r.getMessage()]
    assert said and {r.levelname for r in said} == {"DEBUG"}
    assert {r.name for r in said} == {"hpo.strategies.bohb.kde"}


def test_values_have_the_ranges_types_and_grids() -> None:
    space = [
        UniformParameterRange("x", 0.0, 1.0),
        UniformParameterRange("g", 0.0, 1.0, step_size=0.25),
        UniformIntegerParameterRange("n", 2, 10, step_size=2),
        LogUniformParameterRange("lr", -4, -1, step_size=1),
        DiscreteParameterRange("opt", ["sgd", 3, True]),
        DiscreteParameterRange("const", [7]),
        ParameterSet([{"a": 1, "b": "one"}, {"a": 2, "b": "two"}]),
    ]
    strategy = bohb(space)
    seen = drive(strategy, 60, objective=lambda s: [float(s.parameters["n"])])
    assert len(seen) == 60
    for s in seen:
        p = s.parameters
        assert set(p) == {"x", "g", "n", "lr", "opt", "const", "a", "b"}
        assert isinstance(p["x"], float) and 0.0 <= p["x"] <= 1.0
        assert p["g"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert type(p["n"]) is int and p["n"] in (2, 4, 6, 8, 10)
        assert p["lr"] in (1e-4, 1e-3, 1e-2, 1e-1)
        assert p["opt"] in ("sgd", 3, True) and (p["opt"] is True or type(p["opt"]) is not bool)
        assert p["const"] == 7
        assert (p["a"], p["b"]) in ((1, "one"), (2, "two"))
    assert {s.parameters["opt"] for s in seen} >= {"sgd", 3}
    # the model kicked in and prefers small n
    assert strategy._generator.kde_models
    later = [s.parameters["n"] for s in seen[30:]]
    assert statistics.mean(later) < 6


def test_log_uniform_values_are_sampled_in_the_exponent_space() -> None:
    space = [LogUniformParameterRange("lr", -4, -1)]
    strategy = bohb(space, min_iteration_per_job=1, max_iteration_per_job=1, random_fraction=1.0)
    values = [s.parameters["lr"] for s in drive(strategy, 300, objective=lambda s: [0.0],
                                                concurrency=1)]
    assert all(isinstance(v, float) and 1e-4 <= v <= 0.1 for v in values)
    exponents = sorted(math.log10(v) for v in values)
    assert abs(statistics.median(exponents) - (-2.5)) < 0.25
    below = sum(e < -3 for e in exponents) / len(exponents)  # a third of the exponent range
    assert 0.23 < below < 0.43
    # base 2
    strategy = bohb([LogUniformParameterRange("w", 1, 5, base=2)], max_iteration_per_job=1,
                    random_fraction=1.0)
    assert all(2.0 <= s.parameters["w"] <= 32.0 for s in drive(strategy, 50, concurrency=1,
                                                                 objective=lambda s: [0.0]))


def test_total_max_jobs_counts_jobs_and_n_iterations_counts_brackets() -> None:
    strategy = bohb(total_max_jobs=11)
    assert len(drive(strategy, 100)) == 11
    assert strategy.suggest() is NoSuggestion.DONE
    strategy = bohb(n_iterations=2)
    assert len(drive(strategy, 100)) == 13 + 4


def test_restore_refuses_another_space_or_settings() -> None:
    saved = bohb().state()
    with pytest.raises(ConfigError, match="different parameter space"):
        bohb([UniformParameterRange("x", 0.0, 2.0)]).restore(saved)
    with pytest.raises(ConfigError, match="other settings"):
        bohb(eta=2).restore(saved)
    with pytest.raises(ConfigError, match="malformed"):
        bohb().restore({"fingerprint": saved["fingerprint"]})


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="needs max_iteration_per_job"):
        bohb(max_iteration_per_job=None)
    with pytest.raises(ConfigError, match="one objective"):
        bohb(objectives=[*LOSS, Objective("acc", "total", "max")])
    with pytest.raises(ConfigError, match="eta"):
        bohb(eta=1)
    with pytest.raises(ConfigError, match="greater than"):
        bohb(min_iteration_per_job=10)
    with pytest.raises(ConfigError, match="random_fraction"):
        bohb(random_fraction=2)
    for seed in (2.5, True, "lr-sweep"):  # it would start, then restore another seed
        with pytest.raises(ConfigError, match="OptimizerBOHB: seed must be an integer, not"):
            bohb(seed=seed)
    assert resolve("bohb") is OptimizerBOHB
    assert not OptimizerBOHB.supports_multi_objective


# ----- end to end ---------------------------------------------------------------------

JOB = Path(__file__).parent / "scripts" / "objective_job.py"
PROGRESSION = [1] * 9 + [3] * 3 + [9]  # the first bracket with eta 3, budgets 1, 3, 9


@pytest.fixture
def e2e(hpo_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> tuple[Store, dict[str, str]]:
    """The test's store and the environment of its agents (embedded broker)."""
    from tests.agents import env_for

    broker_url = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    monkeypatch.setenv("HPO_BROKER_URL", broker_url)
    hpo_env["HPO_BROKER_URL"] = broker_url
    return open_store(hpo_env["HPO_STORE_URL"]), env_for(hpo_env, broker_url)


def base_task(store: Store, tmp_path: Path, **params: Any) -> str:
    script = ScriptInfo(entry_point=str(JOB), working_dir=str(tmp_path),
                        interpreter=sys.executable)
    defaults: dict[str, Any] = {"x": 0.0, "y": 1, "steps": 10_000, "sleep": 0.02,
                                "fail": False, "nan": False, "silent": False}
    defaults.update(params)
    return store.create_task("bohb-tests", "objective", script=script, parameters={
        f"General/{k}": v for k, v in defaults.items()}).id


def bohb_optimizer(store: Store, base: str, queue: str, **kwargs: Any
                   ) -> HyperParameterOptimizer:
    settings: dict[str, Any] = dict(
        base_task_id=base,
        hyper_parameters=[UniformParameterRange("x", 0.0, 1.0),
                          UniformIntegerParameterRange("y", 1, 3)],
        objective_metric_title="loss", objective_metric_series="total",
        objective_metric_sign="min", optimizer_class=OptimizerBOHB,
        max_number_of_concurrent_tasks=2, execution_queue=queue, total_max_jobs=13,
        min_iteration_per_job=1, max_iteration_per_job=9, auto_connect_task=False,
        store=store, seed=5)
    settings.update(kwargs)
    return HyperParameterOptimizer(**settings)


def check_first_bracket(store: Store, opt_id: str, tight: bool = True) -> None:
    """13 jobs: 9 at 1 iteration, the best 3 again at 3, the best of those at 9; each
    stopped at its budget."""
    jobs = sorted(store.find_tasks(parent=opt_id), key=lambda j: j.created_at)
    assert len(jobs) == 13
    budgets: list[int] = []
    last_value: dict[str, float] = {}
    for job in jobs:
        assert job.status is Status.stopped, (job.status, job.status_message)
        found = re.search(r"max_iteration_per_job reached \((\d+) >= (\d+)\)",
                          job.status_message or "")
        assert found, job.status_message
        budget = int(found.group(2))
        budgets.append(budget)
        scalars = sorted(store.task_scalars(job.id, title="loss"), key=lambda s: s.iteration)
        assert budget <= scalars[-1].iteration
        if tight:
            assert scalars[-1].iteration < budget + 50  # stopped at its budget
        # The value that counts is the report at the budget (later ones, sent while the
        # stop travels, do not).
        last_value[job.id] = next(s.value for s in scalars if s.iteration >= budget)
        assert isinstance(job.parameters["General/y"], int)
        assert isinstance(job.parameters["General/x"], float)
    assert budgets == PROGRESSION
    trials = [t for j in jobs for t in j.tags if t.startswith("trial:")]
    assert len(set(trials)) == 13
    # the best third of the first rung ran again with 3 iterations, the best of those 9
    x = {j.id: j.parameters["General/x"] for j in jobs}
    rung0, rung1, [top] = jobs[:9], jobs[9:12], jobs[12:]
    best0 = sorted(rung0, key=lambda j: last_value[j.id])[:3]
    assert sorted(x[j.id] for j in rung1) == sorted(x[j.id] for j in best0)
    assert x[top.id] == x[min(rung1, key=lambda j: last_value[j.id]).id]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bohb_runs_end_to_end_on_real_agents_with_iteration_limits(
        e2e: tuple[Store, dict[str, str]], tmp_path: Path, queue_name: str) -> None:
    from tests.agents import running_agent

    store, env = e2e
    base = base_task(store, tmp_path)
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--concurrency", "2"):
        opt = bohb_optimizer(store, base, queue_name)
        opt.start()
        assert opt.wait(timeout=150)
    check_first_bracket(store, opt.id)
    # Each job carries its budget, and the best is the one trained on 9 iterations,
    # whatever a 1-iteration job scored: in the controller and read from the store.
    jobs = sorted(store.find_tasks(parent=opt.id), key=lambda j: j.created_at)
    assert [budget_of(j.tags) for j in jobs] == PROGRESSION
    assert opt.get_top_experiments_id(1) == [jobs[-1].id]
    assert summarize(store, opt.id).best_task == jobs[-1].id


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_jobs_that_never_report_end_at_time_limit_per_job_and_the_brackets_go_on(
        e2e: tuple[Store, dict[str, str]], tmp_path: Path, queue_name: str) -> None:
    from tests.agents import running_agent

    store, env = e2e
    base = base_task(store, tmp_path, sleep=0.01, silent=True)
    results: list[float | None] = []
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--concurrency", "2"):
        opt = bohb_optimizer(store, base, queue_name, optimizer_class="bohb",
                             hyper_parameters=[UniformParameterRange("x", 0.0, 1.0)],
                             total_max_jobs=4, min_iteration_per_job=3, time_limit_per_job=1 / 60,
                             fail_fast=0)  # ClearML's way: silent jobs do not end the run
        opt.start(job_complete_callback=lambda job, value, *_: results.append(value))
        assert opt.wait(timeout=120)
    jobs = store.find_tasks(parent=opt.id)
    assert len(jobs) == 4 and results == [None] * 4
    assert all(j.status is Status.stopped and "time limit" in (j.status_message or "")
               for j in jobs)
    # bracket 0 (3 configurations at 3 iterations) failed as a whole: bracket 1 started
    trials = sorted(t for j in jobs for t in j.tags if t.startswith("trial:"))
    assert trials == ["trial:bohb-0-0-0", "trial:bohb-0-0-1", "trial:bohb-0-0-2",
                      "trial:bohb-1-0-0"]


RUN_BOHB = """
import sys
from hpo.automation import HyperParameterOptimizer, UniformIntegerParameterRange
from hpo.automation import UniformParameterRange
opt = HyperParameterOptimizer(
    base_task_id=sys.argv[1], execution_queue=sys.argv[2],
    hyper_parameters=[UniformParameterRange("x", 0.0, 1.0),
                      UniformIntegerParameterRange("y", 1, 3)],
    objective_metric_title="loss", objective_metric_series="total",
    objective_metric_sign="min", optimizer_class="bohb", max_number_of_concurrent_tasks=2,
    total_max_jobs=13, min_iteration_per_job=1, max_iteration_per_job=9,
    auto_connect_task=False, seed=5)
print(opt.id, flush=True)
opt.start()
opt.wait()
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_controller_killed_mid_bracket_resumes_it(
        e2e: tuple[Store, dict[str, str]], tmp_path: Path, queue_name: str) -> None:
    import signal
    import subprocess

    from tests.agents import running_agent, wait_for

    store, env = e2e
    base = base_task(store, tmp_path)
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--concurrency", "2"):
        proc = subprocess.Popen([sys.executable, "-c", RUN_BOHB, base, queue_name], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        opt_id = proc.stdout.readline().strip()
        wait_for("four finished jobs", lambda: len(store.find_tasks(
            parent=opt_id, status=[Status.stopped])) >= 4, timeout=120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        opt = HyperParameterOptimizer.resume(opt_id, store=store)
        opt.start()
        assert opt.wait(timeout=120)
    check_first_bracket(store, opt_id, tight=False)


def test_no_configuration_runs_twice_at_one_budget_and_a_used_up_space_ends() -> None:
    from hpo.space.ranges import canonical

    # Given a small discrete space (6 configurations) and a budget of many more jobs
    space = [DiscreteParameterRange("a", ["x", "y", "z"]), DiscreteParameterRange("b", [1, 2])]
    strategy = bohb(space, total_max_jobs=200, min_points_in_model=2)
    suggestions = drive(strategy, 200, objective=lambda s: [
        {"x": 0.3, "y": 0.1, "z": 0.2}[s.parameters["a"]] * s.parameters["b"]])
    # Then no configuration ran twice at the same budget
    runs = [(s.max_iteration, canonical(s.parameters)) for s in suggestions]
    assert len(runs) == len(set(runs)), sorted(runs)
    # And once every configuration has run at a budget, the search ends, not repeats
    assert strategy.suggest() is NoSuggestion.DONE
    assert len(suggestions) < 200
