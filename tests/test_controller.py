"""The controller end to end: real agents, real scripts, every limit and budget."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from hpo.automation import (
    DiscreteParameterRange,
    HyperParameterOptimizer,
    UniformIntegerParameterRange,
    UniformParameterRange,
)
from hpo.lifecycle import FINAL_STATUSES, Status
from hpo.records import ScriptInfo
from hpo.store import Store, open_store
from tests.agents import env_for, running_agent, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
JOB = Path(__file__).parent / "scripts" / "objective_job.py"


@pytest.fixture(params=["embedded", pytest.param("redis+postgres", marks=[
    pytest.mark.redis, pytest.mark.postgres])])
def backend(request: pytest.FixtureRequest, hpo_env: dict[str, str], tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(store URL, broker URL): the embedded default, and Redis with PostgreSQL."""
    if request.param == "embedded":
        urls = (hpo_env["HPO_STORE_URL"], f"sqla+sqlite:///{tmp_path / 'broker.db'}")
    else:
        from tests.conftest import REDIS_URL, missing_service, redis_answers

        if not redis_answers(REDIS_URL):
            missing_service(f"Redis at {REDIS_URL}")
        urls = (request.getfixturevalue("pg_database_url"), REDIS_URL)
    monkeypatch.setenv("HPO_STORE_URL", urls[0])
    monkeypatch.setenv("HPO_BROKER_URL", urls[1])
    hpo_env.update(HPO_STORE_URL=urls[0], HPO_BROKER_URL=urls[1])
    return urls


@pytest.fixture
def store(backend: tuple[str, str]) -> Store:
    return open_store(backend[0])


@pytest.fixture
def broker(backend: tuple[str, str]) -> str:
    return backend[1]


@pytest.fixture
def base_task(store: Store, tmp_path: Path) -> str:
    script = ScriptInfo(entry_point=str(JOB), working_dir=str(tmp_path),
                        interpreter=sys.executable)
    return store.create_task("controller-tests", "objective", script=script, parameters={
        "General/x": 0.0, "General/y": 1, "General/steps": 5, "General/sleep": 0.0,
        "General/fail": False, "General/nan": False, "General/silent": False}).id


def optimizer(store: Store, base: str, queue: str, **kwargs: object) -> HyperParameterOptimizer:
    settings: dict[str, object] = dict(
        base_task_id=base,
        hyper_parameters=[UniformParameterRange("x", 0.0, 1.0, step_size=0.1),
                          UniformIntegerParameterRange("y", 1, 3)],
        objective_metric_title="loss", objective_metric_series="total",
        objective_metric_sign="min", optimizer_class="random",
        max_number_of_concurrent_tasks=2, execution_queue=queue, total_max_jobs=4,
        auto_connect_task=False, store=store, seed=1)
    settings.update(kwargs)
    return HyperParameterOptimizer(**settings)  # type: ignore[arg-type]


def children(store: Store, opt: HyperParameterOptimizer):  # type: ignore[no-untyped-def]
    return store.find_tasks(parent=opt.id)


def test_an_optimization_runs_exactly_total_max_jobs_and_ranks_them(
        store, hpo_env, tmp_path, broker, queue_name, base_task):
    done: list[tuple[str, float | None]] = []
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "2"):
        opt = optimizer(store, base_task, queue_name, total_max_jobs=5)
        opt.start(job_complete_callback=lambda job, value, it, params, top: done.append(
            (job, value)))
        assert opt.wait(timeout=180)
    jobs = children(store, opt)
    assert len(jobs) == 5 and len(done) == 5
    assert all(j.status is Status.completed for j in jobs)
    # Children: named after the base with their values, tagged, parented, typed
    for job in jobs:
        assert job.name.startswith("objective: x=") and " y=" in job.name
        assert f"optimizer:{opt.id}" in job.tags
        assert isinstance(job.parameters["General/y"], int)
        assert isinstance(job.parameters["General/x"], float)
    top = opt.get_top_experiments_details(top_k=3)
    values = [d["objective"] for d in top]
    assert values == sorted(values) and len(values) == 3
    assert top[0]["iteration"] == 4
    assert opt.get_top_experiments(1)[0].id == top[0]["task_id"]
    assert store.get_task(opt.id).status is Status.completed


