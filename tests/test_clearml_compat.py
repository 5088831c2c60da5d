"""docs/clearml.md's compatibility table, made here and checked against the code: every
"yes" row exists in hpo and takes ClearML's parameters (names recorded below, from
ClearML 1.x's Task, Logger and task_parameters), in ClearML's order; every "no" row is
absent and calling it raises NotImplementedError naming docs/clearml.md with the reason
(hpo.sdk.unsupported holds the reasons).

    HPO_WRITE_DOCS=1 pytest tests/test_clearml_compat.py   # rewrites the table in the doc
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

import pytest

import hpo.task_parameters as task_parameters
from hpo import Logger, Task
from hpo.sdk import unsupported

DOC = Path(__file__).resolve().parents[1] / "docs" / "clearml.md"
BEGIN = "<!-- compatibility table: made by tests/test_clearml_compat.py -->"
END = "<!-- end of the compatibility table -->"

# ClearML's parameter names, in ClearML's order ("*x" and "**x": its variadic ones).
TASK: dict[str, tuple[list[str], str]] = {
    "init": (["project_name", "task_name", "task_type", "tags", "reuse_last_task_id",
              "continue_last_task", "output_uri", "auto_connect_arg_parser",
              "auto_connect_frameworks", "auto_resource_monitoring", "auto_connect_streams",
              "deferred_init"],
             "continue_last_task, output_uri and the auto_connect_* options are accepted "
             "and change nothing; stdout/stderr are always kept"),
    "current_task": ([], ""),
    "running_locally": ([], ""),
    "get_task": (["task_id", "project_name", "task_name", "tags", "allow_archived",
                  "task_filter"], "task_name is the exact name; hpo archives nothing"),
    "get_tasks": (["task_ids", "project_name", "task_name", "tags", "allow_archived",
                   "task_filter"],
                  "task_name is a regular expression; tags: any, `__$all`, `-tag`, "
                  "`__$not`; task_filter: status, type, parent, tags, order_by"),
    "clone": (["source_task", "name", "comment", "parent", "project"], ""),
    "enqueue": (["task", "queue_name", "queue_id", "force"],
                "a queue's id is its name"),
    "dequeue": (["task"], ""),
    "connect": (["mutable", "name", "ignore_remote_overrides"],
                "dicts, argparse Namespaces, objects (TaskParameters); a dict's later "
                "changes are recorded"),
    "connect_configuration": (["configuration", "name", "description",
                               "ignore_remote_overrides"],
                              "dicts and files; kept as parameter `Configuration/<name>` "
                              "(editable in a clone); description not kept"),
    "get_configuration_object": (["name"], ""),
    "get_configuration_object_as_dict": (["name"], "a dict or JSON text"),
    "set_configuration_object": (["name", "config_text", "description", "config_type",
                                  "config_dict"], "description and config_type not kept"),
    "get_parameters": (["backwards_compatibility", "cast"],
                       "values always keep their types (ClearML's cast=True)"),
    "get_parameters_as_dict": (["cast"], "values always keep their types"),
    "get_parameter": (["name", "default", "cast"], ""),
    "set_parameters": (["*args", "**kwargs"], ""),
    "set_parameter": (["name", "value", "description", "value_type"],
                      "description and value_type not kept"),
    "set_user_properties": (["*iterables", "**properties"],
                            "kept as parameters `properties/<name>`; descriptions not kept"),
    "get_user_properties": (["value_only"], ""),
    "add_tags": (["tags"], ""),
    "get_tags": ([], ""),
    "set_tags": (["tags"], ""),
    "set_name": (["name"], ""),
    "set_comment": (["comment"], ""),
    "execute_remotely": (["queue_name", "clone", "exit_process"],
                         "a no-op under an agent"),
    "upload_artifact": (["name", "artifact_object", "metadata", "delete_after_upload",
                         "auto_pickle", "preview", "wait_on_upload", "extension_name",
                         "serialization_function", "retries", "sort_keys"],
                        "files, folders (zip), dicts (JSON), numpy (.npz), pandas "
                        "(.csv.gz), strings, pickles; written at once; a URL object is "
                        "refused; extension_name not supported"),
    "register_artifact": (["name", "artifact", "metadata", "uniqueness_columns"],
                          "a DataFrame uploaded on task.flush() and at the end (no "
                          "background sync); uniqueness_columns not used"),
    "unregister_artifact": (["name"], ""),
    "get_registered_artifacts": ([], ""),
    "get_logger": ([], ""),
    "flush": (["wait_for_uploads"], ""),
    "close": ([], ""),
    "mark_completed": (["ignore_errors", "status_message", "force"], ""),
    "mark_failed": (["ignore_errors", "status_reason", "status_message", "force"], ""),
    "mark_stopped": (["force", "status_message"], ""),
    "get_status": ([], ""),
    "get_last_scalar_metrics": ([], ""),
    "get_project_name": ([], ""),
}
TASK_PROPERTIES = {"id": "", "name": "settable", "comment": "settable",
                   "artifacts": "`task.artifacts[name].get()`, `.get_local_copy()`",
                   "status": "", "task_type": ""}

LOGGER: dict[str, tuple[list[str], str]] = {
    "current_logger": ([], ""),
    "report_scalar": (["title", "series", "value", "iteration"], ""),
    "report_single_value": (["name", "value"], "kept as scalar `Summary/<name>`"),
    "report_text": (["msg", "level", "print_console", "*args", "**_"],
                    "a log line; print_console=False: logged, not printed"),
    "report_table": (["title", "series", "iteration", "table_plot", "csv", "url",
                      "extra_layout", "extra_data"],
                     "DataFrame or list of rows; url refused (no downloads)"),
    "report_histogram": (["title", "series", "values", "iteration", "labels", "xlabels",
                          "xaxis", "yaxis", "mode", "data_args", "extra_layout"], ""),
    "report_vector": (["title", "series", "values", "iteration", "labels", "xlabels",
                       "xaxis", "yaxis", "mode", "extra_layout"], ""),
    "report_scatter2d": (["title", "series", "scatter", "iteration", "xaxis", "yaxis",
                          "labels", "mode", "comment", "extra_layout"], ""),
    "report_confusion_matrix": (["title", "series", "matrix", "iteration", "xaxis",
                                 "yaxis", "xlabels", "ylabels", "yaxis_reversed",
                                 "comment", "extra_layout"], ""),
    "report_matrix": (["title", "series", "matrix", "iteration", "xaxis", "yaxis",
                       "xlabels", "ylabels", "yaxis_reversed", "extra_layout"], ""),
    "report_plotly": (["title", "series", "figure", "iteration"], ""),
    "report_matplotlib_figure": (["title", "series", "figure", "iteration", "report_image",
                                  "report_interactive"],
                                 "kept as a PNG image (not converted to an interactive plot)"),
    "report_image": (["title", "series", "iteration", "local_path", "image", "matrix",
                      "max_image_history", "delete_after_upload", "url"],
                     "a file, PIL image or pixel array (PNG); a url is kept as a link; "
                     "every image is kept (max_image_history ignored)"),
    "report_media": (["title", "series", "iteration", "local_path", "stream",
                      "file_extension", "max_history", "delete_after_upload", "url"],
                     "every file is kept (max_history ignored)"),
    "flush": ([], ""),
}

PARAMETERS: dict[str, tuple[list[str], str]] = {
    "param": (["validator", "range", "type", "desc", "metadata", "*args", "**kwargs"],
              "default= or factory=; no attrs needed"),
    "percent_param": (["*args", "**kwargs"], ""),
    "range_validator": (["min_value", "max_value"], ""),
    "TaskParameters.to_dict": ([], ""),
    "TaskParameters.update_from_dict": (["source_dict"], ""),
    "TaskParameters.connect": (["task"], ""),
}


def _names(function: Any) -> list[str]:
    marks = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return [marks.get(p.kind, "") + p.name for p in inspect.signature(function).parameters.values()
            if p.name not in ("self", "cls")]


def _check(function: Any, clearml: list[str]) -> None:
    """Every ClearML parameter is taken (by name, or by a **kwargs catching the rest),
    and hpo names no parameter ClearML does not have, in ClearML's order."""
    ours = _names(function)
    named = [n for n in ours if not n.startswith("*")]
    wanted = [n for n in clearml if not n.startswith("*")]
    assert named == [n for n in wanted if n in named], (function, ours, clearml)
    catch_all = any(n.startswith("**") for n in ours)
    missing = [n for n in wanted if n not in named]
    assert catch_all or not missing, (function, missing)
    # ClearML's *args / **kwargs are taken too (hpo may add a **catch-all of its own).
    kinds = {n[:2] if n.startswith("**") else n[:1] for n in ours if n.startswith("*")}
    assert {n[:2] if n.startswith("**") else n[:1] for n in clearml
            if n.startswith("*")} <= kinds, (function, ours, clearml)


