"""Checkpoints: a promoted ASHA job continues its parent's checkpoint instead of
starting over; a script run by hand saves into HPO_HOME."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hpo.automation import HyperParameterOptimizer, UniformParameterRange
from hpo.lifecycle import Status
from hpo.records import ScriptInfo
from hpo.relations import RESUME as RESUME_TAG
from hpo.sdk.checkpoints import saved_iteration
from hpo.store import open_store
from tests.agents import env_for, running_agent

JOB = Path(__file__).parent / "scripts" / "checkpoint_job.py"


def test_a_script_run_by_hand_saves_checkpoints_under_hpo_home(hpo_env, tmp_path):
    from hpo import Task

    task = Task.init(project_name="p", task_name="by hand")
    try:
        (task.checkpoint_dir / "model.bin").write_bytes(b"state")
        task.save_checkpoint(7)
        assert task.checkpoint_dir == Path(hpo_env["HPO_HOME"]) / "checkpoints" / task.id
        assert saved_iteration(task.checkpoint_dir) == 7
        assert task.resume_checkpoint is None and task.resume_iteration == 0
    finally:
        task.close()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_promoted_asha_job_continues_from_its_parents_checkpoint(
        hpo_env, tmp_path, queue_name):
    store = open_store()
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    base = store.create_task("checkpoint-tests", "job", script=ScriptInfo(
        entry_point=str(JOB), working_dir=str(tmp_path), interpreter=sys.executable),
        parameters={"General/x": 0.5, "General/steps": 40, "General/sleep": 0.15}).id
    with running_agent(store, env_for(hpo_env, broker), tmp_path, "--queue", queue_name,
                       "--concurrency", "2"):
        opt = HyperParameterOptimizer(
            base_task_id=base, hyper_parameters=[UniformParameterRange("x", 0.0, 1.0)],
            objective_metric_title="loss", objective_metric_series="total",
            objective_metric_sign="min", optimizer_class="asha", eta=3, seed=3,
            min_iteration_per_job=1, max_iteration_per_job=9, total_max_jobs=8,
            max_number_of_concurrent_tasks=2, execution_queue=queue_name,
            auto_connect_task=False, store=store, broker_url=broker)
        opt.start()
        assert opt.wait(timeout=180)
    jobs = store.find_tasks(parent=opt.id)
    promoted = [j for j in jobs if any(t.startswith(RESUME_TAG) for t in j.tags)]
    assert promoted, [j.tags for j in jobs]
    for job in promoted:
        parent_id = next(t for t in job.tags if t.startswith(RESUME_TAG))[len(RESUME_TAG):]
        parent = store.get_task(parent_id)
        assert parent.parameters["General/x"] == job.parameters["General/x"]
        assert job.status in (Status.completed, Status.stopped)
        home = Path(hpo_env["HPO_HOME"]) / "checkpoints"
        parent_saved = saved_iteration(home / parent_id)
        first = min(s.iteration for s in store.task_scalars(job.id, title="loss"))
        # It did not start over: its first report follows the parent's checkpoint.
        assert parent_saved is not None and first == parent_saved + 1
        seen = json.loads((home / job.id / "state.json").read_text())["seen"]
        # The parent's steps, then its own: no step missing (one may repeat when a stop
        # fell between the state's write and the checkpoint record).
        assert seen[0] == 0 and sorted(set(seen)) == list(range(max(seen) + 1))