def test_wakeups_that_never_arrive_only_delay_the_jobs_to_the_fallback_poll(
        store, hpo_env, tmp_path, broker, queue_name, base_task, monkeypatch):
    # Given a controller that listens to the store but never hears a thing (every
    # wake-up lost), so that only its fallback poll (CONTROLLER_FALLBACK_POLL_S) runs
    from hpo.controller.controller import Controller

    listeners = []
    listen = Controller._listen
    monkeypatch.setattr(Controller, "_listen", lambda self: listeners.append(
        listen(self)) or listeners[-1])
    monkeypatch.setattr(Controller, "_on_change", lambda self, task_id: None)
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "2"):
        opt = optimizer(store, base_task, queue_name, total_max_jobs=3)
        opt.start()
        assert opt.wait(timeout=180)
    # Then it listened (it did not poll fast instead), and nothing was lost
    assert listeners and listeners[0] is not None
    jobs = children(store, opt)
    assert len(jobs) == 3 and all(j.status is Status.completed for j in jobs)
    assert store.get_task(opt.id).status is Status.completed


def test_a_stop_asked_in_the_store_whose_wake_up_is_lost_still_ends_the_optimization(
        store, base_task, queue_name, monkeypatch):
    # Given a controller that listens to the store but hears nothing (the optimizer's
    # own row is then read only at its fallback poll), and no agent: its jobs wait queued
    from hpo.controller.controller import Controller

    monkeypatch.setattr(Controller, "_on_change", lambda self, change: None)
    opt = optimizer(store, base_task, queue_name, total_max_jobs=10)
    opt.start()
    wait_for("the first two jobs", lambda: len(children(store, opt)) == 2, timeout=60)
    # When a stop is asked from elsewhere, as `hpo-controller stop` asks it
    store.request_stop(opt.id, "stopped by hpo-controller stop")
    # Then the run ends as stopped, its queued jobs stopped, none launched after
    assert opt.wait(timeout=60)
    assert opt.controller.outcome is not None and "stopped by request" in opt.controller.outcome
    jobs = children(store, opt)
    assert len(jobs) == 2 and all(j.status is Status.stopped for j in jobs)


def test_queued_plus_running_never_exceed_the_concurrency_limit(
        store, hpo_env, tmp_path, broker, queue_name, base_task):
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "3"):
        opt = optimizer(store, base_task, queue_name, total_max_jobs=6,
                        max_number_of_concurrent_tasks=2,
                        hyper_parameters=[UniformParameterRange("x", 0.0, 1.0, step_size=0.1),
                                          DiscreteParameterRange("sleep", [0.05])])
        opt.start()
        peak = 0
        while opt.is_active():
            active = [t for t in children(store, opt)
                      if t.status in (Status.queued, Status.running, Status.created)]
            peak = max(peak, len(active))
            time.sleep(0.02)
    assert 1 <= peak <= 2
    assert len(children(store, opt)) == 6


def test_a_job_reaching_max_iteration_is_stopped_and_its_objective_counts(
        store, hpo_env, tmp_path, broker, queue_name, base_task):
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "2"):
        opt = optimizer(store, base_task, queue_name, total_max_jobs=2,
                        max_iteration_per_job=3,
                        hyper_parameters=[UniformParameterRange("x", 0.0, 1.0, step_size=0.5),
                                          DiscreteParameterRange("steps", [10_000]),
                                          DiscreteParameterRange("sleep", [0.02])])
        opt.start()
        assert opt.wait(timeout=120)
    for job in children(store, opt):
        assert job.status is Status.stopped
        assert "max_iteration_per_job" in (job.status_message or "")
        last = max(s.iteration for s in store.task_scalars(job.id, title="loss"))
        assert 3 <= last < 3 + 50  # stopped within a second (sleep 0.02 s per step)
    assert len(opt.get_top_experiments(2)) == 2  # the objectives of stopped jobs count