@pytest.mark.parametrize("name", sorted(TASK))
def test_a_supported_task_call_takes_clearmls_parameters(name):
    _check(getattr(Task, name), TASK[name][0])


@pytest.mark.parametrize("name", sorted(LOGGER))
def test_a_supported_logger_call_takes_clearmls_parameters(name):
    _check(getattr(Logger, name), LOGGER[name][0])


@pytest.mark.parametrize("name", sorted(PARAMETERS))
def test_task_parameters_take_clearmls_parameters(name):
    owner, _, attr = name.rpartition(".")
    holder = getattr(task_parameters, owner) if owner else task_parameters
    _check(getattr(holder, attr), PARAMETERS[name][0])


@pytest.mark.parametrize("name", sorted(TASK_PROPERTIES))
def test_a_task_property_is_there(name):
    assert isinstance(inspect.getattr_static(Task, name), property)


@pytest.mark.parametrize(("owner", "name"), [("Task", n) for n in sorted(unsupported.TASK)]
                         + [("Logger", n) for n in sorted(unsupported.LOGGER)])
def test_an_unsupported_call_is_absent_and_says_why(owner, name, hpo_env):
    cls = Task if owner == "Task" else Logger
    assert name not in dir(cls)
    instance = cls.__new__(cls)  # no store needed: the attribute is looked up only
    with pytest.raises(NotImplementedError, match=r"docs/clearml\.md"):
        getattr(instance, name)
    assert not hasattr(instance, name)  # an AttributeError too: probes still say no


