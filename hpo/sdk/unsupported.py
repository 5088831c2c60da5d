"""The ClearML ``Task`` and ``Logger`` calls hpo does not have, each with the reason and
what to do instead: calling one raises ``NotImplementedError`` with that line, and
docs/clearml.md's compatibility table is made from this list (tests/
test_clearml_compat.py checks both). Standard library only."""

from __future__ import annotations

DOC = "docs/clearml.md"

TASK: dict[str, str] = {
    "create": "a task is made by running its script once, or with `hpo task create --script`",
    "delete_user_properties": "an agent's run cannot delete parameters; set another value",
    "get_models": "no model registry: keep weights as artifacts or in checkpoint_dir",
    "connect_label_enumeration": "no model registry, so no label enumerations",
    "get_labels_enumeration": "no model registry, so no label enumerations",
    "set_base_docker": "the agent picks the interpreter (`hpo-agent --python`, an image)",
    "set_packages": "the agent picks the interpreter and its packages (`--python`)",
    "add_requirements": "the agent picks the interpreter and its packages (`--python`)",
    "set_repo": "the repository and commit are read from the script's git state",
    "set_script": "the script is recorded when it runs (or `hpo task create --script`)",
    "get_reported_scalars": "read them with `hpo task scalars ID` or Store.task_scalars",
    "get_reported_plots": "read them with `hpo task show ID` or Store.task_reports",
    "get_reported_console_output": "read it with `hpo task logs ID`",
    "set_parent": "a clone's parent is set by Task.clone(parent=...)",
    "archive": "hpo does not archive tasks",
    "set_archived": "hpo does not archive tasks",
    "get_archived": "hpo does not archive tasks",
    "set_initial_iteration": "iterations are the script's own (resume from checkpoints)",
    "get_initial_iteration": "iterations are the script's own (resume from checkpoints)",
    "set_progress": "progress is the reported scalars' last iteration",
    "get_progress": "progress is the reported scalars' last iteration",
    "launch_multi_node": "one process per task; several GPUs go to one slot (`--gpus`)",
    "import_task": "no ClearML server export format",
    "export_task": "no ClearML server export format",
    "set_resource_monitor_iteration_timeout": "the agent samples resources by time",
    "output_uri": "artifacts go to HPO_ARTIFACT_ROOT (a folder, not a URL)",
}

LOGGER: dict[str, str] = {
    "report_line_plot": "report one series per report_scatter2d call, or report_plotly",
    "report_scatter3d": "3-D plots: build a plotly figure and report_plotly it",
    "report_surface": "3-D plots: build a plotly figure and report_plotly it",
    "set_default_upload_destination": "files go to HPO_ARTIFACT_ROOT (a folder, not a URL)",
    "get_default_upload_destination": "files go to HPO_ARTIFACT_ROOT (a folder, not a URL)",
    "capture_logging": "stdout and stderr are kept already, with logging's handlers' output",
    "tensorboard_auto_group_scalars": "no TensorBoard binding: report_scalar explicitly",
    "set_flush_period": "the flush period is hpo's (defaults.SDK_FLUSH_PERIOD_S, 0.5 s)",
    "get_flush_period": "the flush period is hpo's (defaults.SDK_FLUSH_PERIOD_S, 0.5 s)",
    "report_image_and_upload": "deprecated in ClearML: use report_image",
}


class NotSupported(NotImplementedError, AttributeError):
    """A ClearML call hpo leaves out. An AttributeError too, so that ``hasattr`` and
    ``getattr(task, name, default)`` (how libraries probe for a feature) still say no."""


def refuse(owner: str, name: str) -> AttributeError:
    """The error for ``owner.name``: NotSupported naming the reason for a ClearML call
    hpo leaves out, a plain AttributeError for any other name."""
    reasons = TASK if owner == "Task" else LOGGER
    if name in reasons:
        return NotSupported(
            f"ClearML's {owner}.{name} is not supported by hpo: {reasons[name]} ({DOC})")
    return AttributeError(f"'{owner}' object has no attribute {name!r}")
