"""OptimizerOptuna: the same suggestions as a standalone Optuna study, typed values,
pruning, a study that outlives its controller, and optuna-dashboard reading it."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest

from hpo.automation import (
    DiscreteParameterRange,
    HyperParameterOptimizer,
    LogUniformParameterRange,
    ParameterSet,
    UniformIntegerParameterRange,
    UniformParameterRange,
)
from hpo.controller.controller import make_strategy
from hpo.errors import ConfigError
from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.optimization.config import OptimizerConfig
from hpo.strategies import Decision, Objective, Suggestion
from hpo.strategies.optuna_search import OptimizerOptuna

MIN = [Objective("loss", "total", "min")]


def space() -> list:
    return [UniformParameterRange("x", -2.0, 2.0),
            UniformParameterRange("Args/grid", 0.0, 1.0, step_size=0.1),
            LogUniformParameterRange("lr", -5, -1),
            LogUniformParameterRange("wd", -4, -2, step_size=1),
            UniformIntegerParameterRange("layers", 1, 9, step_size=2),
            DiscreteParameterRange("act", ["relu", "gelu", "tanh"]),
            DiscreteParameterRange("mixed", [1, 2.5, True, None]),
            ParameterSet([{"opt": "sgd", "momentum": 0.9}, {"opt": "adam", "momentum": 0.0}])]


def objective_of(params: dict[str, Any]) -> float:
    """A deterministic function of a configuration."""
    return ((params["x"] - 0.5) ** 2 + params["Args/grid"] + math.log10(params["lr"]) ** 2 / 10
            + params["layers"] / 10 + (params["act"] == "tanh") + (params["opt"] == "sgd"))


def strategy(tmp_path: Path, objectives: list[Objective] = MIN, opt_id: str = "opt-id",
             **kwargs: Any) -> OptimizerOptuna:
    """Built as the controller builds it, attached to a SQLite store file."""
    minimum = kwargs.pop("min_iteration_per_job", None)
    config = OptimizerConfig(base_task_id="base", hyper_parameters=space(),
                             objectives=list(objectives), strategy="optuna",
                             strategy_kwargs=kwargs, min_iteration_per_job=minimum)
    made = make_strategy(config)
    assert isinstance(made, OptimizerOptuna)
    made.attach(f"sqlite:///{tmp_path / 'store.db'}", opt_id)
    return made


def standalone_suggest(trial: optuna.Trial) -> dict[str, Any]:
    """The same space, written directly against Optuna."""
    combos = [{"opt": "sgd", "momentum": 0.9}, {"opt": "adam", "momentum": 0.0}]
    mixed = [1, 2.5, True, None]
    return {"x": trial.suggest_float("x", -2.0, 2.0),
            "Args/grid": trial.suggest_float("Args/grid", 0.0, 1.0, step=0.1),
            "lr": trial.suggest_float("lr", 1e-5, 1e-1, log=True),
            "wd": trial.suggest_categorical("wd", [1e-4, 1e-3, 1e-2]),
            "layers": trial.suggest_int("layers", 1, 9, step=2),
            "act": trial.suggest_categorical("act", ["relu", "gelu", "tanh"]),
            "mixed": mixed[trial.suggest_categorical("mixed", [0, 1, 2, 3])],
            **combos[trial.suggest_categorical("parameter_set", [0, 1])]}


def same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if type(x) is not type(y):
            return False
        if isinstance(x, float) and not math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12):
            return False
        if not isinstance(x, float) and x != y:
            return False
    return True


def check_types(params: dict[str, Any]) -> None:
    assert isinstance(params["x"], float) and -2.0 <= params["x"] <= 2.0
    assert params["Args/grid"] in [i / 10 for i in range(11)]  # exact grid values
    assert isinstance(params["lr"], float) and 1e-5 <= params["lr"] <= 1e-1
    assert params["wd"] in (1e-4, 1e-3, 1e-2)
    assert type(params["layers"]) is int and params["layers"] in (1, 3, 5, 7, 9)
    assert params["act"] in ("relu", "gelu", "tanh")
    assert any(params["mixed"] is v or (type(params["mixed"]) is type(v)
                                        and params["mixed"] == v) for v in (1, 2.5, True, None))
    assert (params["opt"], params["momentum"]) in (("sgd", 0.9), ("adam", 0.0))


# ----- unit level: no agents -----------------------------------------------------------


def test_one_job_at_a_time_it_suggests_what_a_standalone_study_suggests(tmp_path):
    ours = strategy(tmp_path, seed=7)
    theirs = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=7))
    for n in range(15):  # past TPE's 10 random start-up trials
        suggestion = ours.suggest()
        assert isinstance(suggestion, Suggestion)
        trial = theirs.ask()
        expected = standalone_suggest(trial)
        assert same_config(suggestion.parameters, expected), (n, suggestion.parameters,
                                                             expected)
        check_types(suggestion.parameters)
        value = objective_of(suggestion.parameters)
        ours.on_result(suggestion.trial_id, [value])
        theirs.tell(trial, value)
    stored = optuna.load_study(study_name="hpo-opt-id",
                               storage=f"sqlite:///{tmp_path / 'store.db'}")
    assert [t.state for t in stored.trials] == [optuna.trial.TrialState.COMPLETE] * 15
    assert [t.value for t in stored.trials] == [t.value for t in theirs.trials]


def test_the_defaults_are_tpe_nsga2_and_a_median_pruner(tmp_path):
    one = strategy(tmp_path, seed=1)
    assert isinstance(one.study.sampler, optuna.samplers.TPESampler)
    assert isinstance(one.study.pruner, optuna.pruners.MedianPruner)
    two = strategy(tmp_path, [*MIN, Objective("acc", "val", "max")], opt_id="two")
    assert isinstance(two.study.sampler, optuna.samplers.NSGAIISampler)
    assert two.study.directions == [optuna.study.StudyDirection.MINIMIZE,
                                    optuna.study.StudyDirection.MAXIMIZE]


def test_samplers_and_pruners_by_instance_name_or_mapping(tmp_path):
    random = optuna.samplers.RandomSampler(seed=3)
    made = strategy(tmp_path, optuna_sampler=random,
                    optuna_pruner={"type": "PercentilePruner", "percentile": 25.0})
    assert made.study.sampler is random
    assert isinstance(made.study.pruner, optuna.pruners.PercentilePruner)
    named = strategy(tmp_path, opt_id="named", seed=5, optuna_sampler="RandomSampler",
                     optuna_pruner="optuna.pruners.NopPruner")
    assert isinstance(named.study.sampler, optuna.samplers.RandomSampler)
    assert isinstance(named.study.pruner, optuna.pruners.NopPruner)
    # A sampler named in JSON gets the strategy's seed
    again = strategy(tmp_path, opt_id="again", seed=5, optuna_sampler="RandomSampler")
    assert named.suggest().parameters == again.suggest().parameters
    for bad in ({"type": "NoSuchSampler"}, "MedianPruner", 3, {"type": "TPESampler",
                                                               "nope": 1}):
        with pytest.raises(ConfigError, match="optuna_sampler"):
            strategy(tmp_path, opt_id="bad", optuna_sampler=bad)


def test_pruning_only_from_min_iteration_per_job_on(tmp_path):
    made = strategy(tmp_path, min_iteration_per_job=3, optuna_pruner=optuna.pruners.
                    MedianPruner(n_startup_trials=3, n_warmup_steps=0), seed=1)
    for _ in range(3):  # three complete trials with low curves
        good = made.suggest()
        for step in range(6):
            assert made.on_report(good.trial_id, step, [1.0 / (1 + step)]) is Decision.CONTINUE
        made.on_result(good.trial_id, [1.0 / 6])
    bad = made.suggest()
    answers = [made.on_report(bad.trial_id, step, [100.0]) for step in range(5)]
    assert answers == [Decision.CONTINUE] * 3 + [Decision.STOP, Decision.STOP]
    made.on_result(bad.trial_id, [100.0])
    frozen = made.study.trials[-1]
    assert frozen.state is optuna.trial.TrialState.PRUNED
    assert frozen.intermediate_values == {step: 100.0 for step in range(5)}
    # NaN reports are skipped, a NaN or missing result fails the trial
    failed = made.suggest()
    assert made.on_report(failed.trial_id, 4, [math.nan]) is Decision.CONTINUE
    made.on_result(failed.trial_id, None)
    assert made.study.trials[-1].state is optuna.trial.TrialState.FAIL


def test_no_pruning_with_several_objectives(tmp_path):
    two = [*MIN, Objective("acc", "val", "max")]
    made = strategy(tmp_path, two, optuna_pruner=optuna.pruners.MedianPruner(
        n_startup_trials=1, n_warmup_steps=0), seed=1)
    for value in (0.1, 0.2):
        good = made.suggest()
        made.on_report(good.trial_id, 1, [value, 0.9])
        made.on_result(good.trial_id, [value, 0.9])
    bad = made.suggest()
    assert all(made.on_report(bad.trial_id, step, [100.0, 0.0]) is Decision.CONTINUE
               for step in range(10))
    made.on_result(bad.trial_id, [100.0, 0.0])
    assert [t.values for t in made.study.trials] == [[0.1, 0.9], [0.2, 0.9], [100.0, 0.0]]


def test_restore_fails_orphans_and_tells_a_rebuilt_trial_pruned_and_a_result_once(
        tmp_path):
    # That a restored strategy goes on exactly as one never stopped (the sampler's
    # random sequence, reports and pruning of running trials) is the contract suite's
    # (tests/test_strategy_contract.py); here, what happens in the study itself.
    made = strategy(tmp_path, optuna_pruner=optuna.pruners.MedianPruner(
        n_startup_trials=1, n_warmup_steps=0), seed=2)
    done = made.suggest()
    made.on_report(done.trial_id, 0, [0.1])
    made.on_result(done.trial_id, [0.1])
    running = made.suggest()
    orphan = made.suggest()  # asked, then the controller died before it saved
    saved = json.loads(json.dumps(made.state()))
    saved["running"].pop(orphan.trial_id)

    resumed = strategy(tmp_path, optuna_pruner=optuna.pruners.MedianPruner(
        n_startup_trials=1, n_warmup_steps=0), seed=2)
    resumed.restore(saved)
    states = {t.number: t.state for t in resumed.study.trials}
    assert states[2] is optuna.trial.TrialState.FAIL  # the orphan
    # The running trial's Trial is rebuilt: reports and pruning work, then the tell
    assert resumed.on_report(running.trial_id, 0, [5.0]) is Decision.STOP
    resumed.on_result(running.trial_id, [5.0])
    assert resumed.study.trials[1].state is optuna.trial.TrialState.PRUNED
    # A result told already (crash before the save) is not told twice
    resumed.on_result(done.trial_id, [0.2])
    assert resumed.study.trials[0].value == 0.1


def test_continue_previous_study_by_name_and_in_memory(tmp_path):
    first = strategy(tmp_path, seed=1, opt_id="first")
    for _ in range(3):
        s = first.suggest()
        first.on_result(s.trial_id, [objective_of(s.parameters)])
    by_name = strategy(tmp_path, opt_id="second", continue_previous_study="hpo-first")
    assert by_name.study.study_name == "hpo-first" and len(by_name.study.trials) == 3
    assert by_name.suggest().trial_id == "optuna-3"
    memory = optuna.create_study()
    memory.enqueue_trial({"x": 0.0})
    memory.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=2)
    copied = strategy(tmp_path, opt_id="third", continue_previous_study=memory)
    assert copied.study.study_name == "hpo-third"
    assert [t.value for t in copied.study.trials] == [t.value for t in memory.trials]


def dashboard_study(storage_url: str, study_name: str) -> dict[str, Any]:
    """The study as optuna-dashboard serves it, opened from a storage URL the way
    ``optuna-dashboard <url>`` opens it."""
    dashboard = pytest.importorskip("optuna_dashboard")
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard._storage_url import get_storage

    app = dashboard.wsgi(get_storage(storage_url))

    def get(path: str) -> Any:
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path}
        setup_testing_defaults(environ)
        status: list[str] = []
        body = b"".join(app(environ, lambda s, h, e=None: status.append(s)))
        assert status == ["200 OK"], (path, status, body[:500])
        return json.loads(body)

    [summary] = [s for s in get("/api/studies")["study_summaries"]
                 if s["study_name"] == study_name]
    return get(f"/api/studies/{summary['study_id']}")


def test_optuna_dashboard_reads_the_study_from_the_store_url(tmp_path):
    made = strategy(tmp_path, seed=1)
    for _ in range(3):
        s = made.suggest()
        made.on_report(s.trial_id, 0, [objective_of(s.parameters) + 1])
        made.on_result(s.trial_id, [objective_of(s.parameters)])
    study = dashboard_study(f"sqlite:///{tmp_path / 'store.db'}", "hpo-opt-id")
    assert len(study["trials"]) == 3 and study["has_intermediate_values"]
    assert {t["state"] for t in study["trials"]} == {"Complete"}


def test_a_sampler_instance_passes_through_hyper_parameter_optimizer(tmp_path, monkeypatch):
    from hpo.store import open_store

    monkeypatch.setenv("HPO_HOME", str(tmp_path / "home"))
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    base = store.create_task("p", "base", parameters={"General/x": 0.0}).id
    opt = HyperParameterOptimizer(
        base_task_id=base, hyper_parameters=[UniformParameterRange("x", 0.0, 1.0)],
        objective_metric_title="loss", objective_metric_series="total",
        optimizer_class=OptimizerOptuna, auto_connect_task=False, store=store,
        optuna_sampler=optuna.samplers.RandomSampler(seed=1))
    assert isinstance(opt.get_optimizer().study.sampler, optuna.samplers.RandomSampler)
    # and a resume gets it back from the saved configuration
    resumed = HyperParameterOptimizer.resume(opt.id, store=store)
    assert isinstance(resumed.config.strategy_kwargs["optuna_sampler"],
                      optuna.samplers.RandomSampler)


# ----- end to end: real agents ---------------------------------------------------------

# Imported here: these fixtures and helpers start real agents.
from tests import test_controller  # noqa: E402
from tests.agents import env_for, running_agent, wait_for  # noqa: E402

# The controller tests' fixtures: the embedded store and broker, and Redis + PostgreSQL.
backend, store, broker = test_controller.backend, test_controller.store, test_controller.broker
base_task = test_controller.base_task

SCRIPTS = Path(__file__).parent / "scripts"


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_pruner_passed_in_prunes_jobs_and_the_study_is_in_the_store(
        store, hpo_env, tmp_path, broker, queue_name, base_task, backend):
    # loss = (x - 0.3)**2 + 1/(1 + step): above 1.5 at step 2, so pruned, where
    # |x - 0.3| > 1.08; a pruned job would run 0.9 s more
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name):
        opt = HyperParameterOptimizer(
            base_task_id=base_task,
            hyper_parameters=[UniformParameterRange("x", -3.0, 3.0),
                              DiscreteParameterRange("steps", [20]),
                              DiscreteParameterRange("sleep", [0.05])],
            objective_metric_title="loss", objective_metric_series="total",
            objective_metric_sign="min", optimizer_class=OptimizerOptuna,
            max_number_of_concurrent_tasks=1, execution_queue=queue_name,
            total_max_jobs=6, min_iteration_per_job=2, auto_connect_task=False,
            store=store, seed=3,
            optuna_pruner={"type": "ThresholdPruner", "upper": 1.5})
        opt.start()
        assert opt.wait(timeout=150)
    jobs = store.find_tasks(parent=opt.id)
    assert len(jobs) == 6 and all(j.status in FINAL_STATUSES for j in jobs)
    pruned = [j for j in jobs if j.status is Status.stopped]
    assert pruned, [(j.status.value, j.parameters["General/x"]) for j in jobs]
    assert all("early-stopped" in (j.status_message or "") for j in pruned)
    study = optuna.load_study(study_name=f"hpo-{opt.id}", storage=backend[0])
    states = {t.number: t.state for t in study.trials}
    assert len(states) == 6
    by_trial = {j.tags[1].removeprefix("trial:optuna-"): j for j in jobs}
    for number, state in states.items():
        job = by_trial[str(number)]
        x = job.parameters["General/x"]
        assert study.trials[number].params["x"] == x
        if job.status is Status.stopped:
            assert state is optuna.trial.TrialState.PRUNED and abs(x - 0.3) > 1.05
            # never before min_iteration_per_job
            assert max(study.trials[number].intermediate_values) >= 2
        elif abs(x - 0.3) < 1.0:
            assert state is optuna.trial.TrialState.COMPLETE
            assert len(study.trials[number].intermediate_values) == 20
    # optuna-dashboard opens the store's URL (hpo's own tables beside Optuna's)
    served = dashboard_study(backend[0], f"hpo-{opt.id}")
    assert sorted(t["state"] for t in served["trials"]) == sorted(
        s.name.capitalize() for s in states.values())


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_study_resumed_after_a_controller_sigkill_keeps_its_earlier_trials(
        store, hpo_env, tmp_path, broker, queue_name, base_task, backend):
    total = 8
    env = env_for(hpo_env, broker)
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--concurrency", "2"):
        proc = subprocess.Popen([sys.executable, str(SCRIPTS / "optuna_run_optimizer.py"),
                                 base_task, queue_name, str(total)], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        opt_id = proc.stdout.readline().strip()
        storage = backend[0]
        # Jobs ran, so the controller made the study (and Optuna's tables) by now
        wait_for("three finished jobs", lambda: len(store.find_tasks(
            parent=opt_id, status=[Status.completed])) >= 3, timeout=120)
        rdb = optuna.storages.RDBStorage(storage)

        def told() -> int:
            study = optuna.load_study(study_name=f"hpo-{opt_id}", storage=rdb)
            return sum(t.state is optuna.trial.TrialState.COMPLETE for t in study.trials)

        wait_for("three trials told to the study", lambda: told() >= 3, timeout=60,
                 period=0.1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        before = {t.number: t.state for t in optuna.load_study(
            study_name=f"hpo-{opt_id}", storage=storage).trials}
        assert sum(s is optuna.trial.TrialState.COMPLETE for s in before.values()) >= 3
        opt = HyperParameterOptimizer.resume(opt_id, store=store)
        opt.start()
        assert opt.wait(timeout=120)
    jobs = store.find_tasks(parent=opt_id)
    assert len(jobs) == total and all(j.status is Status.completed for j in jobs)
    assert all(j.attempt == 1 for j in jobs)
    trial_tags = [j.tags[1] for j in jobs]
    assert len(set(trial_tags)) == total  # no trial launched twice
    configs = {(j.parameters["General/x"], j.parameters["General/y"]) for j in jobs}
    assert len(configs) == total  # the resumed sampler did not start its sequence over
    study = optuna.load_study(study_name=f"hpo-{opt_id}", storage=storage)
    after = {t.number: t.state for t in study.trials}
    # Every earlier trial is still there, finished ones unchanged
    for number, state in before.items():
        assert number in after
        if state.is_finished():
            assert after[number] is state
    complete = [t for t in study.trials if t.state is optuna.trial.TrialState.COMPLETE]
    assert len(complete) == total
    assert {f"trial:optuna-{t.number}" for t in complete} == set(trial_tags)
    for trial in complete:
        [job] = [j for j in jobs if j.tags[1] == f"trial:optuna-{trial.number}"]
        assert trial.params["x"] == job.parameters["General/x"]
    assert not [t for t in study.trials if t.state is optuna.trial.TrialState.RUNNING]


OPTUNA_WARNS = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import optuna
from test_optuna import strategy
made = strategy(Path(sys.argv[2]))
optuna.logging.get_logger("optuna.study.study").warning("optuna's own warning")
made.on_result(made.suggest().trial_id, [float("nan")])  # Optuna warns of a NaN
"""


def test_optuna_s_logging_goes_to_the_program_s_log_not_the_user_s_output(tmp_path, caplog):
    # Given a search whose study warns (a NaN result, and a warning of Optuna's own)
    result = subprocess.run([sys.executable, "-c", OPTUNA_WARNS, str(Path(__file__).parent),
                             str(tmp_path)], capture_output=True, text=True, timeout=60,
                            check=True)
    # Then nothing reaches the output of a program that configured no logging
    assert "optuna's own warning" not in result.stderr and result.stderr == "", result.stderr
    # And the program's log has it, where it configured one
    made = strategy(tmp_path, opt_id="in-process")
    caplog.set_level("WARNING")
    optuna.logging.get_logger("optuna.study.study").warning("optuna's own warning")
    made.on_result(made.suggest().trial_id, [float("nan")])
    assert any(r.name.startswith("optuna") and "own warning" in r.getMessage()
               for r in caplog.records)