def test_failed_silent_and_nan_jobs_count_as_failed_and_the_search_goes_on(
        store, hpo_env, tmp_path, broker, queue_name, base_task):
    from hpo.automation import ParameterSet

    combos = ParameterSet([{"fail": True}, {"silent": True}, {"nan": True}, {"fail": False}])
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "2"):
        opt = optimizer(store, base_task, queue_name, total_max_jobs=4, optimizer_class="grid",
                        hyper_parameters=[combos])
        results: dict[str, float | None] = {}
        opt.start(job_complete_callback=lambda job, value, *_: results.__setitem__(job, value))
        assert opt.wait(timeout=120)
    assert len(results) == 4
    assert sorted(v is None for v in results.values()) == [False, True, True, True]
    details = opt.get_top_experiments_details(top_k=5)
    [best] = details
    assert best["hyper_parameters"] == {"fail": False}


def test_time_limit_per_job_stops_a_job(store, hpo_env, tmp_path, broker, queue_name,
                                        base_task):
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name):
        opt = optimizer(store, base_task, queue_name, total_max_jobs=1,
                        time_limit_per_job=1 / 60,  # one second
                        hyper_parameters=[DiscreteParameterRange("steps", [10_000]),
                                          DiscreteParameterRange("sleep", [0.01])])
        opt.start()
        assert opt.wait(timeout=60)
    [job] = children(store, opt)
    assert job.status is Status.stopped and "time limit" in (job.status_message or "")


def test_optimization_time_limit_stops_every_job_and_ends_cleanly(
        store, hpo_env, tmp_path, broker, queue_name, base_task):
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "2"):
        opt = optimizer(store, base_task, queue_name, total_max_jobs=10,
                        optimization_time_limit=2 / 60,  # two seconds
                        hyper_parameters=[UniformParameterRange("x", 0.0, 1.0, step_size=0.1),
                                          DiscreteParameterRange("steps", [10_000]),
                                          DiscreteParameterRange("sleep", [0.01])])
        started = time.monotonic()
        opt.start()
        assert opt.wait(timeout=60)
        took = time.monotonic() - started
    jobs = children(store, opt)
    assert all(j.status in FINAL_STATUSES for j in jobs)
    assert len(jobs) == 2  # the two first jobs never ended on their own
    assert took < 30
    assert "optimization_time_limit" in (store.get_task(opt.id).status_message or "")


def test_compute_time_limit_counts_the_running_time_of_all_jobs(
        store, hpo_env, tmp_path, broker, queue_name, base_task):
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "2"):
        opt = optimizer(store, base_task, queue_name, total_max_jobs=10,
                        compute_time_limit=3 / 60,  # three job-seconds: 1.5 s with 2 jobs
                        hyper_parameters=[UniformParameterRange("x", 0.0, 1.0, step_size=0.1),
                                          DiscreteParameterRange("steps", [10_000]),
                                          DiscreteParameterRange("sleep", [0.01])])
        opt.start()
        assert opt.wait(timeout=60)
    jobs = children(store, opt)
    assert len(jobs) == 2 and all(j.status is Status.stopped for j in jobs)
    used = sum(j.ended_at - j.started_at for j in jobs)
    assert 3 <= used < 3 + 2 * 3  # reached, then stopped (grace included)
    assert "compute_time_limit" in (store.get_task(opt.id).status_message or "")


def test_bad_settings_are_clear_errors_before_anything_is_launched(store, base_task, broker):
    from hpo.errors import ConfigError, TaskNotFound

    before = len(store.find_tasks(type="optimizer"))
    with pytest.raises(ConfigError, match="larger than max_iteration_per_job"):
        optimizer(store, base_task, "q", min_iteration_per_job=10, max_iteration_per_job=5)
    with pytest.raises(ConfigError, match="unknown strategy"):
        optimizer(store, base_task, "q", optimizer_class="nope")
    with pytest.raises(TaskNotFound):
        optimizer(store, "0" * 32, "q")
    with pytest.raises(ConfigError, match="objective_metric_sign"):
        optimizer(store, base_task, "q", objective_metric_sign="up")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        optimizer(store, base_task, "q", not_a_strategy_option=1)
    assert len(store.find_tasks(type="optimizer")) == before  # nothing was created


