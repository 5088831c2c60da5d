"""One validator for an optimization's settings: a bad value gives the same one-line
message from ``HyperParameterOptimizer(...)`` in Python and from an ``hpo.yaml``
(``OptimizerConfig.validate`` checks both, before anything is created)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hpo.controller.optimizer import HyperParameterOptimizer
from hpo.controller.yaml_config import load_optimizer_arguments
from hpo.errors import ConfigError
from hpo.lifecycle import TaskType
from hpo.records import ScriptInfo
from hpo.space.ranges import UniformParameterRange
from hpo.store import Store, open_store

# A bad value of each setting, and the part of the message that names the fix.
BAD: dict[str, tuple[dict[str, Any], str]] = {
    "keep no job": ({"save_top_k_tasks_only": 0},
                    "save_top_k_tasks_only must be a positive integer, not 0: give 1 or "
                    "more, or leave it out to keep every job"),
    "keep a negative number": ({"save_top_k_tasks_only": -3}, "not -3: give 1 or more"),
    "keep true": ({"save_top_k_tasks_only": True}, "save_top_k_tasks_only must be a "
                  "positive integer, not True"),
    "empty spawn project": ({"spawn_project": ""},
                            "spawn_project must be a non-empty string, not '': name a "
                            "project"),
    "blank spawn project": ({"spawn_project": "  "}, "spawn_project must be a non-empty"),
    "number as spawn project": ({"spawn_project": 7}, "spawn_project must be a non-empty "
                                "string, not 7"),
    "empty queue": ({"execution_queue": ""}, "execution_queue must be a non-empty string, "
                    "not '': name a queue, e.g. default"),
    "no concurrency": ({"max_number_of_concurrent_tasks": 0},
                       "max_number_of_concurrent_tasks must be a positive integer, not 0: "
                       "give 1 or more"),
    "words as a job count": ({"total_max_jobs": "many"},
                             "total_max_jobs must be a positive integer, not 'many'"),
    "a zero time limit": ({"time_limit_per_job": 0},
                          "time_limit_per_job must be a positive number of minutes, not 0"),
}


@pytest.fixture
def store(hpo_env: dict[str, str]) -> Store:
    return open_store()


@pytest.fixture
def base_task(store: Store, tmp_path: Path) -> str:
    script = tmp_path / "train.py"
    script.write_text("print('training')\n")
    task = store.create_task("configs", "train", type=TaskType.training,
                             script=ScriptInfo(entry_point=str(script),
                                               working_dir=str(tmp_path)))
    return task.id


def python_message(store: Store, base_task: str, changes: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        HyperParameterOptimizer(
            base_task_id=base_task,
            hyper_parameters=[UniformParameterRange("lr", 0.001, 0.1)],
            objective_metric_title="validation", objective_metric_series="loss",
            objective_metric_sign="min", store=store, auto_connect_task=False,
            **changes)
    return str(caught.value)


def yaml_message(store: Store, base_task: str, changes: dict[str, Any], folder: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_optimizer_arguments(write_yaml(folder, base_task, changes), store)
    return str(caught.value)


def write_yaml(folder: Path, base_task: str, changes: dict[str, Any]) -> Path:
    """The same optimization as python_message's, as an hpo.yaml."""
    path = folder / "hpo.yaml"
    path.write_text(yaml.safe_dump({
        "base_task": base_task,
        "hyper_parameters": [{"type": "uniform", "name": "lr", "min_value": 0.001,
                              "max_value": 0.1}],
        "objective": {"title": "validation", "series": "loss", "sign": "min"}, **changes}))
    return path


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_setting_gives_the_same_message_in_python_and_in_hpo_yaml(
        store, base_task, tmp_path, case):
    # Given one bad setting
    changes, expected = BAD[case]
    # When it is given to HyperParameterOptimizer and written in an hpo.yaml
    from_python = python_message(store, base_task, changes)
    from_yaml = yaml_message(store, base_task, changes, tmp_path)
    # Then both say the same one line, naming the setting and the fix
    assert expected in from_python
    assert "\n" not in from_python
    assert from_yaml == f"hpo.yaml: {from_python}"
    # And nothing was created
    assert [t.id for t in store.find_tasks()] == [base_task]


def test_good_settings_pass_both_paths(store, base_task, tmp_path):
    changes = {"save_top_k_tasks_only": 2, "spawn_project": "sweeps",
               "execution_queue": "gpu", "total_max_jobs": 4}
    arguments = load_optimizer_arguments(write_yaml(tmp_path, base_task, changes), store)
    assert {k: arguments[k] for k in changes} == changes
    optimizer = HyperParameterOptimizer(
        base_task_id=base_task, hyper_parameters=[UniformParameterRange("lr", 0.001, 0.1)],
        objective_metric_title="validation", objective_metric_series="loss",
        store=store, auto_connect_task=False, **changes)
    assert optimizer.config.save_top_k_tasks_only == 2
    assert store.get_task(optimizer.id).project == "sweeps"



def test_a_tuned_name_the_base_task_lacks_is_an_error_before_anything_runs(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'hpo.db'}")
    base = store.create_task("p", "train", parameters={"General/alpha": 0.1,
                                                       "General/epochs": 5, "Args/lr": 0.1})

    def optimizer(name: str, **extra: Any) -> HyperParameterOptimizer:
        return HyperParameterOptimizer(
            base_task_id=base.id, hyper_parameters=[UniformParameterRange(name, 0.0, 1.0)],
            objective_metric_title="loss", objective_metric_series="val",
            auto_connect_task=False, store=store, **extra)

    # A typo: the closest names are offered, and nothing is created
    with pytest.raises(ConfigError, match=r"'alpah' is not a parameter of the base task "
                       r"\(General/alpah\): did you mean General/alpha\?"):
        optimizer("alpah")
    # The right name in another section
    with pytest.raises(ConfigError, match="did you mean Args/lr"):
        optimizer("lr")
    assert store.find_tasks(type=TaskType.optimizer) == []
    # Known names pass, and the opt-in tunes a new one
    optimizer("Args/lr")
    optimizer("General/momentum", allow_new_parameters=True)
    # A base task that records no parameters yet (never ran) cannot be checked
    fresh = store.create_task("p", "fresh")
    HyperParameterOptimizer(
        base_task_id=fresh.id, hyper_parameters=[UniformParameterRange("alpah", 0.0, 1.0)],
        objective_metric_title="loss", objective_metric_series="val",
        auto_connect_task=False, store=store)