def test_no_call_is_both_supported_and_unsupported():
    assert not set(TASK) & set(unsupported.TASK)
    assert not set(LOGGER) & set(unsupported.LOGGER)


def table() -> str:
    rows = ["| Call | In hpo | Notes |", "|---|---|---|"]
    for owner, supported, refused, properties in (
            ("Task", TASK, unsupported.TASK, TASK_PROPERTIES),
            ("Logger", LOGGER, unsupported.LOGGER, {})):
        for name in sorted(set(supported) | set(refused) | set(properties)):
            if name in supported:
                rows.append(f"| `{owner}.{name}` | yes | {supported[name][1]} |")
            elif name in properties:
                rows.append(f"| `{owner}.{name}` (property) | yes | {properties[name]} |")
            else:
                rows.append(f"| `{owner}.{name}` | **no** | {refused[name]} |")
    for name in sorted(PARAMETERS):
        rows.append(f"| `hpo.task_parameters.{name}` | yes | {PARAMETERS[name][1]} |")
    return "\n".join(rows)


def test_the_docs_table_is_this_tests_table():
    text = DOC.read_text()
    before, _, rest = text.partition(BEGIN + "\n")
    _, _, after = rest.partition(END)
    made = f"{before}{BEGIN}\n{table()}\n{END}{after}"
    assert BEGIN in text and END in text, f"{DOC} lost its table markers"
    if os.environ.get("HPO_WRITE_DOCS"):
        DOC.write_text(made)
        text = made
    assert text == made, ("docs/clearml.md's table is out of date: "
                          "HPO_WRITE_DOCS=1 pytest tests/test_clearml_compat.py")