def wait_optimizer_done(store: Store, opt_id: str) -> None:
    wait_for("the optimizer task to end",
             lambda: store.get_task(opt_id).status in FINAL_STATUSES, timeout=120)


def test_a_controller_killed_mid_run_resumes_and_finishes_the_same_budget_exactly(
        store, hpo_env, tmp_path, broker, queue_name, base_task):
    import signal
    import subprocess

    total = 8
    script = Path(__file__).parent / "scripts" / "run_optimizer.py"
    env = env_for(hpo_env, broker)
    with running_agent(store, env, tmp_path, "--queue", queue_name, "--concurrency", "2"):
        proc = subprocess.Popen([sys.executable, str(script), base_task, queue_name,
                                 str(total)], env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        opt_id = proc.stdout.readline().strip()
        # When the controller is SIGKILLed after some jobs finished, others running
        wait_for("three finished jobs", lambda: len(store.find_tasks(
            parent=opt_id, status=[Status.completed])) >= 3, timeout=120)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        killed_at = {t.id for t in store.find_tasks(parent=opt_id)}
        # Then resume finishes the same budget
        opt = HyperParameterOptimizer.resume(opt_id, store=store)
        opt.start()
        finished = opt.wait(timeout=120)
        assert finished, [(t.status.value, t.tags[1], t.queue, t.attempt) for t in
                          store.find_tasks(parent=opt_id)]
    jobs = store.find_tasks(parent=opt_id)
    assert len(jobs) == total
    assert killed_at <= {j.id for j in jobs}
    assert all(j.status is Status.completed for j in jobs)
    # Grid search: each combination exactly once, none run twice
    combos = [(j.parameters["General/x"], j.parameters["General/sleep"]) for j in jobs]
    assert len(set(combos)) == total
    assert all(j.attempt == 1 for j in jobs)
    assert len(opt.get_top_experiments(total)) == total
    assert store.get_task(opt_id).status is Status.completed


def test_the_seed_example_runs_with_only_its_imports_changed(
        store, hpo_env, tmp_path, broker, base_task):
    import subprocess

    scripts = Path(__file__).parent / "scripts"
    template = store.create_task("Hyper-Parameter Optimization", "seed template",
                                 script=ScriptInfo(entry_point=str(scripts / "seed_train.py"),
                                                   working_dir=str(tmp_path),
                                                   interpreter=sys.executable))
    env = {**env_for(hpo_env, broker), "TEMPLATE_TASK_ID": template.id}
    with running_agent(store, env, tmp_path, "--queue", "default", "--concurrency", "2"):
        result = subprocess.run([sys.executable, str(scripts / "seed_example.py")], env=env,
                                capture_output=True, text=True, timeout=200, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    [opt] = store.find_tasks(name="Automatic Hyper-Parameter Optimization")
    assert opt.type == "optimizer" and opt.status is Status.completed
    jobs = store.find_tasks(parent=opt.id)
    assert len(jobs) == 20
    assert all(j.status in FINAL_STATUSES for j in jobs)
    for job in jobs:
        epochs = job.parameters["General/number_of_epochs"]
        assert isinstance(epochs, int)
        assert isinstance(job.parameters["General/dropout"], float)
        if epochs > 10:  # would run past max_iteration_per_job: stopped within a second
            assert job.status is Status.stopped
            last = max(s.iteration for s in store.task_scalars(job.id, title="accuracy"))
            assert last < 150000 + 4 * 15000  # 0.3 s per 15,000 iterations
    assert "top: [" in result.stdout


def test_a_clone_name_is_cut_to_what_the_store_holds() -> None:
    from hpo.controller.controller import _clone_name
    from hpo.defaults import MAX_TASK_NAME_LEN

    assert _clone_name("train", "lr=0.1 depth=3") == "train: lr=0.1 depth=3"
    many = " ".join(f"Args/parameter_{i}=0.123456" for i in range(40))
    name = _clone_name("train", many)
    assert len(name) == MAX_TASK_NAME_LEN and name.endswith("…")
    assert name.startswith("train: Args/parameter_0=0.123456")
